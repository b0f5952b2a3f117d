// The expansion of a documented pub enum passes strict lints.
#![deny(missing_docs, unused_qualifications, unreachable_pub, trivial_casts)]
#![deny(rust_2018_idioms, unused)]
//! A crate with a documented channel.

use push_runtime::{Channel, EventKind, Hub, push_channel};
use serde::{Deserialize, Serialize};

/// Events of the chat.
#[push_channel(path = "/chat")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// A message.
    Message {
        /// Who wrote it.
        from: String,
        /// What they wrote.
        text: String,
    },
    /// Someone joined.
    Joined(String),
    /// Someone left.
    Left,
}

/// Uses the traits so that their imports are needed.
pub fn first_name<C: Channel>() -> &'static str {
    <C::Kind as EventKind>::NAMES[0]
}

fn main() {
    let hub = Hub::<ChatEvent>::new();
    let _routes: axum::Router = ChatEvent::router(&hub);
    assert_eq!(first_name::<ChatEvent>(), "message");
}

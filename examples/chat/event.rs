//! The chat example's events, shared by the server and the client examples.

use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

/// What happens in a chat room.
#[push_channel(path = "/chat")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// Someone said something.
    Message {
        /// Who said it.
        from: String,
        /// What they said.
        text: String,
    },
    /// Someone entered the room.
    Joined {
        /// Their name.
        name: String,
    },
    /// Someone left the room.
    Left {
        /// Their name.
        name: String,
    },
}

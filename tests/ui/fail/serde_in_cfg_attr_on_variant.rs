use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

// The variant's wire name would be `message` in some builds only.
#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
pub enum ChatEvent {
    #[cfg_attr(debug_assertions, serde(rename = "message"))]
    NewMessage(String),
}

fn main() {}

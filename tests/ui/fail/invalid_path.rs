use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

#[push_channel(path = "/chat/")]
#[derive(Clone, Serialize, Deserialize)]
pub enum ChatEvent {
    Message(String),
}

fn main() {}

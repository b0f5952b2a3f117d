use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake-case")]
pub enum ChatEvent {
    Message(String),
}

fn main() {}

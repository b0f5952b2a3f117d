use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
pub struct ChatEvent {
    text: String,
}

fn main() {}

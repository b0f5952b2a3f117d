use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

#[push_channel(path = "chat", colour = "blue")]
#[derive(Clone, Serialize, Deserialize)]
pub enum ChatEvent<T> {
    Message(T),
    #[serde(rename = "Message")]
    Text(String),
}

fn main() {}

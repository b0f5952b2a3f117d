use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
pub enum ChatEvent<T> {
    Message(T),
}

fn main() {}

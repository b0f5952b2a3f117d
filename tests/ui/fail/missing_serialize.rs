use push_runtime::push_channel;
use serde::Deserialize;

#[push_channel]
#[derive(Clone, Deserialize)]
pub enum ChatEvent {
    Message(String),
}

fn main() {}

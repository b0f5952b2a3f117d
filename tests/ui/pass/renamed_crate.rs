// push-runtime under another name, through the `crate` option.
extern crate push_runtime as renamed;

use serde::{Deserialize, Serialize};

#[renamed::push_channel(path = "/chat", crate = "::renamed")]
#[derive(Clone, Serialize, Deserialize)]
pub enum ChatEvent {
    Message(String),
}

fn main() {
    use renamed::Channel;
    assert_eq!(ChatEvent::PATH, "/chat");
    assert_eq!(ChatEvent::Message(String::new()).event_name(), "Message");
}

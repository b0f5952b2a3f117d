// On error the enum is still emitted: the only error is the macro's own, not
// "cannot find type `ChatEvent`" at every use.
use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

#[push_channel(path = "chat")]
#[derive(Clone, Serialize, Deserialize)]
pub enum ChatEvent {
    Message(String),
}

fn main() {
    let _event = ChatEvent::Message(String::new());
}

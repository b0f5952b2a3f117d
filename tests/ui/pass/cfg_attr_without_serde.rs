// `cfg_attr` that carries no serde attribute changes nothing the macro reads.
use push_runtime::{EventKind, push_channel};
use serde::{Deserialize, Serialize};

#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(debug_assertions, derive(Debug))]
#[cfg_attr(test, cfg_attr(unix, derive(PartialEq)))]
#[serde(rename_all = "snake_case")]
pub enum ChatEvent {
    #[cfg_attr(debug_assertions, doc = "A message.")]
    NewMessage {
        #[cfg_attr(debug_assertions, allow(unused))]
        text: String,
    },
}

fn main() {
    assert_eq!(ChatEventKind::NAMES, ["new_message"]);
    let _ = ChatEvent::NewMessage {
        text: String::new(),
    };
}

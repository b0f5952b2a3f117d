use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

// The TypeScript declarations would name the field `text` in every build.
#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
pub enum ChatEvent {
    Message {
        #[cfg_attr(debug_assertions, serde(rename = "body"))]
        text: String,
    },
}

fn main() {}

use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatEvent {
    UserJoined(String),
    #[serde(rename = "user_joined")]
    Welcome(String),
}

fn main() {}

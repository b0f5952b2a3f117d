use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

// serde would write `[1]` or `[1, 2]`: no TypeScript tuple says which element is which.
#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
pub enum ChatEvent {
    Pair(u8, #[serde(skip_serializing_if = "Option::is_none")] Option<u8>),
}

fn main() {}

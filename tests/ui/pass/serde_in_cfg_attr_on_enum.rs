// The enum's own `cfg_attr`s are resolved by the compiler before the macro
// runs (wherever they stand), so the macro reads the serde attributes that
// apply and its wire names agree with serde's.
use push_runtime::{EventKind, push_channel};
use serde::{Deserialize, Serialize};

#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(all(), serde(rename_all = "snake_case"))]
pub enum Applied {
    NewMessage(String),
}

#[cfg_attr(any(), serde(rename_all = "snake_case"))]
#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
pub enum NotApplied {
    NewMessage(String),
}

fn main() {
    assert_eq!(AppliedKind::NAMES, ["new_message"]);
    assert_eq!(NotAppliedKind::NAMES, ["NewMessage"]);
    let applied = serde_json::to_string(&Applied::NewMessage("x".into())).unwrap();
    assert_eq!(applied, r#"{"new_message":"x"}"#);
    let not_applied = serde_json::to_string(&NotApplied::NewMessage("x".into())).unwrap();
    assert_eq!(not_applied, r#"{"NewMessage":"x"}"#);
}

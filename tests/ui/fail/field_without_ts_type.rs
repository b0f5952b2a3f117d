// A field type without a TypeScript type: the error points at the field's type.
use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct Point {
    x: f64,
}

#[push_channel(path = "/points")]
#[derive(Clone, Serialize, Deserialize)]
pub enum PointEvent {
    Moved { to: Point },
}

fn main() {}

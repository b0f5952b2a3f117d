// Unit, tuple and struct variants, externally tagged (serde's default).
use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

#[push_channel(path = "/shapes")]
#[derive(Clone, Serialize, Deserialize)]
pub enum Shape {
    Unit,
    Tuple(u32, String),
    Struct { x: i64, y: i64 },
}

fn main() {
    let hub = push_runtime::Hub::<Shape>::new();
    let _routes: axum::Router = Shape::router(&hub);
    let _kind: ShapeKind = ShapeKind::Struct;
}

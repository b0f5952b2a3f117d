// Field types may name the enum as `Self` (the TypeScript description names
// it by its own name instead, as the description is not in the enum's impl).
use push_runtime::push_channel;
use push_runtime::typescript::TsType;
use serde::{Deserialize, Serialize};

#[push_channel(path = "/tree")]
#[derive(Clone, Serialize, Deserialize)]
pub enum Tree {
    Leaf(u8),
    Node { children: Vec<Self>, weights: [u8; Self::ARITY] },
    Link(Option<Box<Self>>, u8),
}

impl Tree {
    const ARITY: usize = 2;
}

impl TsType for Tree {
    fn ts_type() -> String {
        "Tree".into()
    }
}

fn main() {
    assert!(Tree::typescript().contains(r#""Node": { "children": Tree[]; "weights": number[] }"#));
}

//! The channel the transport tests use: one variant of every shape.

use serde::{Deserialize, Serialize};

/// Events of every shape serde supports in an externally tagged enum.
#[push_runtime::push_channel(path = "/t")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestEvent {
    Ping,
    Note(String),
    Pair(u32, String),
    Moved {
        x: i64,
        y: i64,
    },
    #[serde(rename = "custom.name")]
    Renamed {
        text: String,
    },
}

/// A note numbered `n`, for tests that count.
pub fn note(n: usize) -> TestEvent {
    TestEvent::Note(format!("n{n}"))
}

/// Every variant once.
pub fn one_of_each() -> Vec<TestEvent> {
    vec![
        TestEvent::Ping,
        TestEvent::Note("hello </script> \u{2028} \"quoted\" \\ back".into()),
        TestEvent::Pair(7, "seven".into()),
        TestEvent::Moved { x: -3, y: 4 },
        TestEvent::Renamed { text: "r".into() },
    ]
}

//! The channel the transport tests use: one variant of every shape.

use serde::{Deserialize, Serialize};

/// Events of every shape serde supports in an externally tagged enum.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestEventKind {
    Ping,
    Note,
    Pair,
    Moved,
    Renamed,
}

impl push_runtime::EventKind for TestEventKind {
    const ALL: &'static [Self] = &[
        Self::Ping,
        Self::Note,
        Self::Pair,
        Self::Moved,
        Self::Renamed,
    ];
    const NAMES: &'static [&'static str] = &["ping", "note", "pair", "moved", "custom.name"];
    fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
    fn index(self) -> usize {
        self as usize
    }
}

impl push_runtime::Channel for TestEvent {
    type Kind = TestEventKind;
    const PATH: &'static str = "/t";
    fn kind(&self) -> TestEventKind {
        match self {
            Self::Ping => TestEventKind::Ping,
            Self::Note(_) => TestEventKind::Note,
            Self::Pair(..) => TestEventKind::Pair,
            Self::Moved { .. } => TestEventKind::Moved,
            Self::Renamed { .. } => TestEventKind::Renamed,
        }
    }
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

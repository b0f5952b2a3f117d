//! Cursors: the position of an event in a topic's history.

use std::fmt;
use std::str::FromStr;

/// The position of an event in a topic: an epoch and a sequence number.
///
/// The sequence number counts events published to one topic, starting at 1;
/// sequence 0 is the position before the first event. The epoch names one
/// continuous history: it changes whenever history may have been lost (a
/// restart of an in-memory hub, a topic that was evicted and created again),
/// so a cursor from another epoch is never mistaken for a current one.
///
/// On the wire a cursor is the string `"<epoch>-<seq>"`, both parts decimal,
/// e.g. `"190872312-42"`. Clients treat it as opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cursor {
    epoch: u64,
    seq: u64,
}

impl Cursor {
    /// A cursor from its parts.
    pub const fn new(epoch: u64, seq: u64) -> Self {
        Self { epoch, seq }
    }

    /// The epoch: which continuous history this cursor belongs to.
    pub const fn epoch(self) -> u64 {
        self.epoch
    }

    /// The sequence number within the epoch (0: before the first event).
    pub const fn seq(self) -> u64 {
        self.seq
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

/// Why a string is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid cursor `{input}`: expected `<epoch>-<seq>` with two decimal numbers, e.g. `1234-56`"
)]
pub struct CursorParseError {
    input: String,
}

/// The longest input quoted back in an error message.
const QUOTE_LIMIT: usize = 64;

fn parse_part(part: &str) -> Option<u64> {
    // `u64::from_str` accepts a leading `+`; cursors are digits only.
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

impl FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let parsed = input
            .split_once('-')
            .and_then(|(epoch, seq)| Some(Cursor::new(parse_part(epoch)?, parse_part(seq)?)));
        parsed.ok_or_else(|| CursorParseError {
            input: input.chars().take(QUOTE_LIMIT).collect(),
        })
    }
}

impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_text_form() {
        let cursor = Cursor::new(987_654_321, 42);
        assert_eq!(cursor.to_string(), "987654321-42");
        assert_eq!("987654321-42".parse::<Cursor>(), Ok(cursor));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1",
            "1-2-3",
            "+1-2",
            "1-+2",
            "a-1",
            "1-b",
            " 1-2",
            "1-2 ",
            "99999999999999999999999-1",
            "1-99999999999999999999999",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn error_quotes_a_bounded_prefix_of_the_input() {
        let long = "x".repeat(10_000);
        let message = long.parse::<Cursor>().unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }
}

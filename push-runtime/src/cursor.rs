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

    /// Appends the text form, `<epoch>-<seq>`, to `out`.
    pub(crate) fn put(self, out: &mut impl bytes::BufMut) {
        out.put_slice(itoa::Buffer::new().format(self.epoch).as_bytes());
        out.put_u8(b'-');
        out.put_slice(itoa::Buffer::new().format(self.seq).as_bytes());
    }

    /// The cursor as a poll answer's entity tag: `"<epoch>-<seq>"` (always
    /// `Some`: digits, a dash and quotes make a valid header value).
    pub(crate) fn etag(self) -> Option<axum::http::HeaderValue> {
        let mut text = Vec::with_capacity(44);
        text.push(b'"');
        self.put(&mut text);
        text.push(b'"');
        axum::http::HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(itoa::Buffer::new().format(self.epoch))?;
        f.write_str("-")?;
        f.write_str(itoa::Buffer::new().format(self.seq))
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

/// Decimal digits only (`u64::from_str` would take a leading `+`), and no
/// overflow.
fn parse_part(part: &[u8]) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    part.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

impl FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bytes = input.as_bytes();
        let parsed = bytes.iter().position(|&b| b == b'-').and_then(|dash| {
            Some(Cursor::new(
                parse_part(&bytes[..dash])?,
                parse_part(&bytes[dash + 1..])?,
            ))
        });
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
        let max = Cursor::new(u64::MAX, u64::MAX);
        assert_eq!(max.to_string().parse::<Cursor>(), Ok(max));
        assert_eq!(
            format!("{:>8}", Cursor::new(0, 0)),
            "0-0",
            "no padding, as before"
        );
    }

    #[test]
    fn writes_the_same_text_into_bytes_and_entity_tags() {
        for cursor in [
            Cursor::new(0, 0),
            Cursor::new(7, 1),
            Cursor::new(u64::MAX, 10),
        ] {
            let mut out = Vec::new();
            cursor.put(&mut out);
            assert_eq!(out, cursor.to_string().as_bytes());
            assert_eq!(cursor.etag().unwrap(), format!("\"{cursor}\"").as_str());
        }
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

//! Topic names.

use std::fmt;
use std::sync::Arc;

/// The longest topic name accepted by default, in bytes.
pub const DEFAULT_MAX_TOPIC_LEN: usize = 128;

/// A validated topic name.
///
/// A topic is 1 to [`HubConfig::max_topic_len`](crate::HubConfig) bytes of
/// ASCII letters, digits, `_`, `-`, `.` and `:`, and starts with a letter, a
/// digit or `_` (so `.` and `..` can never be a topic). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

/// Why a string is not a topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is empty.
    #[error("invalid topic: the name is empty")]
    Empty,
    /// The name is longer than allowed.
    #[error("invalid topic: the name is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The name holds a character outside the allowed set.
    #[error(
        "invalid topic: character {found:?} at byte {at} is not allowed; a topic is ASCII letters, digits, `_`, `-`, `.` and `:`, starting with a letter, digit or `_`"
    )]
    BadChar {
        /// The offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
}

impl Topic {
    /// Validates `name` against the default length limit.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        Self::with_max_len(name, DEFAULT_MAX_TOPIC_LEN)
    }

    /// Validates `name` against a length limit of `max` bytes.
    pub fn with_max_len(name: &str, max: usize) -> Result<Self, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if name.len() > max {
            return Err(TopicError::TooLong {
                len: name.len(),
                max,
            });
        }
        for (at, found) in name.char_indices() {
            let allowed = found.is_ascii_alphanumeric()
                || found == '_'
                || (at > 0 && matches!(found, '-' | '.' | ':'));
            if !allowed {
                return Err(TopicError::BadChar { found, at });
            }
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_charset() {
        for ok in ["a", "room-1", "user:42", "x.y_z", "_private", "A9"] {
            assert_eq!(Topic::new(ok).map(|t| t.to_string()), Ok(ok.to_owned()));
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(Topic::new(""), Err(TopicError::Empty));
        assert!(matches!(
            Topic::new("-a"),
            Err(TopicError::BadChar { found: '-', at: 0 })
        ));
        assert!(matches!(Topic::new(".."), Err(TopicError::BadChar { .. })));
        assert!(matches!(
            Topic::new("a/b"),
            Err(TopicError::BadChar { found: '/', at: 1 })
        ));
        assert!(matches!(
            Topic::new("café"),
            Err(TopicError::BadChar { .. })
        ));
        assert!(matches!(Topic::new("a b"), Err(TopicError::BadChar { .. })));
        let long = "a".repeat(DEFAULT_MAX_TOPIC_LEN + 1);
        assert!(matches!(Topic::new(&long), Err(TopicError::TooLong { .. })));
        assert!(Topic::with_max_len("abcd", 3).is_err());
    }
}

//! What every subscription route accepts: a starting cursor and an event
//! filter, validated into a [`SubscribeRequest`] or a 400; and the query
//! string, split once into the parameters the routes read ([`Query`]).

use crate::channel::{Channel, EventKind};
use crate::cursor::{Cursor, CursorParseError};
use crate::history::{KindFilter, Start, StartError};
use crate::hub::SubscribeError;
use crate::limits;
use crate::topic::TopicError;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

/// The header browsers' `EventSource` sends when it reconnects.
pub(crate) const LAST_EVENT_ID: &str = "last-event-id";

/// A validated subscription request.
#[derive(Debug)]
pub(crate) struct SubscribeRequest {
    pub(crate) start: Start,
    pub(crate) filter: Option<KindFilter>,
    /// The tag of `If-None-Match`, on the routes that read it (polls).
    pub(crate) tag: Option<PollTag>,
}

/// The entity tag of a poll answer, which identifies the answer to its URL:
/// `"<cursor>"`, the answer's cursor (where to ask from next), followed by
/// `;gap=<cursor>` when the answer starts with a gap (to that cursor), and
/// `;more` when the batch limit cut it short. Events are immutable once
/// they have a cursor, so for one URL (one `after`, `events` and `limit`)
/// these say which answer it is. The cursor alone is also a position, which
/// is what `If-None-Match` is when `after` is absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PollTag {
    pub(crate) cursor: Cursor,
    pub(crate) gap: Option<Cursor>,
    pub(crate) more: bool,
}

impl PollTag {
    /// The `ETag` header: the quoted tag.
    pub(crate) fn header(&self) -> Option<axum::http::HeaderValue> {
        if self.gap.is_none() && !self.more {
            return self.cursor.etag();
        }
        let mut text = Vec::with_capacity(96);
        text.push(b'"');
        self.cursor.put(&mut text);
        if let Some(gap) = self.gap {
            text.extend_from_slice(b";gap=");
            gap.put(&mut text);
        }
        if self.more {
            text.extend_from_slice(b";more");
        }
        text.push(b'"');
        axum::http::HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
    }

    /// Parses the text between the quotes.
    fn parse(text: &str) -> Result<Self, SubscribeRejection> {
        let (text, more) = match text.strip_suffix(";more") {
            Some(rest) => (rest, true),
            None => (text, false),
        };
        let (cursor, gap) = match text.split_once(";gap=") {
            Some((cursor, gap)) => (cursor, Some(parse_cursor("If-None-Match", gap)?)),
            None => (text, None),
        };
        Ok(Self {
            cursor: parse_cursor("If-None-Match", cursor)?,
            gap,
            more,
        })
    }
}

/// Why a subscription request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeRejection {
    /// The topic in the path is not a valid topic name.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// `after` or `Last-Event-ID` is not a cursor.
    #[error("{source} (in `{origin}`)")]
    Cursor {
        /// Where the cursor came from.
        origin: &'static str,
        /// The parse failure.
        source: CursorParseError,
    },
    /// The cursor is ahead of the topic.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A query parameter appears more than once.
    #[error("query parameter `{0}` is given more than once")]
    Repeated(&'static str),
    /// `events` names no event, or an unknown one.
    #[error("unknown event name `{name}` in `events`; valid names: {valid}")]
    UnknownEvent {
        /// The name as given (possibly cut short).
        name: String,
        /// The channel's wire names, comma-separated.
        valid: String,
    },
    /// The hub failed.
    #[error("the hub failed: {0}")]
    Hub(String),
}

impl SubscribeRejection {
    fn status(&self) -> StatusCode {
        match self {
            Self::Hub(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for SubscribeRejection {
    fn into_response(self) -> Response {
        match self.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(error = %self, "subscription failed");
                // Transient (a full broker, a store that is down).
                limits::unavailable(self.to_string())
            }
            status => (status, self.to_string()).into_response(),
        }
    }
}

impl From<SubscribeError> for SubscribeRejection {
    fn from(error: SubscribeError) -> Self {
        match error {
            SubscribeError::Topic(e) => Self::Topic(e),
            SubscribeError::Start(e) => Self::Start(e),
            other => Self::Hub(other.to_string()),
        }
    }
}

const QUOTE_LIMIT: usize = 64;

/// Parses a cursor that arrived in `origin` (a header or parameter name).
pub(crate) fn parse_cursor(origin: &'static str, text: &str) -> Result<Cursor, SubscribeRejection> {
    text.parse()
        .map_err(|source| SubscribeRejection::Cursor { origin, source })
}

fn parse_filter<C: Channel>(list: &str) -> Result<KindFilter, SubscribeRejection> {
    let mut indices = Vec::new();
    for name in list.split(',') {
        match <C::Kind as EventKind>::from_name(name) {
            Some(kind) => indices.push(kind.index()),
            None => {
                return Err(SubscribeRejection::UnknownEvent {
                    name: name.chars().take(QUOTE_LIMIT).collect(),
                    valid: <C::Kind as EventKind>::NAMES.join(", "),
                });
            }
        }
    }
    Ok(KindFilter::from_indices(indices))
}

/// The `key=value` pairs of a query string, decoded as
/// `application/x-www-form-urlencoded`.
///
/// Queries with nothing to decode (no `%`, no `+`: every query this crate's
/// clients send) are split in place, borrowing; others go through
/// `form_urlencoded`. Both yield the same pairs.
pub(crate) fn pairs(query: Option<&str>) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let query = query.unwrap_or_default();
    let plain = !query.bytes().any(|b| b == b'%' || b == b'+');
    let borrowed = plain.then(|| {
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (Cow::Borrowed(key), Cow::Borrowed(value))
            })
    });
    let decoded = (!plain).then(|| form_urlencoded::parse(query.as_bytes()));
    borrowed
        .into_iter()
        .flatten()
        .chain(decoded.into_iter().flatten())
}

/// Every query parameter a route of this crate reads.
pub(crate) const NAMES: [&str; 5] = ["after", "events", "limit", "timeout", "origin"];

/// The query parameters this crate reads, found in one pass over the query.
///
/// A parameter given twice is refused only by a route that reads it.
#[derive(Debug, Default)]
pub(crate) struct Query<'q> {
    slots: [Slot<'q>; NAMES.len()],
}

#[derive(Debug, Default)]
enum Slot<'q> {
    #[default]
    Absent,
    One(Cow<'q, str>),
    Repeated,
}

impl<'q> Query<'q> {
    /// Splits `query` (the raw query string, if any).
    pub(crate) fn new(query: Option<&'q str>) -> Self {
        let mut this = Self::default();
        for (key, value) in pairs(query) {
            if let Some(index) = NAMES.iter().position(|name| *name == key) {
                let slot = &mut this.slots[index];
                *slot = match slot {
                    Slot::Absent => Slot::One(value),
                    _ => Slot::Repeated,
                };
            }
        }
        this
    }

    /// The value of the parameter `name` (one of those this crate reads), if
    /// given; refused if given twice.
    pub(crate) fn get(&self, name: &'static str) -> Result<Option<&str>, SubscribeRejection> {
        let index = NAMES.iter().position(|known| *known == name);
        debug_assert!(index.is_some(), "`{name}` is not in params::NAMES");
        match index.map(|index| &self.slots[index]) {
            Some(Slot::One(value)) => Ok(Some(value)),
            Some(Slot::Repeated) => Err(SubscribeRejection::Repeated(name)),
            Some(Slot::Absent) | None => Ok(None),
        }
    }
}

/// `If-None-Match: "<tag>"`, a [`PollTag`] (a weak tag is accepted too,
/// compared the same; `*` is ignored).
pub(crate) fn if_none_match(headers: &HeaderMap) -> Result<Option<PollTag>, SubscribeRejection> {
    let Some(value) = headers.get(header::IF_NONE_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("\u{fffd}").trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let tag = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag);
    PollTag::parse(tag).map(Some)
}

/// Validates a subscription request for channel `C`: where it starts and
/// which events it wants.
///
/// The start is the first of `Last-Event-ID` (a browser reconnects to the
/// original URL, whose `after` is stale by then), `?after=`, and, where
/// `conditional` (polls), `If-None-Match`; without any, the next event.
pub(crate) fn parse<C: Channel>(
    query: &Query<'_>,
    headers: &HeaderMap,
    conditional: bool,
) -> Result<SubscribeRequest, SubscribeRejection> {
    let after = query.get("after")?;
    let events = query.get("events")?;
    let last_event_id = headers
        .get(LAST_EVENT_ID)
        .map(|value| value.to_str().unwrap_or("\u{fffd}"))
        .filter(|value| !value.is_empty());
    let tag = if conditional {
        if_none_match(headers)?
    } else {
        None
    };
    let start = match (last_event_id, after, tag) {
        (Some(id), _, _) => Start::After(parse_cursor("Last-Event-ID", id)?),
        (None, Some(after), _) => Start::After(parse_cursor("after", after)?),
        (None, None, Some(tag)) => Start::After(tag.cursor),
        (None, None, None) => Start::Now,
    };
    let filter = events.map(parse_filter::<C>).transpose()?;
    Ok(SubscribeRequest { start, filter, tag })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn parses_if_none_match() {
        let mut headers = HeaderMap::new();
        assert_eq!(if_none_match(&headers).unwrap(), None);
        let tag = |gap: Option<Cursor>, more| PollTag {
            cursor: Cursor::new(5, 7),
            gap,
            more,
        };
        for (value, expected) in [
            ("\"5-7\"", Some(tag(None, false))),
            ("W/\"5-7\"", Some(tag(None, false))),
            ("\"5-7;more\"", Some(tag(None, true))),
            ("\"5-7;gap=5-3\"", Some(tag(Some(Cursor::new(5, 3)), false))),
            (
                "\"5-7;gap=5-3;more\"",
                Some(tag(Some(Cursor::new(5, 3)), true)),
            ),
            ("*", None),
        ] {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
            let parsed = if_none_match(&headers).unwrap();
            assert_eq!(parsed, expected, "{value}");
            if let Some(parsed) = parsed {
                let written = parsed.header().unwrap();
                assert_eq!(written, value.trim_start_matches("W/"), "written back");
            }
        }
        for bad in [
            "\"x\"",
            "\"5-7;less\"",
            "\"5-7;gap=x\"",
            "\"5-7;more;gap=5-3\"",
        ] {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(bad));
            let error = if_none_match(&headers).unwrap_err().to_string();
            assert!(error.contains("in `If-None-Match`"), "{bad}: {error}");
        }
    }
}

//! The polling transports: short polling and long polling. Both read the same
//! answer, `{"cursor":…,"more":…,"events":[item,…]}`, whose items are
//! WebSocket message objects; they differ in when they ask again.

use super::config::ClientConfig;
use super::error::{ClientError, quote};
use super::frame::{Read, parse_envelope};
use super::http;
use crate::cursor::Cursor;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;
use url::Url;

/// A parsed poll answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Where to ask from next (past filtered-out events too).
    pub(crate) cursor: Cursor,
    /// The server cut the batch short: ask again at once.
    pub(crate) more: bool,
    /// The items, in order; one that is not an item is skipped, not fatal.
    pub(crate) items: Vec<Read>,
}

/// The body as sent, items left raw so that one bad item spoils only itself.
#[derive(serde::Deserialize)]
struct Body<'a> {
    cursor: Cursor,
    #[serde(default)]
    more: bool,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// Just an item's cursor, to name an item too large to deliver.
#[derive(serde::Deserialize)]
struct CursorOnly {
    cursor: Cursor,
}

/// Parses a `200` answer's body; an item larger than `max_item` bytes is
/// skipped with [`ClientError::TooLarge`] (naming its cursor when it has a
/// valid one), as every transport does.
pub(crate) fn parse_answer(body: &[u8], max_item: usize) -> Result<Answer, ClientError> {
    let invalid = |reason: String| ClientError::UnexpectedResponse {
        reason: format!("poll answer: {reason}"),
    };
    let text = std::str::from_utf8(body).map_err(|error| invalid(error.to_string()))?;
    let body = serde_json::from_str::<Body<'_>>(text)
        .map_err(|error| invalid(format!("{error} in `{}`", quote(text, 64))))?;
    let items = body
        .events
        .iter()
        .map(|item| {
            if item.get().len() > max_item {
                let cursor = serde_json::from_str::<CursorOnly>(item.get()).ok();
                return Read::Skipped(ClientError::TooLarge {
                    limit: max_item,
                    cursor: cursor.map(|item| item.cursor),
                });
            }
            match parse_envelope(item.get()) {
                Ok(frame) => Read::Frame(frame),
                Err(error) => Read::Skipped(error),
            }
        })
        .collect();
    Ok(Answer {
        cursor: body.cursor,
        more: body.more,
        items,
    })
}

/// What one request brought.
#[derive(Debug)]
enum Fetched {
    Answer(Answer),
    /// `304`: nothing new since the `ETag` sent.
    NotModified,
    /// The answer was over the size limit: ask again at once, for one item.
    Narrow,
}

/// Builds the URL of one request: `after`, then the long-poll `timeout`.
pub(crate) type UrlFor =
    Box<dyn Fn(Option<Cursor>, Option<u64>) -> Result<Url, ClientError> + Send + Sync>;

/// A run of polls that succeeded, from the first answer on; a failed poll
/// ends it (the subscription then reconnects with backoff).
pub(crate) struct PollConnection {
    http: http::HttpClient,
    /// Sent with every request of the run.
    headers: header::HeaderMap,
    url_for: UrlFor,
    /// Long polling rather than short polling.
    long: bool,
    /// Where the next request asks from.
    cursor: Cursor,
    /// The last answer's `ETag` (short polling only).
    etag: Option<HeaderValue>,
    /// Items of the last answer not yet read.
    queue: VecDeque<Read>,
    /// Whether the next request is due at once.
    at_once: bool,
    interval: Duration,
    long_timeout: u64,
    request_timeout: Duration,
    max_answer: usize,
    max_item: usize,
    /// The `limit=` asked for: as many items of `max_item` bytes as an
    /// answer of `max_answer` bytes holds.
    limit: usize,
    /// The next request asks for one item only: the last answer was over
    /// `max_answer` although it held at most `limit` items, so some item
    /// is over `max_item`.
    narrow: bool,
}

/// What an answer's envelope (`{"cursor":…,"more":…,"events":[…]}`, the
/// commas between items) may take besides its items, in bytes.
const ANSWER_ENVELOPE: usize = 1024;

/// How many items to ask for (`limit=`) so that an answer of items of at
/// most `max_item` bytes fits in `max_answer` bytes; at least 1.
pub(crate) fn answer_limit(max_answer: usize, max_item: usize) -> usize {
    (max_answer.saturating_sub(ANSWER_ENVELOPE) / max_item.max(1)).max(1)
}

/// The cursor an answer's `ETag` names (`"<cursor>[;gap=…][;more]"`,
/// possibly weak): where the poll after it asks from.
fn tag_cursor(etag: &HeaderValue) -> Option<Cursor> {
    let tag = etag.to_str().ok()?;
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let tag = tag.strip_prefix('"')?.strip_suffix('"')?;
    tag.split(';').next()?.parse().ok()
}

impl fmt::Debug for PollConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollConnection")
            .field("long", &self.long)
            .field("cursor", &self.cursor)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl PollConnection {
    /// Makes the first request (every request of the run sends `headers`).
    /// Its answer makes the connection live: the
    /// first [`Read`] is [`Read::Ready`] at `after`, or, without `after`, at
    /// the answer's cursor.
    pub(crate) async fn open(
        http: http::HttpClient,
        headers: header::HeaderMap,
        url_for: UrlFor,
        long: bool,
        after: Option<Cursor>,
        config: &ClientConfig,
    ) -> Result<Self, ClientError> {
        let mut connection = Self {
            http,
            headers,
            url_for,
            long,
            // Set from the first answer before the connection is returned.
            cursor: after.unwrap_or(Cursor::new(0, 0)),
            etag: None,
            queue: VecDeque::new(),
            at_once: true,
            interval: config.poll_interval,
            long_timeout: config.long_poll_timeout.as_secs(),
            request_timeout: config.poll_request_timeout(long),
            max_answer: config.max_answer_size(),
            max_item: config.max_item_size,
            limit: answer_limit(config.max_answer_size(), config.max_item_size),
            narrow: false,
        };
        // Without a position, learn it at once rather than wait for an event.
        let timeout = match (long, after) {
            (false, _) => None,
            (true, None) => Some(0),
            (true, Some(_)) => Some(connection.long_timeout),
        };
        let answer = match connection.fetch(after, timeout).await? {
            Fetched::Answer(answer) => answer,
            Fetched::NotModified => {
                return Err(ClientError::UnexpectedResponse {
                    reason: "304 Not Modified to a first poll".to_owned(),
                });
            }
            // Start with an empty answer at `after`: the next poll asks for
            // one item.
            Fetched::Narrow => Answer {
                cursor: connection.cursor,
                more: true,
                items: Vec::new(),
            },
        };
        match after {
            Some(after) => {
                connection.queue.push_back(Read::Ready(after));
                connection.take(answer);
            }
            // "From now": the answer holds no events; if a server sends some
            // anyway they are delivered, and the position follows them.
            None => {
                let cursor = answer.cursor;
                connection.take(answer);
                connection.queue.push_back(Read::Ready(cursor));
            }
        }
        Ok(connection)
    }

    /// One short poll for the single item after `after` (`limit=1`), to
    /// skip an item another transport could not read: its answer, whose
    /// items are that item (or the gap before it) and whose cursor is
    /// where to resume. An item over the limit comes back as
    /// [`ClientError::TooLarge`] naming its cursor, read no further than
    /// its head and `max_item_size` bytes.
    pub(crate) async fn locate(
        http: http::HttpClient,
        headers: header::HeaderMap,
        url_for: UrlFor,
        after: Cursor,
        config: &ClientConfig,
    ) -> Result<Answer, ClientError> {
        let mut connection = Self {
            http,
            headers,
            url_for,
            long: false,
            cursor: after,
            etag: None,
            queue: VecDeque::new(),
            at_once: true,
            interval: config.poll_interval,
            long_timeout: 0,
            request_timeout: config.poll_request_timeout(false),
            max_answer: config.max_answer_size(),
            max_item: config.max_item_size,
            limit: 1,
            narrow: true,
        };
        match connection.fetch(Some(after), None).await? {
            Fetched::Answer(answer) => Ok(answer),
            // A request without `If-None-Match` is never answered `304` by
            // a poll route (and one asking for one item is never narrowed).
            Fetched::NotModified | Fetched::Narrow => Err(ClientError::UnexpectedResponse {
                reason: "304 Not Modified to a poll without If-None-Match".to_owned(),
            }),
        }
    }

    /// The next item, polling as often as needed.
    pub(crate) async fn next(&mut self) -> Result<Read, ClientError> {
        loop {
            if let Some(read) = self.queue.pop_front() {
                return Ok(read);
            }
            if !self.at_once {
                tokio::time::sleep(self.interval).await;
            }
            let timeout = self.long.then_some(self.long_timeout);
            match self.fetch(Some(self.cursor), timeout).await? {
                Fetched::Answer(answer) => self.take(answer),
                // A long poll answers 304 only at once: waiting keeps a
                // misbehaving server from being polled in a tight loop.
                Fetched::NotModified => self.at_once = false,
                Fetched::Narrow => self.at_once = true,
            }
        }
    }

    fn take(&mut self, answer: Answer) {
        self.cursor = answer.cursor;
        self.at_once = answer.more || self.long;
        self.queue.extend(answer.items);
    }

    /// One request, bounded in time and size.
    async fn fetch(
        &mut self,
        after: Option<Cursor>,
        timeout: Option<u64>,
    ) -> Result<Fetched, ClientError> {
        let mut url = (self.url_for)(after, timeout)?;
        let limit = if self.narrow { 1 } else { self.limit };
        url.query_pairs_mut()
            .append_pair("limit", itoa::Buffer::new().format(limit));
        tracing::trace!(%url, "polling");
        let mut headers = self.headers.clone();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let (false, Some(etag)) = (self.long, &self.etag) {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        let narrow = limit == 1;
        let limit = self.request_timeout;
        let max_item = self.max_item;
        // One item and the envelope: a larger answer is an item over the
        // limit, known from its head without reading the rest.
        let max = if narrow {
            self.max_answer
                .min(max_item.saturating_add(ANSWER_ENVELOPE))
        } else {
            self.max_answer
        };
        let exchange = async {
            let mut response = self.http.get(&url, headers, limit).await?;
            let etag = response.headers().get(header::ETAG).cloned();
            if response.status() == StatusCode::NOT_MODIFIED {
                return Ok((Fetched::NotModified, etag));
            }
            http::expect_content_type(&response, "application/json")?;
            let body = match http::read_body(&mut response, max).await {
                Ok(body) => body,
                // More bytes than `limit` items of `max_item` each: an item
                // is over `max_item`. Ask for one item at a time; an answer
                // of one item that is still too large is that item,
                // skipped like any item over the limit, and its tag says
                // where the next poll asks from.
                Err(ClientError::TooLarge { .. }) if !narrow => {
                    return Ok((Fetched::Narrow, None));
                }
                Err(ClientError::TooLarge { .. }) => {
                    let Some(cursor) = etag.as_ref().and_then(tag_cursor) else {
                        return Err(ClientError::TooLarge {
                            limit: max_item,
                            cursor: None,
                        });
                    };
                    let skipped = Read::Skipped(ClientError::TooLarge {
                        limit: max_item,
                        cursor: Some(cursor),
                    });
                    let answer = Answer {
                        cursor,
                        more: true,
                        items: vec![skipped],
                    };
                    return Ok((Fetched::Answer(answer), None));
                }
                Err(error) => return Err(error),
            };
            Ok((Fetched::Answer(parse_answer(&body, max_item)?), etag))
        };
        let (fetched, etag) = match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ClientError::Disconnected {
                    reason: format!("the poll did not complete within {limit:?}"),
                });
            }
        };
        if etag.is_some() {
            self.etag = etag;
        }
        self.narrow = matches!(fetched, Fetched::Narrow);
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::frame::Frame;

    fn frames(answer: &Answer) -> Vec<Result<&Frame, &ClientError>> {
        answer
            .items
            .iter()
            .map(|read| match read {
                Read::Frame(frame) => Ok(frame),
                Read::Skipped(error) => Err(error),
                Read::Ready(cursor) | Read::Resume(cursor) => {
                    panic!("no ready or resume in an answer: {cursor}")
                }
            })
            .collect()
    }

    #[test]
    fn parses_an_answer_keeping_items_verbatim() {
        let answer = parse_answer(
            br#"{"cursor":"5-3","more":true,"events":[
                {"cursor":"5-1","event":"push.gap","data":{"from":"4-9","to":"5-1","missed":null}},
                {"cursor":"5-2","event":"message","data":{"text":"\u003c/script\u003e","n":1.50}}
            ]}"#,
            1024,
        )
        .expect("answer");
        assert_eq!(answer.cursor, Cursor::new(5, 3));
        assert!(answer.more);
        let frames = frames(&answer);
        assert_eq!(frames.len(), 2);
        match frames[1] {
            Ok(frame) => {
                assert_eq!(frame.cursor.as_deref(), Some("5-2"));
                assert_eq!(frame.data, r#"{"text":"\u003c/script\u003e","n":1.50}"#);
            }
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn an_empty_answer_and_a_missing_more_are_fine() {
        let answer = parse_answer(br#"{"cursor":"5-3","events":[]}"#, 1024).expect("answer");
        assert_eq!((answer.cursor, answer.more), (Cursor::new(5, 3), false));
        assert!(answer.items.is_empty());
    }

    #[test]
    fn a_bad_item_is_skipped_alone() {
        let answer = parse_answer(
            br#"{"cursor":"1-3","more":false,"events":[1,{"cursor":"1-3","event":"x","data":{}},"s"]}"#,
            1024,
        )
        .expect("answer");
        let frames = frames(&answer);
        assert!(matches!(frames[0], Err(ClientError::Malformed { .. })));
        assert!(matches!(frames[1], Ok(frame) if frame.event == "x"));
        assert!(matches!(frames[2], Err(ClientError::Malformed { .. })));
    }

    #[test]
    fn a_body_that_is_not_an_answer_is_unexpected_and_quoted_briefly() {
        let long = format!("<html>{}</html>", "x".repeat(100_000));
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"more\":false,\"events\":[]}",
            b"{\"cursor\":\"nope\",\"events\":[]}",
            b"{\"cursor\":\"1-1\"}",
            b"{\"cursor\":\"1-1\",\"events\":{}}",
            b"\xff\xfe",
            long.as_bytes(),
        ] {
            match parse_answer(body, 1024) {
                Err(ClientError::UnexpectedResponse { reason }) => {
                    assert!(reason.len() < 400, "{reason}");
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}

#[cfg(test)]
mod limits {
    use super::*;

    #[test]
    fn an_item_over_the_limit_is_skipped_alone() {
        let big = "x".repeat(2000);
        let body = format!(
            r#"{{"cursor":"1-3","events":[{{"cursor":"1-1","event":"x","data":"{big}"}},{{"cursor":"1-2","event":"x","data":1}}]}}"#
        );
        let answer = parse_answer(body.as_bytes(), 1024).expect("answer");
        assert!(matches!(
            answer.items[0],
            Read::Skipped(ClientError::TooLarge {
                limit: 1024,
                cursor: Some(cursor),
            }) if cursor == Cursor::new(1, 1)
        ));
        assert!(matches!(&answer.items[1], Read::Frame(frame) if frame.data == "1"));
    }

    #[test]
    fn the_limit_asked_fits_the_answer_budget() {
        let item = ClientConfig::DEFAULT_MAX_ITEM_SIZE;
        let answer = item * ClientConfig::POLL_ANSWER_ITEMS;
        let limit = answer_limit(answer, item);
        assert_eq!(limit, ClientConfig::POLL_ANSWER_ITEMS - 1);
        assert!(limit * item + ANSWER_ENVELOPE <= answer);
        assert_eq!(answer_limit(100, 1024), 1);
    }

    #[test]
    fn the_tag_names_the_next_cursor() {
        for (tag, cursor) in [
            ("\"5-2\"", Some(Cursor::new(5, 2))),
            ("W/\"5-9;more\"", Some(Cursor::new(5, 9))),
            ("\"5-9;gap=5-4\"", Some(Cursor::new(5, 9))),
            ("5-9", None),
            ("\"nope\"", None),
        ] {
            assert_eq!(tag_cursor(&HeaderValue::from_static(tag)), cursor, "{tag}");
        }
    }
}

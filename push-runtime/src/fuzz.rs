//! Fuzzing oracles of every server-side parser that request input reaches:
//! cursors, topics, the query string, `Last-Event-ID`, `If-None-Match`, poll
//! numbers, the publish body and WebSocket frames from clients.
//!
//! Each oracle takes raw bytes and panics when a property fails: no panic
//! inside the parser, a parsed value that round-trips through its text form
//! (or agrees with an independent reading of the input), an error with a
//! message otherwise, and no value over its limit. Two drivers feed them:
//! the proptest properties below (stable, in the normal test pass, with
//! input strategies close to the real formats), and the cargo-fuzz targets
//! in `fuzz/` (coverage-guided, through `push_runtime::__fuzz` under the
//! `fuzzing` feature). See docs/security.md.
//!
//! Inputs with several parts (a header and a query) are split at the first
//! NUL byte, which neither a header value nor a request target can hold.

use crate::channel::{Channel, EventKind};
use crate::cursor::Cursor;
use crate::history::Start;
use crate::params::{self, PollTag, SubscribeRejection};
use crate::topic::{Topic, TopicError};
use crate::transport::poll;
use axum::http::{HeaderMap, HeaderValue, header};
use std::borrow::Cow;

/// The bytes as text, lossily: every parser here reads text.
fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `data` split at its first NUL: the first part and the rest (if any).
fn split(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    }
}

/// The value of a decimal number of any length, if it fits a `u64`.
fn decimal(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > 20 {
        return None;
    }
    // At most 20 digits fit a u128 whatever they are.
    let value: u128 = significant.parse().unwrap_or(0);
    u64::try_from(value).ok()
}

/// What a cursor's text must parse to: `<digits>-<digits>`, split at the
/// first dash, both parts within `u64`.
fn expected_cursor(text: &str) -> Option<Cursor> {
    let (epoch, seq) = text.split_once('-')?;
    Some(Cursor::new(decimal(epoch)?, decimal(seq)?))
}

/// A cursor: `FromStr` agrees with the grammar, a cursor round-trips through
/// its text (`Display`, `put`, the entity tag, serde), and an error quotes a
/// bounded part of the input.
pub fn cursor(data: &[u8]) {
    let text = text(data);
    let parsed = text.parse::<Cursor>();
    assert_eq!(
        parsed.as_ref().ok(),
        expected_cursor(&text).as_ref(),
        "{text:?}"
    );
    match parsed {
        Ok(cursor) => {
            let written = cursor.to_string();
            assert_eq!(written.parse::<Cursor>(), Ok(cursor));
            assert_eq!(written, format!("{}-{}", cursor.epoch(), cursor.seq()));
            let mut put = Vec::new();
            cursor.put(&mut put);
            assert_eq!(put, written.as_bytes());
            let etag = cursor.etag().expect("a cursor is a valid header value");
            assert_eq!(etag.as_bytes(), format!("\"{written}\"").as_bytes());
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("invalid cursor"), "{message}");
            // 64 characters of input at most, each at most 4 bytes.
            assert!(message.len() <= 120 + 4 * 64, "{message}");
        }
    }
    let json = serde_json::to_string(&*text).expect("a string serializes");
    let from_json = serde_json::from_str::<Cursor>(&json).ok();
    assert_eq!(from_json, text.parse().ok(), "serde agrees with FromStr");
}

/// A topic name (the first byte is the length limit, the rest the name):
/// accepted exactly when the documented rules say so, with the error they
/// name, and kept verbatim.
pub fn topic(data: &[u8]) {
    let Some((&max, name)) = data.split_first() else {
        return;
    };
    let max = usize::from(max);
    let name = text(name);
    let expected = if name.is_empty() {
        Err(TopicError::Empty)
    } else if name.len() > max {
        Err(TopicError::TooLong {
            len: name.len(),
            max,
        })
    } else {
        match name.char_indices().find(|&(at, c)| {
            !(c.is_ascii_alphanumeric() || c == '_' || (at > 0 && "-.:".contains(c)))
        }) {
            Some((at, found)) => Err(TopicError::BadChar { found, at }),
            None => Ok(()),
        }
    };
    match Topic::with_max_len(&name, max) {
        Ok(topic) => {
            assert_eq!(expected, Ok(()), "{name:?} accepted");
            assert_eq!(topic.as_str(), name);
            assert_eq!(topic.to_string(), name);
            assert_eq!(Topic::with_max_len(topic.as_str(), max), Ok(topic));
        }
        Err(error) => {
            assert_eq!(Err(error.clone()), expected, "{name:?}");
            assert!(error.to_string().starts_with("invalid topic"), "{error}");
        }
    }
}

/// The query string: its pairs are those of `application/x-www-form-urlencoded`;
/// each parameter the routes read is found once, or refused when repeated;
/// `limit` and `timeout` are whole numbers (overflow saturates); `after` and
/// `events` are validated as a subscription for `C`.
pub fn query<C: Channel>(data: &[u8]) {
    let query = text(data);
    let ours: Vec<(String, String)> = params::pairs(Some(&query))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let theirs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(ours, theirs);
    let parsed = params::Query::new(Some(&query));
    for name in params::NAMES {
        let values: Vec<&str> = theirs
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect();
        match parsed.get(name) {
            Ok(None) => assert!(values.is_empty(), "{name}: {values:?}"),
            Ok(Some(value)) => assert_eq!(values, [value]),
            Err(error) => {
                assert!(values.len() > 1, "{name}: {values:?}");
                assert!(error.to_string().contains(name), "{error}");
            }
        }
    }
    for (name, min) in [("limit", 1), ("timeout", 0)] {
        let number = poll::number(&parsed, name, "a number", min);
        let given = parsed.get(name).ok();
        let digits = given
            .flatten()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()));
        if let (Err(_), Some(digits)) = (&number, digits) {
            assert!(
                decimal(digits).is_some_and(|n| n < min),
                "{name}={digits:?} refused"
            );
        }
        match (number, given) {
            (Ok(None), Some(None)) => {}
            (Ok(Some(n)), Some(Some(text))) => {
                let all_digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
                assert!(all_digits, "{name}={text:?} accepted");
                assert_eq!(n, decimal(text).unwrap_or(u64::MAX), "{name}={text:?}");
                assert!(n >= min);
            }
            (Err(error), _) => assert!(error.to_string().contains(name), "{error}"),
            (number, given) => panic!("{name}: {number:?} for {given:?}"),
        }
    }
    subscription::<C>(&parsed, &HeaderMap::new(), false);
}

/// Checks `params::parse` against the rules it documents: the start is the
/// first of `Last-Event-ID`, `after` and (when `conditional`) the tag of
/// `If-None-Match`; `events` names only the channel's events.
fn subscription<C: Channel>(query: &params::Query<'_>, headers: &HeaderMap, conditional: bool) {
    let parsed = params::parse::<C>(query, headers, conditional);
    let after = query.get("after");
    let events = query.get("events");
    let last_event_id = headers
        .get(params::LAST_EVENT_ID)
        .map(|value| value.to_str().unwrap_or("\u{fffd}"))
        .filter(|value| !value.is_empty());
    let tag = if conditional {
        params::if_none_match(headers)
    } else {
        Ok(None)
    };
    let request = match parsed {
        Ok(request) => request,
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty());
            match error {
                SubscribeRejection::Repeated(name) => {
                    assert!(matches!(name, "after" | "events"), "{name}");
                }
                SubscribeRejection::Cursor { origin, .. } => {
                    let text = match origin {
                        "Last-Event-ID" => last_event_id,
                        "after" => after.ok().flatten(),
                        _ => None,
                    };
                    if let Some(text) = text {
                        assert!(expected_cursor(text).is_none(), "{text:?} refused");
                    } else {
                        assert_eq!(origin, "If-None-Match");
                        assert!(tag.is_err(), "a tag refused that parses");
                    }
                }
                SubscribeRejection::UnknownEvent { name, .. } => {
                    let list = events.ok().flatten().expect("refused without `events`");
                    assert!(
                        list.split(',')
                            .any(|given| C::Kind::from_name(given).is_none()
                                && given.chars().take(64).eq(name.chars())),
                        "{name:?} not in {list:?}"
                    );
                }
                other => panic!("unexpected refusal: {other}"),
            }
            return;
        }
    };
    let expected = match (
        last_event_id,
        after.expect("accepted"),
        tag.expect("accepted"),
    ) {
        (Some(id), _, _) => Start::After(expected_cursor(id).expect("accepted")),
        (None, Some(after), _) => Start::After(expected_cursor(after).expect("accepted")),
        (None, None, Some(tag)) => Start::After(tag.cursor),
        (None, None, None) => Start::Now,
    };
    assert_eq!(request.start, expected);
    match (request.filter, events.expect("accepted")) {
        (None, None) => {}
        (Some(filter), Some(list)) => {
            for kind in C::Kind::ALL {
                let named = list.split(',').any(|name| name == kind.name());
                assert_eq!(filter.contains(kind.index()), named, "{list:?}");
            }
        }
        (filter, list) => panic!("filter {filter:?} for `events` {list:?}"),
    }
}

fn headers_with(name: header::HeaderName, value: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.insert(name, value);
    }
    headers
}

/// `Last-Event-ID` (the header's bytes, then after a NUL an optional query):
/// it takes precedence over `after`, and parses as a cursor or is refused.
pub fn last_event_id<C: Channel>(data: &[u8]) {
    let (value, query) = split(data);
    let headers = headers_with(
        header::HeaderName::from_static(params::LAST_EVENT_ID),
        value,
    );
    let query = query.map(text);
    subscription::<C>(&params::Query::new(query.as_deref()), &headers, false);
    subscription::<C>(&params::Query::new(query.as_deref()), &headers, true);
}

/// `If-None-Match` (the header's bytes, then after a NUL an optional query):
/// a tag parses into a `PollTag` whose `ETag` parses back to itself, or is
/// refused naming the header; it is a start only without `after` and
/// `Last-Event-ID`.
pub fn if_none_match<C: Channel>(data: &[u8]) {
    let (value, query) = split(data);
    let headers = headers_with(header::IF_NONE_MATCH, value);
    match params::if_none_match(&headers) {
        Ok(None) => {
            let text = headers.get(header::IF_NONE_MATCH).map(HeaderValue::to_str);
            let star = text
                .as_ref()
                .is_some_and(|t| t.as_ref().ok().map(|t| t.trim()) == Some("*"));
            assert!(text.is_none() || star, "{text:?} ignored");
        }
        Ok(Some(tag)) => {
            let written = tag.header().expect("a tag is a valid header value");
            let again =
                params::if_none_match(&headers_with(header::IF_NONE_MATCH, written.as_bytes()));
            assert_eq!(again.ok(), Some(Some(tag)), "{written:?}");
            let weak = [b"W/", written.as_bytes()].concat();
            let again = params::if_none_match(&headers_with(header::IF_NONE_MATCH, &weak));
            assert_eq!(again.ok(), Some(Some(tag)), "weak {written:?}");
            assert_tag_text(&tag, written.as_bytes());
        }
        Err(error) => assert!(error.to_string().contains("If-None-Match"), "{error}"),
    }
    let query = query.map(text);
    subscription::<C>(&params::Query::new(query.as_deref()), &headers, true);
}

/// The text of an entity tag, checked against its documented grammar:
/// `"<cursor>[;gap=<cursor>][;more]"`.
fn assert_tag_text(tag: &PollTag, written: &[u8]) {
    let mut expected = format!("\"{}", tag.cursor);
    if let Some(gap) = tag.gap {
        expected.push_str(&format!(";gap={gap}"));
    }
    if tag.more {
        expected.push_str(";more");
    }
    expected.push('"');
    assert_eq!(written, expected.as_bytes());
}

#[cfg(feature = "client")]
pub use round_trip::publish_body;
pub use websocket::ws_frames;

#[cfg(feature = "client")]
mod round_trip {
    use super::*;
    use crate::client::fuzz::{Decoded, decode_all};
    use crate::history::{Delivery, Outgoing, TopicLog};
    use crate::hub::DEFAULT_MAX_EVENT_SIZE;
    use crate::transport::{iframe, sse};
    use crate::wire;
    use axum::Json;
    use axum::body::Body;
    use axum::extract::{FromRequest, Request};
    use axum::response::IntoResponse;
    use bytes::Bytes;
    use futures_util::FutureExt;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use std::fmt::Debug;
    use std::sync::Arc;

    /// A publish request's body (`POST {base}/{topic}`), read as the route
    /// reads it (axum's `Json` extractor): an event exactly when serde reads
    /// one, a 4xx with a message otherwise. An event round-trips through its
    /// JSON, and through every transport's framing and the client's parser of
    /// it (SSE, WebSocket, forever frame, poll answer): the client gets the
    /// very event with its cursor.
    pub fn publish_body<C>(data: &[u8])
    where
        C: Channel + PartialEq + Debug + Serialize + DeserializeOwned,
    {
        let request = Request::builder()
            .method("POST")
            .uri("/t")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(Bytes::copy_from_slice(data)))
            .expect("a valid request");
        let extracted = Json::<C>::from_request(request, &())
            .now_or_never()
            .expect("a body in memory is read at once");
        let by_serde = serde_json::from_slice::<C>(data);
        let event = match extracted {
            Ok(Json(event)) => event,
            Err(rejection) => {
                assert!(by_serde.is_err(), "refused what serde reads: {rejection}");
                let response = rejection.into_response();
                assert!(response.status().is_client_error(), "{}", response.status());
                return;
            }
        };
        assert_eq!(by_serde.as_ref().ok(), Some(&event));
        let json = serde_json::to_vec(&event).expect("an event serializes");
        assert_eq!(
            serde_json::from_slice::<C>(&json).ok().as_ref(),
            Some(&event)
        );
        if json.len() > DEFAULT_MAX_EVENT_SIZE {
            return;
        }
        let kind = event.kind();
        let log = Arc::new(TopicLog::new(7, 2));
        let mut subscription = log.subscribe(Start::Now).expect("a new log accepts Now");
        let cursor = log.append(Outgoing {
            name: kind.name(),
            kind_index: kind.index(),
            data: Bytes::from(json),
        });
        let mut batch = Vec::new();
        subscription.fill(&mut batch, 2);
        assert_eq!(batch.len(), 1);
        let Some(Delivery::Event(_)) = batch.first() else {
            panic!("not an event: {batch:?}");
        };
        let delivery = &batch[0];
        let wires = [
            ("sse", sse::encode_batch(&batch)),
            ("ws", wire::delivery_message(delivery)),
            ("iframe", iframe::delivery_script(delivery)),
            ("poll", poll::answer_body(cursor, false, &batch)),
        ];
        for (transport, bytes) in wires {
            let decoded = decode_all::<C>(transport, &bytes);
            match decoded.as_slice() {
                [
                    Decoded::Event {
                        cursor: got,
                        event: back,
                    },
                ] => {
                    assert_eq!((got, back), (&cursor, &event), "{transport}");
                }
                other => panic!("{transport}: {other:?} from {bytes:?}"),
            }
        }
    }
}

mod websocket {
    use std::io::{self, Read, Write};
    use tungstenite::error::{CapacityError, Error as WsError};
    use tungstenite::protocol::{Message, Role, WebSocket, WebSocketConfig};

    /// A connection whose peer sent `input` and then closed its side.
    struct Wire<'a> {
        input: &'a [u8],
        /// Each read hands over at most this much (as a socket would).
        step: usize,
    }

    impl Read for Wire<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input = &self.input[n..];
            Ok(n)
        }
    }

    impl Write for Wire<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What the server's pump does with what it read.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// Ping or pong: read on.
        Continue,
        /// The peer closed or vanished.
        Gone,
        /// Close with this code (`1008` for a data message, `1009` for one too
        /// big, `1002` for a protocol error).
        Close(u16),
    }

    /// The first frame's header, read independently: (opcode, masked,
    /// claimed payload length), once its bytes (the mask included) are all
    /// there.
    fn first_header(input: &[u8]) -> Option<(u8, bool, u64)> {
        let (&b0, rest) = input.split_first()?;
        let (&b1, rest) = rest.split_first()?;
        let (len, rest) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
                &rest[2..],
            ),
            127 => (
                u64::from_be_bytes(rest.get(..8)?.try_into().ok()?),
                &rest[8..],
            ),
            n => (u64::from(n), rest),
        };
        let masked = b1 & 0x80 != 0;
        (!masked || rest.len() >= 4).then_some((b0 & 0x0f, masked, len))
    }

    /// Bytes a client sent on an upgraded WebSocket, read as the server
    /// reads them: tungstenite in the server role with the limits
    /// `transport::ws` sets (`WsConfig::max_incoming` as the message and frame
    /// limit, a small read buffer). The first byte picks the limit (125 B to
    /// 8 KiB, 4 KiB the default) and how many bytes each read gets; the rest
    /// is the stream. Reading never panics and always ends; no message over
    /// the limit is ever handed over; an unmasked first frame is a protocol
    /// error and a first frame claiming more than the limit is `1009`; a text
    /// or binary message ends the connection with `1008`, as the pump does.
    pub fn ws_frames(data: &[u8]) {
        let Some((&knobs, input)) = data.split_first() else {
            return;
        };
        let max = match knobs & 0x0f {
            0 => crate::transport::ws::WsConfig::default().max_incoming,
            n => 125 + usize::from(n - 1) * 575,
        };
        let step = [1, 2, 7, 64, 256, 1024, 4096, usize::MAX][usize::from(knobs >> 5)];
        let config = WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
            .read_buffer_size(256);
        let mut socket =
            WebSocket::from_raw_socket(Wire { input, step }, Role::Server, Some(config));
        let mut first = true;
        // Each read consumes at least one byte or ends the connection.
        for _ in 0..=input.len() + 1 {
            let read = socket.read();
            let outcome = match &read {
                Ok(Message::Ping(p) | Message::Pong(p)) => {
                    assert!(p.len() <= 125, "control frame of {}", p.len());
                    Outcome::Continue
                }
                Ok(Message::Close(_)) => Outcome::Gone,
                Ok(Message::Text(m)) => {
                    assert!(m.len() <= max, "text of {} over {max}", m.len());
                    Outcome::Close(1008)
                }
                Ok(Message::Binary(m)) => {
                    assert!(m.len() <= max, "binary of {} over {max}", m.len());
                    Outcome::Close(1008)
                }
                Ok(Message::Frame(_)) => panic!("a raw frame is never read"),
                Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                    assert!(size > max_size && *max_size == max, "{size} {max_size}");
                    Outcome::Close(1009)
                }
                Err(WsError::Protocol(_) | WsError::Capacity(_) | WsError::Utf8(_)) => {
                    Outcome::Close(1002)
                }
                Err(_) => Outcome::Gone,
            };
            if first && let Some((opcode, masked, len)) = first_header(input) {
                // Once a header is read: a reserved opcode is refused, then
                // a length over the limit (before its payload is read), then
                // a frame that is not masked.
                if matches!(opcode, 3..=7 | 11..=15) {
                    assert_eq!(outcome, Outcome::Close(1002), "opcode {opcode}: {read:?}");
                } else if len > max as u64 {
                    assert_eq!(outcome, Outcome::Close(1009), "{len} over {max}: {read:?}");
                } else if !masked {
                    assert_eq!(outcome, Outcome::Close(1002), "unmasked frame: {read:?}");
                }
            }
            first = false;
            if outcome != Outcome::Continue {
                return;
            }
        }
        panic!("reading {} bytes did not end", input.len());
    }
}

#[cfg(test)]
pub(crate) use tests::Probe;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{self, Limits};
    use crate::origin::{OriginPolicy, parse_origin};
    use axum::http::Uri;
    use proptest::prelude::*;

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub(crate) enum Probe {
        A,
        B { text: String },
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub(crate) enum ProbeKind {
        A,
        B,
    }

    impl EventKind for ProbeKind {
        const ALL: &'static [Self] = &[ProbeKind::A, ProbeKind::B];
        const NAMES: &'static [&'static str] = &["a", "b"];

        fn name(self) -> &'static str {
            match self {
                ProbeKind::A => "a",
                ProbeKind::B => "b",
            }
        }

        fn index(self) -> usize {
            self as usize
        }
    }

    impl Channel for Probe {
        type Kind = ProbeKind;
        const PATH: &'static str = "/p";

        fn kind(&self) -> ProbeKind {
            match self {
                Probe::A => ProbeKind::A,
                Probe::B { .. } => ProbeKind::B,
            }
        }
    }

    /// Text that looks like what the parsers expect, often almost right.
    fn near_cursor() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{0,22}-[0-9]{0,22}",
            "[-0-9+ ]{0,30}",
            "\\PC{0,40}",
            Just("18446744073709551615-18446744073709551615".to_owned()),
            Just("18446744073709551616-1".to_owned()),
            Just("00000000000000000000000000018-01".to_owned()),
        ]
    }

    fn query_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            near_cursor().prop_map(|c| format!("after={c}")),
            "(a|b|c|,|%2C|%FF|%|\\PC){0,12}".prop_map(|e| format!("events={e}")),
            "[0-9a-z%+=&.-]{0,20}".prop_map(|v| format!("limit={v}")),
            "[0-9a-z%+=&.-]{0,20}".prop_map(|v| format!("timeout={v}")),
            "\\PC{0,30}",
        ]
    }

    fn query_text() -> impl Strategy<Value = String> {
        prop::collection::vec(query_piece(), 0..6).prop_map(|pieces| pieces.join("&"))
    }

    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            near_cursor().prop_map(String::into_bytes),
            near_cursor().prop_map(|c| format!("W/\"{c}\"").into_bytes()),
            (near_cursor(), near_cursor(), any::<bool>()).prop_map(|(c, g, more)| {
                let more = if more { ";more" } else { "" };
                format!("\"{c};gap={g}{more}\"").into_bytes()
            }),
            prop::collection::vec(any::<u8>(), 0..64),
        ]
    }

    /// A header value, a NUL, a query: the layout of the header oracles.
    fn header_and_query() -> impl Strategy<Value = Vec<u8>> {
        (header_bytes(), prop::option::of(query_text())).prop_map(|(header, query)| {
            let mut data = header;
            if let Some(query) = query {
                data.push(0);
                data.extend_from_slice(query.as_bytes());
            }
            data
        })
    }

    /// One client-to-server WebSocket frame, well formed or not.
    fn ws_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<bool>(),
            0u8..16,
            any::<bool>(),
            prop_oneof![
                0u64..126,
                Just(126u64),
                Just(4096),
                Just(65_535),
                Just(u64::MAX)
            ],
            prop::collection::vec(any::<u8>(), 0..200),
            any::<[u8; 4]>(),
        )
            .prop_map(|(fin, opcode, masked, claimed, payload, key)| {
                let mut out = vec![(u8::from(fin) << 7) | opcode];
                let mask_bit = u8::from(masked) << 7;
                match claimed {
                    0..=125 => out.push(mask_bit | payload.len().min(125) as u8),
                    126..=65_535 => {
                        out.push(mask_bit | 126);
                        out.extend_from_slice(&(claimed as u16).to_be_bytes());
                    }
                    _ => {
                        out.push(mask_bit | 127);
                        out.extend_from_slice(&claimed.to_be_bytes());
                    }
                }
                if masked {
                    out.extend_from_slice(&key);
                }
                out.extend_from_slice(&payload);
                out
            })
    }

    fn publish_json() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "\\PC{0,40}".prop_map(|text| serde_json::to_vec(&Probe::B { text }).unwrap()),
            Just(b"\"A\"".to_vec()),
            "\\{\"B\":\\{\"text\":\"(\\\\n|\\\\u003c|<|/|\\\\\"|\\PC){0,12}\"\\}\\}"
                .prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        #[test]
        fn cursors_parse_or_fail_and_round_trip(text in near_cursor()) {
            cursor(text.as_bytes());
        }

        #[test]
        fn topics_are_validated_as_documented(
            max in prop_oneof![Just(128u8), any::<u8>()],
            name in prop_oneof!["\\PC{0,200}", "[a-z0-9_.:-]{0,200}"],
        ) {
            topic(&[&[max], name.as_bytes()].concat());
        }

        #[test]
        fn queries_parse_as_form_urlencoded_and_as_documented(
            query_text in prop_oneof![
                query_text(),
                "((after|limit|events|origin|timeout|x)=[a-z0-9%+-]{0,6}&){0,6}",
                "\\PC{0,40}",
            ],
        ) {
            query::<Probe>(query_text.as_bytes());
        }

        #[test]
        fn last_event_id_takes_precedence_or_is_refused(data in header_and_query()) {
            last_event_id::<Probe>(&data);
        }

        #[test]
        fn if_none_match_round_trips_or_is_refused(data in header_and_query()) {
            if_none_match::<Probe>(&data);
        }

        #[test]
        fn websocket_frames_from_clients_are_bounded(
            knobs in any::<u8>(),
            frames in prop::collection::vec(ws_frame(), 0..4),
        ) {
            ws_frames(&[&[knobs][..], &frames.concat()].concat());
        }

        #[test]
        fn origins_parse_and_judge_without_panics(
            origin in prop_oneof!["\\PC{0,40}", "(https?)://[a-z0-9.:\\[\\]-]{0,30}"],
            host in "\\PC{0,30}",
            site in "\\PC{0,12}",
            frame in any::<bool>(),
        ) {
            if let Ok(normal) = parse_origin(&origin) {
                prop_assert_eq!(parse_origin(&normal).ok(), Some(normal.clone()));
            }
            let policy = OriginPolicy::default().allow(["https://app.example"]).unwrap_or_default();
            let mut headers = headers_with(header::ORIGIN, origin.as_bytes());
            for (name, value) in [(header::HOST, &host), (header::HeaderName::from_static("sec-fetch-site"), &site)] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(name, value);
                }
            }
            let _ = policy.judge(&headers, frame);
        }

        #[test]
        fn request_targets_are_measured_without_panics(path in "/[a-z/%]{0,40}", query in query_text()) {
            if let Ok(uri) = format!("{path}?{query}").parse::<Uri>() {
                let limits = Limits::default().max_query(16).max_request_target(32);
                let verdict = limits::check_target(&uri, &limits);
                // What the URI holds: a `#` ends the query (finding: the first
                // version of this oracle measured the text before parsing).
                let (path, query) = (uri.path().len(), uri.query().map_or(0, str::len));
                prop_assert_eq!(verdict.is_ok(), query <= 16 && path + query <= 32);
            }
        }
    }

    #[cfg(feature = "client")]
    proptest! {
        #[test]
        fn published_events_reach_the_client_intact_on_every_transport(body in publish_json()) {
            publish_body::<Probe>(&body);
        }
    }

    /// Regression: a cursor whose numbers overflow `u64` is refused, not wrapped.
    #[test]
    fn an_overflowing_cursor_is_refused() {
        assert!("18446744073709551616-1".parse::<Cursor>().is_err());
        assert!("1-18446744073709551616".parse::<Cursor>().is_err());
        cursor(b"18446744073709551616-1");
        cursor(b"00000000000000000000000000018446744073709551615-0");
    }

    /// The oracles catch what they claim to: a wrong expectation panics.
    #[test]
    fn the_oracles_fail_on_a_broken_property() {
        assert_eq!(expected_cursor("1-2"), Some(Cursor::new(1, 2)));
        assert_eq!(expected_cursor("1-2-3"), None);
        assert_eq!(decimal("18446744073709551615"), Some(u64::MAX));
        assert_eq!(decimal("18446744073709551616"), None);
        let broken = std::panic::catch_unwind(|| {
            assert_tag_text(
                &PollTag {
                    cursor: Cursor::new(1, 2),
                    gap: None,
                    more: true,
                },
                b"\"1-2\"",
            );
        });
        assert!(broken.is_err());
    }
}

//! Fuzzing oracles of the client's parsers of server output: the SSE stream,
//! the forever frame's document, the poll answer and WebSocket messages
//! (frames included), and what an item means for the channel type.
//!
//! Each oracle takes raw bytes and panics when a property fails: no panic
//! inside a parser, the same items whatever pieces the bytes arrive in, no
//! item over the parser's limit, items that agree with an independent
//! reading of the JSON, and events that round-trip through serde. Driven by
//! the proptest properties below and by the cargo-fuzz targets in `fuzz/`
//! (see `src/fuzz.rs`).
//!
//! The stream oracles read their first byte as the item limit (1 to 1021
//! bytes, small enough to be hit) and the next three as the points where
//! the stream is cut into chunks.

use super::error::ClientError;
use super::frame::{Frame, Meaning, interpret, parse_envelope};
use super::iframe::{IframeItem, IframeParser};
use super::poll::parse_answer;
use super::sse::{SseItem, SseParser};
use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::wire;
use bytes::Bytes;
use serde_json::Value;
use std::fmt::Debug;

/// The limit, the cut points and the stream of a stream oracle's input.
fn stream_input(data: &[u8]) -> Option<(usize, [usize; 3], &[u8])> {
    let (head, stream) = data.split_at_checked(4)?;
    let max = 1 + usize::from(head[0]) * 4;
    let cuts = [head[1], head[2], head[3]].map(|b| usize::from(b) * stream.len() / 255);
    Some((max, cuts, stream))
}

/// `bytes` cut at `cuts` (in any order).
fn pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts.iter().map(|c| (*c).min(bytes.len())).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain([bytes.len()]) {
        out.push(Bytes::copy_from_slice(&bytes[start..point]));
        start = point;
    }
    out
}

fn sse_items(max: usize, chunks: &[Bytes]) -> Vec<SseItem> {
    let mut parser = SseParser::new(max);
    let mut items = Vec::new();
    for chunk in chunks {
        parser.push(chunk.clone());
        while let Some(item) = parser.next_item() {
            items.push(item);
        }
    }
    items
}

fn iframe_items(max: usize, chunks: &[Bytes]) -> Vec<IframeItem> {
    let mut parser = IframeParser::new(max);
    let mut items = Vec::new();
    for chunk in chunks {
        parser.push(chunk.clone());
        while let Some(item) = parser.next_item() {
            items.push(item);
        }
    }
    items
}

/// An SSE stream: the same items whole or in pieces, each within the limit
/// (a block's id, name and data), and every event block interpreted for `C`.
pub fn sse<C: Channel + PartialEq + Debug>(data: &[u8]) {
    let Some((max, cuts, stream)) = stream_input(data) else {
        return;
    };
    let whole = sse_items(max, &[Bytes::copy_from_slice(stream)]);
    let cut = sse_items(max, &pieces(stream, &cuts));
    assert_eq!(whole, cut, "cut at {cuts:?}");
    for item in whole {
        if let SseItem::Event(event) = item {
            assert!(
                event.data.len() <= max,
                "data of {} over {max}",
                event.data.len()
            );
            // `message` is the name of a block without one.
            let name_max = max.max("message".len());
            assert!(
                event.event.len() <= name_max,
                "name of {} over {max}",
                event.event.len()
            );
            let id = event.id.as_deref().unwrap_or_default();
            assert!(id.len() <= max, "id of {} over {max}", id.len());
            meaning::<C>(&Frame {
                cursor: event.id,
                event: event.event,
                data: event.data,
            });
        }
    }
}

/// A forever frame's document: the same items whole or in pieces, each
/// within the limit, and every item read as a JSON message.
pub fn iframe<C: Channel + PartialEq + Debug>(data: &[u8]) {
    let Some((max, cuts, stream)) = stream_input(data) else {
        return;
    };
    let whole = iframe_items(max, &[Bytes::copy_from_slice(stream)]);
    let cut = iframe_items(max, &pieces(stream, &cuts));
    assert_eq!(whole, cut, "cut at {cuts:?}");
    for item in whole {
        match item {
            IframeItem::Item(json) => {
                assert!(json.len() <= max, "item of {} over {max}", json.len());
                message::<C>(&json);
            }
            IframeItem::TooLarge => {}
            IframeItem::Malformed(reason) => {
                assert!(reason.len() <= 512, "{reason}");
            }
        }
    }
}

/// A poll answer's body (the first byte picks the item limit): an answer
/// whose cursor, `more` and number of items are those of the JSON, each item
/// over the limit skipped alone and every other one read as a JSON message;
/// or an error naming the poll answer.
pub fn poll_answer<C: Channel + PartialEq + Debug>(data: &[u8]) {
    let Some((&max, body)) = data.split_first() else {
        return;
    };
    let max = 1 + usize::from(max) * 4;
    let answer = match parse_answer(body, max) {
        Ok(answer) => answer,
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("poll answer"), "{message}");
            return;
        }
    };
    let Ok(Value::Object(json)) = serde_json::from_slice::<Value>(body) else {
        // Accepted as an answer, so it is a JSON object; `Value` refuses
        // only numbers out of `f64`'s range, which the answer skips.
        return;
    };
    let cursor = json.get("cursor").and_then(Value::as_str);
    assert_eq!(cursor.and_then(|c| c.parse().ok()), Some(answer.cursor));
    let more = json.get("more").map_or(Some(false), Value::as_bool);
    assert_eq!(more, Some(answer.more));
    #[derive(serde::Deserialize)]
    struct Events<'a> {
        #[serde(borrow)]
        events: Vec<&'a serde_json::value::RawValue>,
    }
    let text = std::str::from_utf8(body).expect("an answer is UTF-8");
    let events = serde_json::from_str::<Events<'_>>(text).expect("an answer has `events`");
    assert_eq!(events.events.len(), answer.items.len());
    for (item, raw) in answer.items.iter().zip(events.events) {
        let raw = raw.get();
        let value = serde_json::from_str::<Value>(raw).expect("the body is a `Value`");
        match item {
            super::frame::Read::Frame(frame) => {
                assert!(raw.len() <= max, "item of {} over {max}", raw.len());
                envelope_agrees(frame, &value, raw);
                meaning::<C>(frame);
            }
            super::frame::Read::Skipped(ClientError::TooLarge { limit, .. }) => {
                assert_eq!(*limit, max);
                assert!(raw.len() > max, "item of {} skipped under {max}", raw.len());
            }
            super::frame::Read::Skipped(ClientError::Malformed { .. }) => {
                assert!(!is_envelope(&value, raw), "a message refused: {raw}");
            }
            other => panic!("unexpected item {other:?}"),
        }
    }
}

/// A WebSocket text message (the bytes, lossily as text): a frame exactly
/// when it is a JSON object with string `cursor` and `event` and any `data`
/// (or those three as an array, as serde reads a struct), which it keeps
/// verbatim; then interpreted for `C`.
pub fn ws_message<C: Channel + PartialEq + Debug>(data: &[u8]) {
    message::<C>(&String::from_utf8_lossy(data));
}

/// Bytes a server sent on a WebSocket, read as the client reads them:
/// tungstenite in the client role with `max_item_size` (the first byte picks
/// it, 1 to 1021 bytes) as its message and frame limit; no message over it
/// is handed over, reading always ends, and every text message is read as
/// by [`ws_message`].
pub fn ws_frames<C: Channel + PartialEq + Debug>(data: &[u8]) {
    use std::io::{self, Read, Write};
    use tungstenite::protocol::{Message, Role, WebSocket, WebSocketConfig};

    struct Wire<'a>(&'a [u8]);
    impl Read for Wire<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
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

    let Some((&max, input)) = data.split_first() else {
        return;
    };
    let max = 1 + usize::from(max) * 4;
    // A small read buffer: the same parsing as the default 128 KiB one, which
    // would be most of the time of each run.
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(512);
    let mut socket = WebSocket::from_raw_socket(Wire(input), Role::Client, Some(config));
    for _ in 0..=input.len() + 1 {
        match socket.read() {
            Ok(Message::Text(text)) => {
                assert!(text.len() <= max, "text of {} over {max}", text.len());
                message::<C>(text.as_str());
            }
            Ok(Message::Binary(bytes)) => assert!(bytes.len() <= max),
            Ok(Message::Ping(p) | Message::Pong(p)) => assert!(p.len() <= 125),
            Ok(Message::Close(_) | Message::Frame(_)) => {}
            Err(_) => return,
        }
    }
    panic!("reading {} bytes did not end", input.len());
}

/// One JSON message: `parse_envelope` against `serde_json::Value`.
fn message<C: Channel + PartialEq + Debug>(text: &str) {
    let value = serde_json::from_str::<Value>(text).ok();
    match parse_envelope(text) {
        Ok(frame) => {
            if let Some(value) = value {
                envelope_agrees(&frame, &value, text);
            }
            meaning::<C>(&frame);
        }
        Err(ClientError::Malformed { reason }) => {
            // The message quoted in 64 characters, and serde's reason.
            assert!(reason.len() <= 1024, "{reason}");
            if let Some(value) = value {
                assert!(!is_envelope(&value, text), "refused {text:?}");
            }
        }
        Err(other) => panic!("not a malformed message: {other}"),
    }
}

/// The `cursor`, `event` and `data` of a JSON message: the keys of an
/// object, or the elements of a 3-element array (serde reads a struct from
/// its fields in order too, which the client accepts).
fn envelope_fields(value: &Value) -> Option<(Option<&str>, Option<&str>, Option<&Value>)> {
    match value {
        Value::Object(object) => Some((
            object.get("cursor").and_then(Value::as_str),
            object.get("event").and_then(Value::as_str),
            object.get("data"),
        )),
        Value::Array(items) if items.len() == 3 => {
            Some((items[0].as_str(), items[1].as_str(), Some(&items[2])))
        }
        _ => None,
    }
}

/// Whether the JSON `value` (read from `text`) is a message the envelope
/// must accept: string `cursor` and `event` and a `data`, each key once
/// (`Value` keeps the last of repeated keys, the envelope refuses them; a
/// key may be written with escapes, hence the backslash).
fn is_envelope(value: &Value, text: &str) -> bool {
    let fields = matches!(envelope_fields(value), Some((Some(_), Some(_), Some(_))));
    let repeated = ["\"cursor\"", "\"event\"", "\"data\""]
        .iter()
        .any(|key| text.matches(key).count() > 1);
    fields && !repeated && !text.contains('\\')
}

/// A frame parsed from `text` holds what the JSON `value` holds.
fn envelope_agrees(frame: &Frame, value: &Value, text: &str) {
    let (cursor, event, data) = envelope_fields(value).expect("an envelope is an object or array");
    assert_eq!(frame.cursor.as_deref(), cursor, "{text:?}");
    assert_eq!(Some(frame.event.as_str()), event, "{text:?}");
    if let Ok(parsed) = serde_json::from_str::<Value>(&frame.data) {
        assert_eq!(Some(&parsed), data, "{text:?}");
    }
}

/// What a frame means for `C`, checked against the frame: control events by
/// their names, events with their cursor, and events that round-trip.
fn meaning<C: Channel + PartialEq + Debug>(frame: &Frame) {
    let control = |name: &str, cursor: Cursor| {
        assert_eq!(frame.event, name);
        // `Value` refuses numbers out of `f64`'s range, which the payload skips.
        if let Ok(payload) = serde_json::from_str::<Value>(&frame.data) {
            // `{"cursor":…}`, or serde's sequence form of it, `[…]`.
            let sent = match &payload {
                Value::Array(items) => items.first(),
                object => object.get("cursor"),
            };
            let sent = sent.and_then(Value::as_str);
            assert_eq!(sent.map(str::parse::<Cursor>), Some(Ok(cursor)));
        }
    };
    match interpret::<C>(frame) {
        Meaning::Ready(cursor) => control(wire::READY, cursor),
        Meaning::End(cursor) => control(wire::END, cursor),
        Meaning::Expired(cursor) => control(crate::wire::EXPIRED, cursor),
        Meaning::Gap(_) => assert_eq!(frame.event, wire::GAP),
        Meaning::Ignored => {
            assert!(
                frame.event.starts_with("push."),
                "{:?} ignored",
                frame.event
            );
        }
        Meaning::Event { cursor, event } => {
            assert!(!frame.event.starts_with("push."), "{:?}", frame.event);
            let sent = frame.cursor.as_deref().map(str::parse::<Cursor>);
            assert_eq!(sent, Some(Ok(cursor)));
            let json = serde_json::to_string(&event).expect("an event serializes");
            let back = serde_json::from_str::<C>(&json).expect("an event reads back");
            assert_eq!(back, event);
        }
        Meaning::Invalid(ClientError::Malformed { reason }) => {
            // The name and cursor quoted in 128 characters, and serde's reason.
            assert!(reason.len() <= 2048, "{reason}");
        }
        Meaning::Invalid(error) => assert!(!error.to_string().is_empty()),
    }
}

/// What a client made of the bytes one transport wrote (the publish oracle
/// in `src/fuzz.rs` compares it with what was published).
#[derive(Debug)]
pub(crate) enum Decoded<C> {
    /// An event with its cursor.
    Event {
        /// Its cursor.
        cursor: Cursor,
        /// The event.
        event: C,
    },
    /// Anything else, described (read through `Debug`, in failure messages).
    Other(#[allow(dead_code)] String),
}

/// The items a client reads from the bytes `transport` wrote, with the
/// client's default item limit.
pub(crate) fn decode_all<C: Channel + Debug>(transport: &str, bytes: &Bytes) -> Vec<Decoded<C>> {
    let max = super::config::ClientConfig::DEFAULT_MAX_ITEM_SIZE;
    let decode = |frame: &Frame| match interpret::<C>(frame) {
        Meaning::Event { cursor, event } => Decoded::Event { cursor, event },
        other => Decoded::Other(format!("{other:?}")),
    };
    let envelope = |json: &str| match parse_envelope(json) {
        Ok(frame) => decode(&frame),
        Err(error) => Decoded::Other(error.to_string()),
    };
    match transport {
        "sse" => sse_items(max, std::slice::from_ref(bytes))
            .into_iter()
            .map(|item| match item {
                SseItem::Event(event) => decode(&Frame {
                    cursor: event.id,
                    event: event.event,
                    data: event.data,
                }),
                other => Decoded::Other(format!("{other:?}")),
            })
            .collect(),
        "ws" => vec![match std::str::from_utf8(bytes) {
            Ok(text) => envelope(text),
            Err(error) => Decoded::Other(error.to_string()),
        }],
        "iframe" => iframe_items(max, std::slice::from_ref(bytes))
            .into_iter()
            .map(|item| match item {
                IframeItem::Item(json) => envelope(&json),
                other => Decoded::Other(format!("{other:?}")),
            })
            .collect(),
        "poll" => match parse_answer(bytes, max) {
            Ok(answer) => answer
                .items
                .iter()
                .map(|item| match item {
                    super::frame::Read::Frame(frame) => decode(frame),
                    other => Decoded::Other(format!("{other:?}")),
                })
                .collect(),
            Err(error) => vec![Decoded::Other(error.to_string())],
        },
        other => vec![Decoded::Other(format!("no transport {other}"))],
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Chat;
    use super::*;
    use proptest::prelude::*;

    /// Bytes that are often close to the real formats.
    fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(
                b"id: 1-2\nevent: push.gap\ndata: {\"from\":\"1-0\",\"to\":\"1-2\",\"missed\":2}\n\n"
                    .to_vec()
            ),
            Just(b"id: 1-3\nevent: message\ndata: {\"type\":\"message\",\"from\":\"a\",\"text\":\"b\"}\n\n".to_vec()),
            Just(b"<script>m({\"cursor\":\"1-1\",\"event\":\"e\",\"data\":1})</script>\n".to_vec()),
            Just(b"<script>m({\"cursor\":\"1-4\",\"event\":\"cleared\",\"data\":{\"type\":\"cleared\"}})</script>\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b":\n\n".to_vec()),
            Just(b"retry: 99999999999999999999\n".to_vec()),
            Just(b"<script>m(".to_vec()),
            Just(b"</script>".to_vec()),
            Just(b"<!-- -->".to_vec()),
            Just(b"\xef\xbb\xbf".to_vec()),
            prop::collection::vec(any::<u8>(), 0..300),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    /// A limit, three cuts and a stream: the layout of the stream oracles.
    fn stream_case() -> impl Strategy<Value = Vec<u8>> {
        (any::<[u8; 4]>(), stream_bytes()).prop_map(|(head, stream)| [&head[..], &stream].concat())
    }

    fn message_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\{\"cursor\":\"[0-9-]{0,8}\",\"event\":\"(message|joined|cleared|push\\.ready|push\\.gap|push\\.x)\",\"data\":(\\{\\}|1|\"x\"|\\{\"type\":\"cleared\"\\}|\\{\"cursor\":\"1-2\"\\})\\}",
            "\\PC{0,60}",
        ]
    }

    proptest! {
        #[test]
        fn sse_parser_is_bounded_and_fragmentation_blind(data in stream_case()) {
            sse::<Chat>(&data);
        }

        #[test]
        fn iframe_parser_is_bounded_and_fragmentation_blind(data in stream_case()) {
            iframe::<Chat>(&data);
        }

        #[test]
        fn poll_answers_agree_with_their_json(
            max in any::<u8>(),
            body in prop_oneof![
                stream_bytes(),
                "\\{\"cursor\":\"[0-9-]{0,8}\",\"more\":(true|false|1),\"events\":\\[(\\{\\}|1|\"x\"|,|\\{\"cursor\":\"1-2\",\"event\":\"cleared\",\"data\":\\{\"type\":\"cleared\"\\}\\}){0,4}\\]\\}"
                    .prop_map(String::into_bytes),
            ],
        ) {
            poll_answer::<Chat>(&[&[max][..], &body].concat());
        }

        #[test]
        fn websocket_messages_agree_with_their_json(text in message_text()) {
            ws_message::<Chat>(text.as_bytes());
        }

        #[test]
        fn websocket_frames_from_the_server_are_bounded(
            max in any::<u8>(),
            texts in prop::collection::vec(message_text(), 0..3),
            noise in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut data = vec![max];
            for text in texts {
                // An unmasked final text frame, as a server sends it.
                data.push(0x81);
                match text.len() {
                    len @ 0..=125 => data.push(len as u8),
                    len => {
                        data.push(126);
                        data.extend_from_slice(&(len as u16).to_be_bytes());
                    }
                }
                data.extend_from_slice(text.as_bytes());
            }
            data.extend_from_slice(&noise);
            ws_frames::<Chat>(&data);
        }
    }

    /// Regression (cargo-fuzz, `client_sse`): a block's lines were counted
    /// in raw bytes, but invalid UTF-8 is decoded to U+FFFD (3 bytes each),
    /// so an event could hold 3 times the limit.
    #[test]
    fn invalid_utf8_counts_as_decoded_against_the_limit() {
        let stream = [&b"data: "[..], &[0xff; 30], b"\n\n"].concat();
        let items = sse_items(41, &[Bytes::from(stream.clone())]);
        assert_eq!(items, [SseItem::TooLarge]);
        sse::<Chat>(&[&[10, 0, 0, 0][..], &stream].concat());
        let fits = [&b"data: "[..], &[0xff; 10], b"\n\n"].concat();
        let items = sse_items(41, &[Bytes::from(fits)]);
        let [SseItem::Event(event)] = items.as_slice() else {
            panic!("{items:?}");
        };
        assert_eq!(event.data, "\u{fffd}".repeat(10));
    }

    /// Regression (cargo-fuzz, `client_ws_message`): serde's reason quotes
    /// a string of the input whole, so a message refused for being a long
    /// string made an error as long as itself.
    #[test]
    fn a_refused_message_is_quoted_briefly() {
        let text = serde_json::to_string(&"x".repeat(100_000)).unwrap();
        let Err(error) = parse_envelope(&text) else {
            panic!("a string is not a message");
        };
        assert!(error.to_string().len() < 1024, "{error}");
        ws_message::<Chat>(text.as_bytes());
        let ready = Frame {
            cursor: None,
            event: wire::READY.to_owned(),
            data: text,
        };
        let Meaning::Invalid(error) = interpret::<Chat>(&ready) else {
            panic!("a string is not a ready payload");
        };
        assert!(error.to_string().len() < 1024, "{error}");
    }

    /// Found by cargo-fuzz (`client_ws_message`): serde reads the envelope
    /// from an array of its three fields too; the oracle knows it.
    #[test]
    fn an_envelope_may_be_an_array_of_its_fields() {
        let frame = parse_envelope(r#"["1-2","left",{"type":"left","name":"n"}]"#).unwrap();
        assert_eq!(frame.cursor.as_deref(), Some("1-2"));
        ws_message::<Chat>(br#"["u\\4\\t","\u00ffleft","name"]"#);
        assert!(parse_envelope(r#"["1-2","left"]"#).is_err());
        // Found by the long run of `client_sse`: a control payload likewise.
        let ready = Frame {
            cursor: None,
            event: wire::READY.to_owned(),
            data: r#"[ "8-0" ]"#.to_owned(),
        };
        assert!(matches!(interpret::<Chat>(&ready), Meaning::Ready(c) if c == Cursor::new(8, 0)));
        meaning::<Chat>(&ready);
    }

    /// The oracles are not vacuous: a parser's item over its limit fails one.
    #[test]
    fn the_stream_oracle_reads_its_layout() {
        assert_eq!(super::stream_input(b"abc"), None);
        let (max, cuts, stream) = super::stream_input(&[2, 0, 255, 128, b'x', b'y']).unwrap();
        assert_eq!((max, cuts, stream), (9, [0, 2, 1], &b"xy"[..]));
        let pieces = pieces(b"abcd", &[3, 1, 9]);
        assert_eq!(pieces, [&b"a"[..], b"bc", b"d", b""]);
        let oversized = std::panic::catch_unwind(|| {
            envelope_agrees(
                &Frame {
                    cursor: Some("1-1".to_owned()),
                    event: "e".to_owned(),
                    data: "1".to_owned(),
                },
                &serde_json::json!({"cursor": "1-2", "event": "e", "data": 1}),
                "",
            );
        });
        assert!(oversized.is_err(), "a different cursor is caught");
    }
}

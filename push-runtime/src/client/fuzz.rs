//! Property tests as fuzzers of the client's parsers of server output: the
//! SSE stream, the forever frame's document and the poll answer, fed
//! arbitrary bytes in arbitrary pieces. They must never panic and never
//! hold more than their limit. See `src/fuzz.rs` for the case count.

use super::frame::{Frame, interpret};
use super::iframe::{IframeItem, IframeParser};
use super::poll::parse_answer;
use super::sse::{SseItem, SseParser};
use bytes::Bytes;
use proptest::prelude::*;

const MAX: usize = 256;

/// Bytes that are often close to the real formats.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(
            b"id: 1-2\nevent: push.gap\ndata: {\"from\":\"1-0\",\"to\":\"1-2\",\"missed\":2}\n\n"
                .to_vec()
        ),
        Just(b"<script>m({\"cursor\":\"1-1\",\"event\":\"e\",\"data\":1})</script>\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b":\n\n".to_vec()),
        Just(b"retry: 99999999999999999999\n".to_vec()),
        Just(b"<script>m(".to_vec()),
        Just(b"</script>".to_vec()),
        Just(b"\xef\xbb\xbf".to_vec()),
        prop::collection::vec(any::<u8>(), 0..300),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// `bytes` cut at the given points.
fn pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain([bytes.len()]) {
        out.push(Bytes::copy_from_slice(
            bytes.get(start..point).unwrap_or_default(),
        ));
        start = point;
    }
    out
}

proptest! {
    #[test]
    fn sse_parser_never_panics_and_stays_bounded(
        bytes in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut parser = SseParser::new(MAX);
        for chunk in pieces(&bytes, &cuts) {
            parser.push(chunk);
            while let Some(item) = parser.next_item() {
                if let SseItem::Event(event) = item {
                    prop_assert!(event.data.len() <= MAX && event.event.len() <= MAX);
                    let frame = Frame { cursor: event.id, event: event.event, data: event.data };
                    let _ = interpret::<super::tests::Chat>(&frame);
                }
            }
        }
    }

    #[test]
    fn iframe_parser_never_panics_and_stays_bounded(
        bytes in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut parser = IframeParser::new(MAX);
        for chunk in pieces(&bytes, &cuts) {
            parser.push(chunk);
            while let Some(item) = parser.next_item() {
                if let IframeItem::Item(json) = item {
                    prop_assert!(json.len() <= MAX);
                }
            }
        }
    }

    #[test]
    fn poll_answers_parse_or_fail_without_panics(
        body in prop_oneof![
            stream_bytes(),
            "\\{\"cursor\":\"[0-9-]{0,8}\",\"more\":(true|false|1),\"events\":\\[(\\{\\}|1|\"x\"|,){0,4}\\]\\}"
                .prop_map(String::into_bytes),
        ],
    ) {
        let _ = parse_answer(&body, 1024);
    }
}

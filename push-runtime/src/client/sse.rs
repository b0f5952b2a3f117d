//! The SSE transport: a bounded `text/event-stream` parser and the connection
//! that feeds it.
//!
//! Why not `eventsource-stream` (0.2): it buffers a line without any size
//! limit (a server that never sends a line break grows the client's memory
//! without bound), it keeps invalid UTF-8 in its decode buffer forever (the
//! stream silently stalls while the buffer grows), and it re-copies its
//! buffer on every line. This parser works on bytes, bounds both a line and
//! an event block, skips an oversized block instead of failing, and decodes
//! text lossily as the SSE specification says.

use super::config::ClientConfig;
use super::error::ClientError;
use super::frame::{Frame, Read};
use super::http;
use bytes::Bytes;
use std::time::Duration;
use url::Url;

/// One dispatched SSE event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The last event id (persists across events, as the spec says).
    pub(crate) id: Option<String>,
    /// The event type (`message` when the block had no `event:` line).
    pub(crate) event: String,
    /// The data lines joined with `\n`.
    pub(crate) data: String,
}

/// What the parser yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SseItem {
    /// A complete event block.
    Event(SseEvent),
    /// A `retry:` field: the server's suggested reconnection delay.
    Retry(Duration),
    /// A line or an event block exceeded the limit; the block is skipped.
    TooLarge,
}

/// A line, as the splitter found it.
enum Line<'a> {
    Text(&'a [u8]),
    TooLong,
}

/// Splits bytes into lines ending in CRLF, LF or CR, across chunk boundaries,
/// keeping at most `max` bytes of a partial line.
#[derive(Debug)]
struct LineSplitter {
    partial: Vec<u8>,
    /// `partial` held the previous line, to be cleared on the next call.
    returned_partial: bool,
    /// The previous line ended with CR: a LF starting the next chunk belongs to it.
    after_cr: bool,
    /// The current line already exceeded `max`; its bytes are being dropped.
    overflow: bool,
    max: usize,
}

impl LineSplitter {
    fn next_line<'a>(&'a mut self, chunk: &'a [u8], offset: &mut usize) -> Option<Line<'a>> {
        if self.returned_partial {
            self.partial.clear();
            self.returned_partial = false;
        }
        if self.after_cr && *offset < chunk.len() {
            self.after_cr = false;
            if chunk[*offset] == b'\n' {
                *offset += 1;
            }
        }
        let rest = chunk.get(*offset..).unwrap_or_default();
        let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
            *offset = chunk.len();
            if self.overflow || self.partial.len() + rest.len() > self.max {
                self.overflow = true;
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(rest);
            }
            return None;
        };
        *offset += end + 1;
        self.after_cr = rest[end] == b'\r';
        let segment = &rest[..end];
        if std::mem::take(&mut self.overflow) || self.partial.len() + segment.len() > self.max {
            self.partial.clear();
            return Some(Line::TooLong);
        }
        if self.partial.is_empty() {
            return Some(Line::Text(segment));
        }
        self.partial.extend_from_slice(segment);
        self.returned_partial = true;
        Some(Line::Text(&self.partial))
    }
}

/// The event block being assembled.
#[derive(Debug, Default)]
struct Block {
    event: String,
    data: String,
    has_data: bool,
    size: usize,
    /// The block went over the limit and is dropped up to its blank line.
    skipping: bool,
}

/// An incremental, bounded `text/event-stream` parser.
///
/// Feed it chunks with [`SseParser::push`] and drain items with
/// [`SseParser::next_item`] until it returns `None`. It holds at most one
/// chunk, one partial line and one block, each bounded by the limit, and it
/// never fails: garbage is either ignored (unknown fields) or skipped as
/// [`SseItem::TooLarge`].
#[derive(Debug)]
pub(crate) struct SseParser {
    chunk: Bytes,
    offset: usize,
    lines: LineSplitter,
    block: Block,
    last_id: Option<String>,
    at_start: bool,
    max: usize,
}

impl SseParser {
    /// A parser accepting lines and blocks of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            chunk: Bytes::new(),
            offset: 0,
            lines: LineSplitter {
                partial: Vec::new(),
                returned_partial: false,
                after_cr: false,
                overflow: false,
                max,
            },
            block: Block::default(),
            last_id: None,
            at_start: true,
            max,
        }
    }

    /// Adds the next chunk of the body. Call it when `next_item` returned
    /// `None`; any unread rest of the previous chunk is kept.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        let rest = self.chunk.slice(self.offset.min(self.chunk.len())..);
        self.chunk = if rest.is_empty() {
            chunk
        } else {
            [rest.as_ref(), chunk.as_ref()].concat().into()
        };
        self.offset = 0;
    }

    /// The next item in the bytes pushed so far.
    pub(crate) fn next_item(&mut self) -> Option<SseItem> {
        loop {
            let line = self.lines.next_line(&self.chunk, &mut self.offset)?;
            let mut text = match line {
                Line::TooLong => {
                    if let Some(item) = self.overflow() {
                        return Some(item);
                    }
                    continue;
                }
                Line::Text(text) => text,
            };
            if std::mem::take(&mut self.at_start) {
                text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
            }
            if text.is_empty() {
                if let Some(event) = Self::dispatch(&mut self.block, &self.last_id) {
                    return Some(SseItem::Event(event));
                }
                continue;
            }
            if self.block.skipping || text.first() == Some(&b':') {
                continue;
            }
            // Counted as decoded: each invalid byte may become a 3-byte U+FFFD.
            self.block.size += text.len() + lossy_growth(text);
            if self.block.size > self.max {
                if let Some(item) = self.overflow() {
                    return Some(item);
                }
                continue;
            }
            let (name, value) = match text.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &text[colon + 1..];
                    (&text[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (text, &[][..]),
            };
            match name {
                b"event" => self.block.event = String::from_utf8_lossy(value).into_owned(),
                b"data" => {
                    self.block.data.push_str(&String::from_utf8_lossy(value));
                    self.block.data.push('\n');
                    self.block.has_data = true;
                }
                b"id" if !value.contains(&0) => {
                    self.last_id =
                        (!value.is_empty()).then(|| String::from_utf8_lossy(value).into_owned());
                }
                b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                    if let Some(millis) = std::str::from_utf8(value)
                        .ok()
                        .and_then(|digits| digits.parse::<u64>().ok())
                    {
                        return Some(SseItem::Retry(Duration::from_millis(millis)));
                    }
                }
                _ => {}
            }
        }
    }

    /// Starts skipping the current block; reports it once.
    fn overflow(&mut self) -> Option<SseItem> {
        if self.block.skipping {
            return None;
        }
        self.block = Block {
            skipping: true,
            ..Block::default()
        };
        Some(SseItem::TooLarge)
    }

    fn dispatch(block: &mut Block, last_id: &Option<String>) -> Option<SseEvent> {
        let mut block = std::mem::take(block);
        if block.skipping || !block.has_data {
            return None;
        }
        block.data.pop();
        if block.event.is_empty() {
            block.event.push_str("message");
        }
        Some(SseEvent {
            id: last_id.clone(),
            event: block.event,
            data: block.data,
        })
    }
}

/// How many bytes decoding `text` lossily adds (0 for valid UTF-8).
fn lossy_growth(text: &[u8]) -> usize {
    match std::str::from_utf8(text) {
        Ok(_) => 0,
        Err(_) => String::from_utf8_lossy(text)
            .len()
            .saturating_sub(text.len()),
    }
}

/// An open SSE response being read.
pub(crate) struct SseConnection {
    body: http::BodyReader,
    parser: SseParser,
    max: usize,
}

impl std::fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseConnection").finish_non_exhaustive()
    }
}

impl SseConnection {
    /// Sends the request with `headers` and checks the response head.
    pub(crate) async fn open(
        client: &http::HttpClient,
        url: Url,
        headers: &axum::http::HeaderMap,
        config: &ClientConfig,
    ) -> Result<Self, ClientError> {
        let body = http::BodyReader::open(
            client,
            url,
            headers,
            config,
            "text/event-stream",
            "the server ended the event stream",
        )
        .await?;
        Ok(Self {
            body,
            parser: SseParser::new(config.max_item_size),
            max: config.max_item_size,
        })
    }

    /// The next frame, or why the connection is over.
    pub(crate) async fn next(&mut self) -> Result<Read, ClientError> {
        loop {
            while let Some(item) = self.parser.next_item() {
                match item {
                    SseItem::Event(event) => {
                        return Ok(Read::Frame(Frame {
                            cursor: event.id,
                            event: event.event,
                            data: event.data,
                        }));
                    }
                    SseItem::TooLarge => {
                        return Ok(Read::Skipped(ClientError::TooLarge {
                            limit: self.max,
                            cursor: None,
                        }));
                    }
                    SseItem::Retry(delay) => {
                        tracing::trace!(?delay, "ignoring the server's sse retry hint");
                    }
                }
            }
            let chunk = self.body.next_chunk().await?;
            self.parser.push(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, event: &str, data: &str) -> SseItem {
        SseItem::Event(SseEvent {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        })
    }

    /// Feeds `chunks` one at a time, draining after each.
    fn parse(max: usize, chunks: &[&[u8]]) -> Vec<SseItem> {
        let mut parser = SseParser::new(max);
        let mut items = Vec::new();
        for chunk in chunks {
            parser.push(Bytes::copy_from_slice(chunk));
            while let Some(item) = parser.next_item() {
                items.push(item);
            }
        }
        items
    }

    const SERVER_STREAM: &str = "retry: 2000\n\n\
        id: 7-0\nevent: push.ready\ndata: {\"cursor\":\"7-0\"}\n\n\
        id: 7-1\nevent: message\ndata: {\"type\":\"message\",\"text\":\"hi\"}\n\n\
        :\n\n";

    fn server_items() -> Vec<SseItem> {
        vec![
            SseItem::Retry(Duration::from_millis(2000)),
            event(Some("7-0"), "push.ready", r#"{"cursor":"7-0"}"#),
            event(Some("7-1"), "message", r#"{"type":"message","text":"hi"}"#),
        ]
    }

    #[test]
    fn parses_the_servers_stream() {
        assert_eq!(parse(1024, &[SERVER_STREAM.as_bytes()]), server_items());
    }

    #[test]
    fn any_fragmentation_gives_the_same_items() {
        let bytes = SERVER_STREAM.as_bytes();
        for size in 1..bytes.len() {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            assert_eq!(parse(1024, &chunks), server_items(), "chunks of {size}");
        }
    }

    #[test]
    fn crlf_and_cr_line_endings_even_split_between_chunks() {
        let crlf = SERVER_STREAM.replace('\n', "\r\n");
        let cr = SERVER_STREAM.replace('\n', "\r");
        for text in [crlf, cr] {
            let bytes = text.as_bytes();
            assert_eq!(parse(1024, &[bytes]), server_items());
            let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(parse(1024, &single_bytes), server_items());
            for split in 1..bytes.len() {
                let (a, b) = bytes.split_at(split);
                assert_eq!(parse(1024, &[a, b]), server_items(), "split at {split}");
            }
        }
    }

    #[test]
    fn a_lone_lf_after_a_split_crlf_is_a_blank_line() {
        let items = parse(1024, &[b"data: a\r", b"\n", b"\n"]);
        assert_eq!(items, vec![event(None, "message", "a")]);
        let items = parse(1024, &[b"data: a\r", b"\r", b"data: b\n\n"]);
        assert_eq!(
            items,
            vec![event(None, "message", "a"), event(None, "message", "b")]
        );
    }

    #[test]
    fn a_payload_on_several_data_lines_is_joined_with_lf() {
        // How the server writes a payload that holds raw line breaks.
        let block: &[u8] = b"id: 2-5\nevent: e\ndata: {\ndata:  \"a\":1,\ndata: \ndata: }\n\n";
        let expected = vec![event(Some("2-5"), "e", "{\n \"a\":1,\n\n}")];
        for size in 1..block.len() {
            let chunks: Vec<&[u8]> = block.chunks(size).collect();
            assert_eq!(parse(1024, &chunks), expected, "chunks of {size}");
        }
    }

    #[test]
    fn comments_and_heartbeats_are_silent() {
        assert_eq!(parse(1024, &[b":\n\n: keepalive\n\n:\r\n\r\n"]), vec![]);
        assert_eq!(
            parse(1024, &[b": hello\nid: 1-1\n: between\ndata: x\n\n"]),
            vec![event(Some("1-1"), "message", "x")]
        );
    }

    #[test]
    fn follows_the_spec_field_rules() {
        let items = parse(
            1024,
            &[b"\xef\xbb\xbfdata:a\ndata\ndata:  b\nunknown: z\nevent:e\n\nid\ndata: c\n\nevent: no-data\n\n"],
        );
        assert_eq!(
            items,
            vec![event(None, "e", "a\n\n b"), event(None, "message", "c")]
        );
    }

    #[test]
    fn the_last_id_persists_and_a_nul_id_is_ignored() {
        let items = parse(
            1024,
            &[b"id: 1-1\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\n"],
        );
        assert_eq!(
            items,
            vec![
                event(Some("1-1"), "message", "a"),
                event(Some("1-1"), "message", "b"),
                event(Some("1-1"), "message", "c"),
            ]
        );
    }

    #[test]
    fn bad_retry_values_are_ignored() {
        let items = parse(
            1024,
            &[b"retry: soon\nretry: -1\nretry: 99999999999999999999999\nretry: 5\n\n"],
        );
        assert_eq!(items, vec![SseItem::Retry(Duration::from_millis(5))]);
    }

    #[test]
    fn garbage_never_panics_and_valid_events_survive_it() {
        let garbage: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut chunks: Vec<&[u8]> = garbage.chunks(37).collect();
        chunks.push(b"\n\nid: 2-5\nevent: x\ndata: {}\n\n");
        let items = parse(100_000, &chunks);
        assert_eq!(items.last(), Some(&event(Some("2-5"), "x", "{}")));
        let invalid_utf8 = parse(1024, &[b"data: \xff\xfe\n\n"]);
        assert_eq!(
            invalid_utf8,
            vec![event(None, "message", "\u{fffd}\u{fffd}")]
        );
    }

    #[test]
    fn an_endless_line_is_bounded_and_skipped() {
        let mut parser = SseParser::new(64);
        for _ in 0..10_000 {
            parser.push(Bytes::from_static(&[b'a'; 100]));
            assert_eq!(parser.next_item(), None);
            assert!(parser.lines.partial.capacity() <= 128);
        }
        parser.push(Bytes::from_static(
            b"\ndata: rest of the block\n\ndata: ok\n\n",
        ));
        assert_eq!(parser.next_item(), Some(SseItem::TooLarge));
        assert_eq!(parser.next_item(), Some(event(None, "message", "ok")));
        assert_eq!(parser.next_item(), None);
    }

    #[test]
    fn an_oversized_block_of_short_lines_is_skipped() {
        let mut stream = b"id: 1-1\n".to_vec();
        for _ in 0..20 {
            stream.extend_from_slice(b"data: 0123456789\n");
        }
        stream.extend_from_slice(b"\nid: 1-2\ndata: small\n\n");
        let items = parse(64, &[&stream]);
        assert_eq!(
            items,
            vec![SseItem::TooLarge, event(Some("1-2"), "message", "small")]
        );
    }
}

//! The forever-frame transport: an incremental, bounded reader of the HTML
//! document the server streams, and the connection that feeds it.
//!
//! Items are the JSON between `<script>m(` and `)</script>`. The server
//! escapes every `<` inside an item as `\u003c`, so the first `<` after an
//! item starts its closing tag: no JavaScript or HTML parsing is needed.
//! Everything else (the prelude and its script, padding, heartbeat comments)
//! is skipped.

use super::config::ClientConfig;
use super::error::{ClientError, quote};
use super::frame::{Read, parse_envelope};
use super::http;
use bytes::Bytes;
use url::Url;

/// What the reader yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IframeItem {
    /// The JSON text of one item, as the server wrote it (escapes included).
    Item(String),
    /// An item over the limit; it was skipped.
    TooLarge,
    /// A `<script>m(` element that is not an item (no `)` before its end, or
    /// not UTF-8); it was skipped.
    Malformed(String),
}

/// The opening of an item element.
const ITEM_OPEN: &[u8] = b"<script>m(";
/// The opening of an HTML comment.
const COMMENT_OPEN: &[u8] = b"<!--";
/// The end of any script element.
const SCRIPT_CLOSE: &[u8] = b"</script>";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between elements.
    Text,
    /// After a `<`: the bytes so far are in `tag`.
    Tag,
    /// Inside an item, up to the next `<`.
    Item,
    /// Inside a comment; how many `-` were just seen (at most 2).
    Comment { dashes: u8 },
    /// Inside a script that is not an item; how much of `</script>` was just seen.
    Script { matched: usize },
}

/// An incremental, bounded reader of the forever frame.
///
/// Feed it chunks with [`IframeParser::push`] and drain items with
/// [`IframeParser::next_item`] until it returns `None`. It holds at most one
/// chunk, a tag of a few bytes and one item of at most `max` bytes, and it
/// never fails.
#[derive(Debug)]
pub(crate) struct IframeParser {
    chunk: Bytes,
    offset: usize,
    state: State,
    tag: Vec<u8>,
    item: Vec<u8>,
    /// The current item went over `max`; its bytes are being dropped.
    overflow: bool,
    max: usize,
}

impl IframeParser {
    /// A reader accepting items of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            chunk: Bytes::new(),
            offset: 0,
            state: State::Text,
            tag: Vec::with_capacity(ITEM_OPEN.len()),
            item: Vec::new(),
            overflow: false,
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
    pub(crate) fn next_item(&mut self) -> Option<IframeItem> {
        while self.offset < self.chunk.len() {
            let rest = &self.chunk[self.offset..];
            match self.state {
                State::Text => match rest.iter().position(|&b| b == b'<') {
                    Some(at) => {
                        self.offset += at + 1;
                        self.open_tag();
                    }
                    None => self.offset = self.chunk.len(),
                },
                State::Item => {
                    let end = rest.iter().position(|&b| b == b'<');
                    let body = &rest[..end.unwrap_or(rest.len())];
                    if !self.overflow && self.item.len() + body.len() > self.max {
                        self.overflow = true;
                        self.item = Vec::new();
                    }
                    if !self.overflow {
                        self.item.extend_from_slice(body);
                    }
                    let Some(end) = end else {
                        self.offset = self.chunk.len();
                        continue;
                    };
                    // The `<` starts the closing tag, read as any other tag.
                    self.offset += end + 1;
                    self.open_tag();
                    return Some(self.finish_item());
                }
                State::Tag => {
                    let byte = rest[0];
                    self.offset += 1;
                    self.tag_byte(byte);
                }
                State::Comment { dashes } => {
                    let byte = rest[0];
                    self.offset += 1;
                    self.state = match byte {
                        b'>' if dashes >= 2 => State::Text,
                        b'-' => State::Comment {
                            dashes: (dashes + 1).min(2),
                        },
                        _ => State::Comment { dashes: 0 },
                    };
                }
                State::Script { matched } => {
                    let byte = rest[0].to_ascii_lowercase();
                    self.offset += 1;
                    self.state = if byte == SCRIPT_CLOSE[matched] {
                        if matched + 1 == SCRIPT_CLOSE.len() {
                            State::Text
                        } else {
                            State::Script {
                                matched: matched + 1,
                            }
                        }
                    } else {
                        State::Script {
                            matched: usize::from(byte == b'<'),
                        }
                    };
                }
            }
        }
        None
    }

    /// A `<` was just read.
    fn open_tag(&mut self) {
        self.tag.clear();
        self.tag.push(b'<');
        self.state = State::Tag;
    }

    /// One more byte of a tag: decides what the element is as soon as it can.
    fn tag_byte(&mut self, byte: u8) {
        self.tag.push(byte);
        if self.tag == ITEM_OPEN {
            self.state = State::Item;
            self.item.clear();
            self.overflow = false;
        } else if self.tag == COMMENT_OPEN {
            self.state = State::Comment { dashes: 0 };
        } else if ITEM_OPEN.starts_with(&self.tag) || COMMENT_OPEN.starts_with(&self.tag) {
            // Still undecided.
        } else if self.tag.len() > b"<script".len() && self.tag.starts_with(b"<script") {
            // Another script (the prelude's): skip its text whole.
            self.state = State::Script {
                matched: usize::from(byte == b'<'),
            };
        } else if byte == b'<' {
            self.open_tag();
        } else {
            self.state = State::Text;
        }
    }

    /// The item just closed.
    fn finish_item(&mut self) -> IframeItem {
        if std::mem::take(&mut self.overflow) {
            return IframeItem::TooLarge;
        }
        let item = std::mem::take(&mut self.item);
        let Some(json) = item.trim_ascii_end().strip_suffix(b")") else {
            return IframeItem::Malformed(format!(
                "forever frame script `m({}` does not end with `)`",
                quote(&String::from_utf8_lossy(&item), 64)
            ));
        };
        match std::str::from_utf8(json) {
            Ok(json) => IframeItem::Item(json.to_owned()),
            Err(error) => IframeItem::Malformed(format!("forever frame item: {error}")),
        }
    }
}

/// An open forever frame being read.
pub(crate) struct IframeConnection {
    body: http::BodyReader,
    parser: IframeParser,
    max: usize,
}

impl std::fmt::Debug for IframeConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IframeConnection").finish_non_exhaustive()
    }
}

impl IframeConnection {
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
            "text/html",
            "the forever frame ended without push.end",
        )
        .await?;
        Ok(Self {
            body,
            parser: IframeParser::new(config.max_item_size),
            max: config.max_item_size,
        })
    }

    /// The next frame, or why the connection is over.
    pub(crate) async fn next(&mut self) -> Result<Read, ClientError> {
        loop {
            if let Some(item) = self.parser.next_item() {
                return Ok(match item {
                    IframeItem::Item(json) => match parse_envelope(&json) {
                        Ok(frame) => Read::Frame(frame),
                        Err(error) => Read::Skipped(error),
                    },
                    IframeItem::TooLarge => Read::Skipped(ClientError::TooLarge {
                        limit: self.max,
                        cursor: None,
                    }),
                    IframeItem::Malformed(reason) => {
                        Read::Skipped(ClientError::Malformed { reason })
                    }
                });
            }
            let chunk = self.body.next_chunk().await?;
            self.parser.push(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one at a time, draining after each.
    fn parse(max: usize, chunks: &[&[u8]]) -> Vec<IframeItem> {
        let mut parser = IframeParser::new(max);
        let mut items = Vec::new();
        for chunk in chunks {
            parser.push(Bytes::copy_from_slice(chunk));
            while let Some(item) = parser.next_item() {
                items.push(item);
            }
        }
        items
    }

    fn item(json: &str) -> IframeItem {
        IframeItem::Item(json.to_owned())
    }

    /// What the server writes for an item: the WebSocket message object with
    /// the characters that could end the script or start a comment escaped.
    fn escape(json: &str) -> String {
        let mut escaped = String::with_capacity(json.len());
        for c in json.chars() {
            match c {
                '<' => escaped.push_str("\\u003c"),
                '>' => escaped.push_str("\\u003e"),
                '&' => escaped.push_str("\\u0026"),
                '\u{2028}' => escaped.push_str("\\u2028"),
                '\u{2029}' => escaped.push_str("\\u2029"),
                c => escaped.push(c),
            }
        }
        escaped
    }

    const READY: &str = r#"{"cursor":"7-0","event":"push.ready","data":{"cursor":"7-0"}}"#;
    const EVENT: &str = r#"{"cursor":"7-1","event":"message","data":{"type":"message","text":"\u003c/script\u003e"}}"#;
    const END: &str = r#"{"cursor":"7-1","event":"push.end","data":{"cursor":"7-1"}}"#;

    fn document() -> String {
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>push</title></head><body>\n\
             <!--{pad}-->\n\
             <script>\"use strict\";var t=location.origin;function m(x){{parent.postMessage(x,t)}}</script>\n\
             <script>m({READY})</script>\n\
             <!---->\n\
             <script>m({EVENT})</script>\n\
             <!---->\n<!---->\n\
             <script>m({END})</script></body></html>",
            pad = " ".repeat(1024)
        )
    }

    fn document_items() -> Vec<IframeItem> {
        vec![item(READY), item(EVENT), item(END)]
    }

    #[test]
    fn reads_the_items_of_the_servers_document() {
        assert_eq!(parse(1024, &[document().as_bytes()]), document_items());
    }

    #[test]
    fn any_fragmentation_gives_the_same_items() {
        let document = document();
        let bytes = document.as_bytes();
        for size in 1..64 {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            assert_eq!(parse(1024, &chunks), document_items(), "chunks of {size}");
        }
        // Two chunks, split at every byte: inside `<script>m(`, the item,
        // `)</script>`, comments and the prelude's script.
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(parse(1024, &[a, b]), document_items(), "split at {split}");
        }
    }

    #[test]
    fn escaped_items_round_trip_to_the_original_data() {
        let data = serde_json::json!({
            "type": "message",
            "text": "</script><script>alert(1)</script><!-- & --> \u{2028}\u{2029} é ✓ \"q\"",
        });
        let message = serde_json::json!({"cursor": "3-9", "event": "message", "data": data});
        let escaped = escape(&message.to_string());
        assert!(!escaped.contains('<') && !escaped.contains('>') && !escaped.contains('&'));
        let page = format!("<script>m({escaped})</script>\n");
        let bytes = page.as_bytes();
        for size in [1, 2, 3, 7, bytes.len()] {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            let items = parse(1024, &chunks);
            let [IframeItem::Item(json)] = items.as_slice() else {
                panic!("chunks of {size}: {items:?}");
            };
            let frame = parse_envelope(json).expect("an envelope");
            assert_eq!(
                (frame.cursor.as_deref(), frame.event.as_str()),
                (Some("3-9"), "message")
            );
            let decoded: serde_json::Value = serde_json::from_str(&frame.data).expect("data");
            assert_eq!(decoded, data);
        }
    }

    #[test]
    fn heartbeats_prelude_and_other_markup_are_silent() {
        let markup = "<!----><!-- a <script>m(1)</script> in a comment -->\n\
            <script>var m = \"<script>m(2)</script>\";</script>\
            <p>text <b>bold</b> < > <<script>m(3)</script> <SCRIPT>m(4)</script>";
        assert_eq!(parse(1024, &[markup.as_bytes()]), vec![item("3")]);
        assert_eq!(parse(1024, &[b"<!---->\n<!---->\n<!---->\n"]), vec![]);
    }

    #[test]
    fn garbage_never_panics_and_items_after_it_survive() {
        let garbage: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut chunks: Vec<&[u8]> = garbage.chunks(37).collect();
        // Whatever state the garbage left, a `>` and a closing tag end it.
        chunks.push(b"--></script>");
        chunks.push(b"<script>m({\"cursor\":\"1-1\",\"event\":\"x\",\"data\":{}})</script>");
        let items = parse(100_000, &chunks);
        assert_eq!(
            items.last(),
            Some(&item(r#"{"cursor":"1-1","event":"x","data":{}}"#))
        );
    }

    #[test]
    fn a_script_that_is_not_a_call_is_malformed() {
        let items = parse(
            1024,
            &[b"<script>m({\"a\":1};</script><script>m(\xff)</script><script>m(2)</script>"],
        );
        assert!(matches!(items[0], IframeItem::Malformed(_)), "{items:?}");
        assert!(matches!(items[1], IframeItem::Malformed(_)), "{items:?}");
        assert_eq!(items[2], item("2"));
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn an_oversized_item_is_bounded_and_skipped() {
        let mut parser = IframeParser::new(64);
        parser.push(Bytes::from_static(b"<script>m("));
        assert_eq!(parser.next_item(), None);
        for _ in 0..10_000 {
            parser.push(Bytes::from_static(&[b'a'; 100]));
            assert_eq!(parser.next_item(), None);
            assert!(parser.item.capacity() <= 128);
        }
        parser.push(Bytes::from_static(b")</script>\n<script>m(ok)</script>"));
        assert_eq!(parser.next_item(), Some(IframeItem::TooLarge));
        assert_eq!(parser.next_item(), Some(item("ok")));
        assert_eq!(parser.next_item(), None);
        assert!(parser.tag.capacity() <= ITEM_OPEN.len().max(16));
    }
}

//! Shared by the integration tests: a server on 127.0.0.1:0 and raw wire
//! readers that turn each transport's bytes into the same [`Frame`]s, so one
//! set of checks runs against every transport.
//!
//! Streams (SSE, WebSocket, forever frame) are one HTTP response each. For the
//! polls, a [`Conn`] is the *client state* of a polling loop: the cursor it
//! follows and the items of the last answer not yet consumed. Opening one
//! makes the first request (with `timeout=0` for the long poll, so it answers
//! at once); each later request asks from the cursor of the previous answer
//! (`after=`, plus `If-None-Match` for the short poll). Dropping it is "stop
//! polling". Polls have no `push.ready`: the support synthesizes one as the
//! first item, whose cursor is the position the client gave (`after` or
//! `Last-Event-ID`) or, without one, the cursor of the first answer, so that
//! [`Conn::ready`] means the same on every transport. An empty answer (a
//! `304`, or a long poll that timed out) is reported as [`Item::Heartbeat`].
#![allow(dead_code)]

pub mod channel;
pub mod redis_setup;

use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Generous bound on any single wait, so a broken server fails a test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A server running `app` on a free loopback port; stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn start(app: axum::Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self { addr, task }
    }

    /// A handle to a server already running at `addr`, started by the test
    /// itself (e.g. with graceful shutdown); dropping it stops nothing.
    pub fn attach(addr: SocketAddr) -> Self {
        Self {
            addr,
            task: tokio::spawn(async {}),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One item of a stream, whatever the transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub cursor: String,
    pub event: String,
    pub data: serde_json::Value,
}

impl Frame {
    pub fn seq(&self) -> u64 {
        self.cursor
            .rsplit_once('-')
            .expect("cursor has a dash")
            .1
            .parse()
            .expect("seq")
    }
}

/// The transports under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse,
    WebSocket,
    ShortPoll,
    LongPoll,
    Iframe,
}

pub const TRANSPORTS: [Transport; 5] = [
    Transport::Sse,
    Transport::WebSocket,
    Transport::ShortPoll,
    Transport::LongPoll,
    Transport::Iframe,
];

impl Transport {
    /// The last segment of the transport's route.
    pub fn route_name(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::WebSocket => "ws",
            Transport::ShortPoll => "poll",
            Transport::LongPoll => "long-poll",
            Transport::Iframe => "iframe",
        }
    }
}

/// How long a long poll of the support loop is held, unless the path says `timeout=`.
pub const LONG_POLL_SECONDS: u64 = 5;
/// The pause of the short-poll loop after an empty answer.
pub const SHORT_POLL_PAUSE: Duration = Duration::from_millis(10);

/// What a stream yields besides frames.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Frame(Frame),
    /// An SSE comment line (heartbeat) or a WebSocket ping.
    Heartbeat,
    /// The SSE `retry:` field.
    Retry(u64),
    /// The WebSocket close frame: code and reason.
    Closed(u16, String),
}

type ByteStream =
    Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + Unpin>;

/// The state of a polling client (see the module docs).
pub struct PollConn {
    client: reqwest::Client,
    /// Server URL and path, without the query.
    url: String,
    /// The query parameters of every request but `after` and `timeout`.
    params: Vec<(String, String)>,
    long: bool,
    timeout: u64,
    cursor: String,
    etag: Option<String>,
    pending: VecDeque<Item>,
    last_empty: bool,
}

/// What a forever frame's body has shown so far.
pub struct IframeConn {
    body: ByteStream,
    buf: String,
    /// Everything received, for checks on the raw HTML.
    pub raw: String,
    /// The prelude, once received.
    pub prelude: Option<String>,
    ended: bool,
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket test client that, like a real one, reads all the time (so the
/// server's pings are answered however long a test leaves it unread) and
/// queues what it read for the test.
pub struct WsConn {
    sink: futures_util::stream::SplitSink<WsStream, Message>,
    incoming: tokio::sync::mpsc::Receiver<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    reader: JoinHandle<()>,
}

impl WsConn {
    fn new(ws: WsStream) -> Self {
        let (sink, mut stream) = ws.split();
        let (queue, incoming) = tokio::sync::mpsc::channel(65_536);
        let reader = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                if queue.send(message).await.is_err() {
                    break;
                }
            }
        });
        Self {
            sink,
            incoming,
            reader,
        }
    }
}

impl Drop for WsConn {
    fn drop(&mut self) {
        // Dropping a test connection must close it, as dropping a socket does.
        self.reader.abort();
    }
}

/// A raw connection to one subscription route.
pub enum Conn {
    Sse {
        body: Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + Unpin>,
        buf: String,
    },
    Ws(Box<WsConn>),
    Poll(Box<PollConn>),
    Iframe(Box<IframeConn>),
}

/// Opens `{path}` (e.g. `/t/room/sse?after=…`) on `server`; panics unless it is accepted.
pub async fn open(server: &Server, transport: Transport, path_and_query: &str) -> Conn {
    open_with(server, transport, path_and_query, None).await
}

/// As [`open`], with an SSE `Last-Event-ID` header.
pub async fn open_with(
    server: &Server,
    transport: Transport,
    path_and_query: &str,
    last_event_id: Option<&str>,
) -> Conn {
    match transport {
        Transport::Sse => {
            let mut request = reqwest::Client::new().get(server.url(path_and_query));
            if let Some(id) = last_event_id {
                request = request.header("last-event-id", id);
            }
            let response = request.send().await.expect("sse request");
            assert_eq!(
                response.status(),
                200,
                "sse {path_and_query}: {:?}",
                response.text().await
            );
            Conn::Sse {
                body: Box::new(response.bytes_stream()),
                buf: String::new(),
            }
        }
        Transport::WebSocket => {
            let (ws, _) = tokio_tungstenite::connect_async(server.ws_url(path_and_query))
                .await
                .unwrap_or_else(|e| panic!("ws {path_and_query}: {e}"));
            Conn::Ws(Box::new(WsConn::new(ws)))
        }
        Transport::ShortPoll | Transport::LongPoll => {
            open_poll(server, transport, path_and_query, last_event_id).await
        }
        Transport::Iframe => {
            let response = reqwest::get(server.url(path_and_query))
                .await
                .expect("iframe request");
            assert_eq!(
                response.status(),
                200,
                "iframe {path_and_query}: {:?}",
                response.text().await
            );
            Conn::Iframe(Box::new(IframeConn {
                body: Box::new(response.bytes_stream()),
                buf: String::new(),
                raw: String::new(),
                prelude: None,
                ended: false,
            }))
        }
    }
}

fn split_query(path_and_query: &str) -> (&str, Vec<(String, String)>) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let params = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (path, params)
}

async fn open_poll(
    server: &Server,
    transport: Transport,
    path_and_query: &str,
    last_event_id: Option<&str>,
) -> Conn {
    let (path, mut params) = split_query(path_and_query);
    let take = |params: &mut Vec<(String, String)>, key: &str| {
        let at = params.iter().position(|(k, _)| k == key)?;
        Some(params.remove(at).1)
    };
    let after = take(&mut params, "after");
    let timeout = take(&mut params, "timeout")
        .map(|t| t.parse().expect("timeout in the test path is a number"))
        .unwrap_or(LONG_POLL_SECONDS);
    let long = transport == Transport::LongPoll;
    let mut conn = PollConn {
        client: reqwest::Client::new(),
        url: server.url(path),
        params,
        long,
        timeout,
        cursor: String::new(),
        etag: None,
        pending: VecDeque::new(),
        last_empty: false,
    };
    let mut extra = Vec::new();
    if let Some(after) = &after {
        extra.push(("after", after.clone()));
    }
    if long {
        extra.push(("timeout", "0".to_owned()));
    }
    let mut request = conn.client.get(conn.request_url(&extra));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = tokio::time::timeout(PATIENCE, request.send())
        .await
        .expect("first poll answered in time")
        .expect("poll request");
    assert_eq!(
        response.status(),
        200,
        "{transport:?} {path_and_query}: {:?}",
        response.text().await
    );
    let answer = conn.take_answer(response).await.expect("poll answer");
    let ready = last_event_id
        .map(str::to_owned)
        .or(after)
        .unwrap_or_else(|| answer.clone());
    conn.pending.push_front(Item::Frame(Frame {
        cursor: ready.clone(),
        event: "push.ready".into(),
        data: serde_json::json!({ "cursor": ready }),
    }));
    Conn::Poll(Box::new(conn))
}

/// A poll answer: `{"cursor":…,"more":…,"events":[…]}`, items kept raw.
#[derive(serde::Deserialize)]
pub struct PollAnswer<'a> {
    pub cursor: String,
    pub more: bool,
    #[serde(borrow)]
    pub events: Vec<&'a serde_json::value::RawValue>,
}

impl PollConn {
    /// The URL with the base parameters and `extra` (values used as they are:
    /// the tests only use URL-safe ones).
    fn request_url(&self, extra: &[(&str, String)]) -> String {
        let pairs: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .chain(extra.iter().map(|(k, v)| (*k, v)))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{}?{}", self.url, pairs.join("&"))
    }

    /// Reads an answer into `pending` and returns its cursor; `None` if the
    /// body cannot be read.
    async fn take_answer(&mut self, response: reqwest::Response) -> Option<String> {
        if let Some(etag) = response.headers().get("etag") {
            self.etag = Some(etag.to_str().expect("etag is ASCII").to_owned());
        }
        if response.status() == 304 {
            self.last_empty = true;
            return Some(self.cursor.clone());
        }
        assert_eq!(response.status(), 200, "poll answer status");
        let text = response.text().await.ok()?;
        let answer: PollAnswer<'_> = serde_json::from_str(&text).expect("poll answer is JSON");
        // `"<cursor>"`, with `;gap=<cursor>` and `;more` where they apply.
        let etag = self.etag.as_deref().expect("an answer has an etag");
        let tag = etag.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
        let (position, qualifiers) = tag
            .map(|t| t.split_once(';').unwrap_or((t, "")))
            .unwrap_or_else(|| panic!("etag {etag:?} is quoted"));
        assert_eq!(position, answer.cursor, "the etag starts with the cursor");
        assert_eq!(qualifiers.ends_with("more"), answer.more, "{etag}");
        self.last_empty = answer.events.is_empty();
        for item in &answer.events {
            self.pending.push_back(Item::Frame(parse_item(item.get())));
        }
        self.cursor = answer.cursor.clone();
        Some(answer.cursor)
    }

    async fn next_item(&mut self) -> Option<Item> {
        if let Some(item) = self.pending.pop_front() {
            return Some(item);
        }
        if self.last_empty && !self.long {
            tokio::time::sleep(SHORT_POLL_PAUSE).await;
        }
        let mut extra = vec![("after", self.cursor.clone())];
        if self.long {
            extra.push(("timeout", self.timeout.to_string()));
        }
        let mut request = self.client.get(self.request_url(&extra));
        if let (false, Some(etag)) = (self.long, &self.etag) {
            request = request.header("if-none-match", etag);
        }
        let response = request.send().await.ok()?;
        self.take_answer(response).await?;
        Some(self.pending.pop_front().unwrap_or(Item::Heartbeat))
    }
}

/// One `{"cursor":…,"event":…,"data":…}` object, checking its exact shape.
pub fn parse_item(text: &str) -> Frame {
    let mut value: serde_json::Value = serde_json::from_str(text).expect("item is JSON");
    assert_eq!(value.as_object().expect("object").len(), 3, "{text}");
    let at = |key: &str| text.find(key).unwrap_or_else(|| panic!("{key} in {text}"));
    assert!(text.starts_with("{\"cursor\":"), "{text}");
    assert!(
        at(",\"event\":") < at(",\"data\":"),
        "keys in order: {text}"
    );
    Frame {
        cursor: value["cursor"].as_str().expect("cursor").to_owned(),
        event: value["event"].as_str().expect("event").to_owned(),
        data: value["data"].take(),
    }
}

/// The end of the forever frame's prelude.
pub const IFRAME_PRELUDE_END: &str = "function m(x){parent.postMessage(x,t)}</script>\n";

/// One item chunk's JSON, checking that nothing in it could end the script.
pub fn iframe_item(line: &str) -> &str {
    let json = line
        .strip_prefix("<script>m(")
        .and_then(|l| l.strip_suffix(")</script>"))
        .unwrap_or_else(|| panic!("not an item chunk: {line:?}"));
    for bad in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
        assert!(!json.contains(bad), "raw {bad:?} in an item: {line:?}");
    }
    json
}

impl IframeConn {
    fn take_line(&mut self) -> Option<String> {
        if self.prelude.is_none() {
            let end = self.buf.find(IFRAME_PRELUDE_END)? + IFRAME_PRELUDE_END.len();
            self.prelude = Some(self.buf.drain(..end).collect());
        }
        let end = self.buf.find('\n')?;
        let line: String = self.buf.drain(..=end).collect();
        Some(line.trim_end_matches('\n').to_owned())
    }

    fn parse_line(&mut self, line: &str) -> Item {
        if line == "<!---->" {
            return Item::Heartbeat;
        }
        let line = match line.strip_suffix("</body></html>") {
            Some(last) => {
                self.ended = true;
                last
            }
            None => line,
        };
        Item::Frame(parse_item(iframe_item(line)))
    }

    async fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(line) = self.take_line() {
                return Some(self.parse_line(&line));
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    let text = std::str::from_utf8(&chunk).expect("the frame is UTF-8");
                    self.buf.push_str(text);
                    self.raw.push_str(text);
                }
                Some(Err(_)) => return None,
                None => {
                    // The last chunk has no newline after `</body></html>`.
                    if self.prelude.is_none() || self.buf.is_empty() {
                        return None;
                    }
                    let line = std::mem::take(&mut self.buf);
                    return Some(self.parse_line(&line));
                }
            }
        }
    }
}

/// Requests `{path}` with the transport's handshake and returns the refusal: status and body.
pub async fn refused(server: &Server, transport: Transport, path_and_query: &str) -> (u16, String) {
    match transport {
        Transport::Sse | Transport::ShortPoll | Transport::LongPoll | Transport::Iframe => {
            let response = reqwest::get(server.url(path_and_query))
                .await
                .expect("request");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        }
        Transport::WebSocket => {
            match tokio_tungstenite::connect_async(server.ws_url(path_and_query)).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    let body = response.body().clone().unwrap_or_default();
                    (
                        response.status().as_u16(),
                        String::from_utf8_lossy(&body).into_owned(),
                    )
                }
                other => panic!("ws {path_and_query} should be refused, got {other:?}"),
            }
        }
    }
}

fn parse_sse_block(block: &str) -> Option<Item> {
    let (mut id, mut event, mut data, mut retry) = (None, None, None, None);
    for line in block.lines() {
        if line.starts_with(':') {
            return Some(Item::Heartbeat);
        }
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            // Several `data:` lines are joined with LF, as the SSE spec says.
            "data" => match &mut data {
                None => data = Some(value.to_owned()),
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
            },
            "retry" => retry = Some(value.parse().expect("retry is a number")),
            other => panic!("unexpected SSE field {other:?} in {block:?}"),
        }
    }
    if let Some(ms) = retry {
        return Some(Item::Retry(ms));
    }
    let data = serde_json::from_str(&data?).expect("SSE data is JSON");
    Some(Item::Frame(Frame {
        cursor: id.expect("SSE block has an id"),
        event: event.expect("has event"),
        data,
    }))
}

impl Conn {
    /// The forever frame's state (raw HTML and prelude), for iframe-specific checks.
    pub fn iframe(&self) -> &IframeConn {
        match self {
            Conn::Iframe(frame) => frame,
            _ => panic!("not a forever frame"),
        }
    }

    /// The next item, or `None` when the connection ended.
    pub async fn next_item(&mut self) -> Option<Item> {
        tokio::time::timeout(PATIENCE, self.next_item_unbounded())
            .await
            .expect("timed out waiting for the server")
    }

    async fn next_item_unbounded(&mut self) -> Option<Item> {
        match self {
            Conn::Sse { body, buf } => loop {
                if let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    if let Some(item) = parse_sse_block(block.trim_end_matches('\n')) {
                        return Some(item);
                    }
                    continue;
                }
                let chunk = body.next().await?.ok()?;
                buf.push_str(std::str::from_utf8(&chunk).expect("SSE is UTF-8"));
            },
            Conn::Ws(ws) => loop {
                match ws.incoming.recv().await? {
                    Ok(Message::Text(text)) => return Some(Item::Frame(parse_item(&text))),
                    Ok(Message::Ping(_)) => return Some(Item::Heartbeat),
                    Ok(Message::Close(frame)) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        return Some(Item::Closed(code, reason));
                    }
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            },
            Conn::Poll(poll) => poll.next_item().await,
            Conn::Iframe(frame) => frame.next_item().await,
        }
    }

    /// The next frame, skipping heartbeats and `retry:`.
    pub async fn next_frame(&mut self) -> Frame {
        let skip_to_frame = async {
            loop {
                match self.next_item_unbounded().await {
                    Some(Item::Frame(frame)) => return frame,
                    Some(Item::Heartbeat | Item::Retry(_)) => continue,
                    other => panic!("expected a frame, got {other:?}"),
                }
            }
        };
        // One deadline for the whole wait: heartbeats must not extend it.
        tokio::time::timeout(PATIENCE, skip_to_frame)
            .await
            .expect("timed out waiting for a frame")
    }

    /// Waits for `push.ready` (the first frame) and returns its cursor.
    pub async fn ready(&mut self) -> String {
        let frame = self.next_frame().await;
        assert_eq!(
            frame.event, "push.ready",
            "first frame must be push.ready: {frame:?}"
        );
        assert_eq!(frame.data["cursor"], frame.cursor.as_str());
        frame.cursor
    }

    /// The next `n` frames.
    pub async fn frames(&mut self, n: usize) -> Vec<Frame> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_frame().await);
        }
        out
    }

    /// Sends a raw WebSocket message (WebSocket only).
    pub async fn send_ws(&mut self, message: Message) {
        match self {
            Conn::Ws(ws) => ws.sink.send(message).await.expect("send"),
            _ => panic!("not a websocket"),
        }
    }
}

/// Bytes and HTTP requests that went through a [`Server::counting_proxy`].
#[derive(Debug, Default)]
pub struct Traffic {
    /// Client to server bytes.
    pub up: std::sync::atomic::AtomicU64,
    /// Server to client bytes.
    pub down: std::sync::atomic::AtomicU64,
    /// Requests seen (each read from the client that starts with `GET `).
    pub requests: std::sync::atomic::AtomicU64,
}

impl Server {
    /// A TCP proxy in front of `self` that counts what crosses it, headers
    /// and all; stopped when dropped.
    pub async fn counting_proxy(&self) -> (Server, std::sync::Arc<Traffic>) {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let traffic = std::sync::Arc::new(Traffic::default());
        let target = self.addr;
        let counters = traffic.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut in_read, mut in_write) = inbound.into_split();
                let (mut out_read, mut out_write) = outbound.into_split();
                let up = counters.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = in_read.read(&mut buf).await {
                        let chunk = &buf[..n];
                        up.up.fetch_add(n as u64, Relaxed);
                        if chunk.starts_with(b"GET ") {
                            up.requests.fetch_add(1, Relaxed);
                        }
                        if out_write.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                });
                let down = counters.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = out_read.read(&mut buf).await {
                        down.down.fetch_add(n as u64, Relaxed);
                        if in_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (Server { addr, task }, traffic)
    }
}

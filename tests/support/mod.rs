//! Shared by the integration tests: a server on 127.0.0.1:0 and raw wire
//! readers that turn each transport's bytes into the same [`Frame`]s, so one
//! set of checks runs against every transport.
#![allow(dead_code)]

pub mod channel;

use futures_util::{SinkExt, StreamExt};
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
}

pub const TRANSPORTS: [Transport; 2] = [Transport::Sse, Transport::WebSocket];

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

/// A raw connection to one subscription route.
pub enum Conn {
    Sse {
        body: Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + Unpin>,
        buf: String,
    },
    Ws(
        Box<
            tokio_tungstenite::WebSocketStream<
                tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
            >,
        >,
    ),
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
            Conn::Ws(Box::new(ws))
        }
    }
}

/// Requests `{path}` with the transport's handshake and returns the refusal: status and body.
pub async fn refused(server: &Server, transport: Transport, path_and_query: &str) -> (u16, String) {
    match transport {
        Transport::Sse => {
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
            "data" => data = Some(value.to_owned()),
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
                match ws.next().await? {
                    Ok(Message::Text(text)) => {
                        let mut value: serde_json::Value =
                            serde_json::from_str(&text).expect("ws message is JSON");
                        assert_eq!(value.as_object().expect("object").len(), 3, "{text}");
                        let at =
                            |key: &str| text.find(key).unwrap_or_else(|| panic!("{key} in {text}"));
                        assert!(text.starts_with("{\"cursor\":"), "{text}");
                        assert!(
                            at(",\"event\":") < at(",\"data\":"),
                            "keys in order: {text}"
                        );
                        let frame = Frame {
                            cursor: value["cursor"].as_str().expect("cursor").to_owned(),
                            event: value["event"].as_str().expect("event").to_owned(),
                            data: value["data"].take(),
                        };
                        return Some(Item::Frame(frame));
                    }
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
            Conn::Ws(ws) => ws.send(message).await.expect("send"),
            Conn::Sse { .. } => panic!("not a websocket"),
        }
    }
}

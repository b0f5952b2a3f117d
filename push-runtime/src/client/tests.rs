//! Unit tests of the client's API surface: URLs, interpretation of frames,
//! and the reconnect loop against a port where nothing listens and against
//! scripted servers that send canned bytes.

use super::frame::{Frame, Meaning, interpret};
use super::*;
use futures_util::StreamExt;

/// A channel written by hand, as `#[push_channel]` would generate it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Chat {
    Message { from: String, text: String },
    Joined(Who),
    Cleared,
}

/// Internal tagging takes a newtype variant only around a struct or map.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Who {
    name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ChatKind {
    Message,
    Joined,
    Cleared,
}

impl EventKind for ChatKind {
    const ALL: &'static [Self] = &[ChatKind::Message, ChatKind::Joined, ChatKind::Cleared];
    const NAMES: &'static [&'static str] = &["message", "joined", "cleared"];

    fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl Channel for Chat {
    type Kind = ChatKind;
    const PATH: &'static str = "/chat";

    fn kind(&self) -> ChatKind {
        match self {
            Chat::Message { .. } => ChatKind::Message,
            Chat::Joined(_) => ChatKind::Joined,
            Chat::Cleared => ChatKind::Cleared,
        }
    }
}

fn client(base: &str) -> Client<Chat> {
    match Client::new(base) {
        Ok(client) => client,
        Err(error) => panic!("{base}: {error}"),
    }
}

fn url(
    client: &Client<Chat>,
    topic: &str,
    transport: Transport,
    after: Option<Cursor>,
    events: Option<&str>,
) -> String {
    match client.endpoint(topic, transport, after, events) {
        Ok(url) => url.to_string(),
        Err(error) => panic!("{topic}: {error}"),
    }
}

#[test]
fn builds_subscription_urls() {
    let plain = client("http://127.0.0.1:3000");
    assert_eq!(
        url(&plain, "lobby", Transport::Sse, None, None),
        "http://127.0.0.1:3000/chat/lobby/sse"
    );
    assert_eq!(
        url(
            &plain,
            "lobby",
            Transport::WebSocket,
            Some(Cursor::new(5, 7)),
            Some("message,joined")
        ),
        "ws://127.0.0.1:3000/chat/lobby/ws?after=5-7&events=message,joined"
    );
    let prefixed = client("http://localhost:8080/api/");
    assert_eq!(
        url(&prefixed, "a:b.c", Transport::Sse, None, None),
        "http://localhost:8080/api/chat/a:b.c/sse"
    );
}

#[test]
fn topics_are_percent_encoded_into_one_segment() {
    let plain = client("http://127.0.0.1:3000");
    assert_eq!(
        url(&plain, "a/b?c#d e%", Transport::Sse, None, None),
        "http://127.0.0.1:3000/chat/a%2Fb%3Fc%23d%20e%25/sse"
    );
    for dots in [".", ".."] {
        assert!(matches!(
            plain.endpoint(dots, Transport::Sse, None, None),
            Err(ClientError::InvalidTopic { .. })
        ));
    }
}

#[test]
fn rejects_unusable_base_urls() {
    for base in [
        "",
        "127.0.0.1:3000",
        "ftp://x",
        "http://x/?q=1",
        "http://x/#f",
        "mailto:a@b",
    ] {
        assert!(
            matches!(
                Client::<Chat>::new(base),
                Err(ClientError::InvalidBaseUrl { .. })
            ),
            "{base}"
        );
    }
}

#[cfg(feature = "rustls")]
#[test]
fn an_https_base_url_gives_https_and_wss_urls() {
    let secure = client("https://push.example:8443/api");
    assert_eq!(
        url(&secure, "lobby", Transport::Sse, None, None),
        "https://push.example:8443/api/chat/lobby/sse"
    );
    assert_eq!(
        url(&secure, "lobby", Transport::WebSocket, None, None),
        "wss://push.example:8443/api/chat/lobby/ws"
    );
    assert!(secure.ws_connector().is_some());
    assert!(client("http://127.0.0.1:3000").ws_connector().is_none());
}

#[cfg(not(feature = "rustls"))]
#[test]
fn without_the_rustls_feature_https_is_refused_with_the_reason() {
    match Client::<Chat>::new("https://push.example") {
        Err(ClientError::InvalidBaseUrl { reason, .. }) => {
            assert!(reason.contains("`rustls` feature"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn kinds_become_a_deduplicated_filter() {
    let plain = client("http://127.0.0.1:3000");
    let subscribe =
        plain
            .subscribe("lobby")
            .kinds([ChatKind::Joined, ChatKind::Message, ChatKind::Joined]);
    assert_eq!(
        subscribe.kinds,
        Some(vec![ChatKind::Joined, ChatKind::Message])
    );
}

fn frame(cursor: Option<&str>, event: &str, data: &str) -> Frame {
    Frame {
        cursor: cursor.map(str::to_owned),
        event: event.to_owned(),
        data: data.to_owned(),
    }
}

#[test]
fn interprets_control_events() {
    let ready = interpret::<Chat>(&frame(Some("9-0"), "push.ready", r#"{"cursor":"9-0"}"#));
    assert!(matches!(ready, Meaning::Ready(cursor) if cursor == Cursor::new(9, 0)));
    let gap = interpret::<Chat>(&frame(
        Some("9-5"),
        "push.gap",
        r#"{"from":"8-2","to":"9-5","missed":null}"#,
    ));
    assert!(matches!(gap, Meaning::Gap(Gap { from, to, missed: None })
        if from == Cursor::new(8, 2) && to == Cursor::new(9, 5)));
    let unknown = interpret::<Chat>(&frame(None, "push.shutdown", "whatever"));
    assert!(matches!(unknown, Meaning::Ignored));
    let bad_ready = interpret::<Chat>(&frame(Some("9-0"), "push.ready", r#"{"cursor":"nope"}"#));
    assert!(matches!(
        bad_ready,
        Meaning::Invalid(ClientError::Malformed { .. })
    ));
}

#[test]
fn interprets_every_variant_shape() {
    let cases = [
        (
            r#"{"type":"message","from":"ann","text":"hi"}"#,
            Chat::Message {
                from: "ann".into(),
                text: "hi".into(),
            },
        ),
        (
            r#"{"type":"joined","name":"x"}"#,
            Chat::Joined(Who { name: "x".into() }),
        ),
        (r#"{"type":"cleared"}"#, Chat::Cleared),
    ];
    for (data, expected) in cases {
        let meaning = interpret::<Chat>(&frame(Some("1-3"), "whatever", data));
        match meaning {
            Meaning::Event { cursor, event } => {
                assert_eq!(cursor, Cursor::new(1, 3));
                assert_eq!(event, expected);
            }
            other => panic!("{data}: {other:?}"),
        }
    }
}

#[test]
fn undecodable_events_keep_their_cursor() {
    let meaning = interpret::<Chat>(&frame(Some("4-4"), "message", r#"{"type":"mystery"}"#));
    match meaning {
        Meaning::Invalid(ClientError::Decode { cursor, event, .. }) => {
            assert_eq!(cursor, Cursor::new(4, 4));
            assert_eq!(event, "message");
        }
        other => panic!("{other:?}"),
    }
    for cursor in [None, Some(""), Some("x"), Some("1-2-3")] {
        let meaning = interpret::<Chat>(&frame(cursor, "message", r#"{"type":"cleared"}"#));
        assert!(
            matches!(meaning, Meaning::Invalid(ClientError::Malformed { .. })),
            "{cursor:?}"
        );
    }
}

/// A port on which nothing listens (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0");
    match listener.and_then(|listener| listener.local_addr()) {
        Ok(address) => address.port(),
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test]
async fn retries_with_backoff_then_gives_up() {
    let config = ClientConfig::default()
        .initial_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(4))
        .max_retries(Some(3))
        .jitter(false);
    for transport in [
        Transport::Sse,
        Transport::WebSocket,
        Transport::ShortPoll,
        Transport::LongPoll,
        Transport::Iframe,
    ] {
        let base = format!("http://127.0.0.1:{}", closed_port());
        let client = match Client::<Chat>::with_config(&base, config.clone()) {
            Ok(client) => client,
            Err(error) => panic!("{error}"),
        };
        let after = Cursor::new(3, 3);
        let mut stream = client
            .subscribe("lobby")
            .transport(transport)
            .after(after)
            .stream();
        let mut delays = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(Update::Reconnecting {
                    attempt,
                    delay,
                    cause,
                }) => {
                    assert!(matches!(cause, ClientError::Connect { .. }), "{cause}");
                    delays.push((attempt, delay.as_millis()));
                }
                Err(ClientError::GaveUp { attempts, last }) => {
                    assert_eq!(attempts, 3);
                    assert!(matches!(*last, ClientError::Connect { .. }));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(stream.position(), Some(after));
        }
        assert_eq!(delays, [(1, 1), (2, 2), (3, 4)], "{transport:?}");
    }
}

/// A request a scripted server saw.
#[derive(Debug)]
struct Seen {
    /// The request line, e.g. `GET /chat/lobby/sse HTTP/1.1`.
    line: String,
    /// The whole head, lowercased (header names and values).
    head: String,
    /// When it was read.
    at: std::time::Instant,
}

/// A scripted server: answers the n-th connection with `responses[n]` and
/// reports each request it saw.
async fn scripted_http_server(
    responses: Vec<String>,
) -> (String, tokio::sync::mpsc::Receiver<Seen>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (requests, seen) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        for response in responses {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let line = head.lines().next().unwrap_or("").to_owned();
            let at = std::time::Instant::now();
            let head = head.to_ascii_lowercase();
            let _ = requests.send(Seen { line, head, at }).await;
            let _ = socket.write_all(response.as_bytes()).await;
            // Dropping the socket ends the body.
        }
    });
    (base, seen)
}

/// The request line of the next request seen.
async fn next_line(requests: &mut tokio::sync::mpsc::Receiver<Seen>) -> Option<String> {
    requests.recv().await.map(|seen| seen.line)
}

/// A complete response that closes the connection.
fn response(status: &str, content_type: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n{headers}\r\n{body}",
        body.len()
    )
}

/// A `200` poll answer with its `ETag`.
fn poll_answer(cursor: &str, more: bool, items: &[&str]) -> String {
    let body = format!(
        r#"{{"cursor":"{cursor}","more":{more},"events":[{}]}}"#,
        items.join(",")
    );
    let etag = format!("etag: \"{cursor}\"\r\n");
    response("200 OK", "application/json", &etag, &body)
}

/// A `400` with the server's one-line message.
fn bad_request(message: &str) -> String {
    response(
        "400 Bad Request",
        "text/plain; charset=utf-8",
        "",
        &format!("{message}\n"),
    )
}

/// A WebSocket message object, as polls and forever frames carry it.
fn item(cursor: &str, event: &str, data: &str) -> String {
    format!(r#"{{"cursor":"{cursor}","event":"{event}","data":{data}}}"#)
}

fn quick_config() -> ClientConfig {
    ClientConfig::default()
        .initial_delay(Duration::from_millis(1))
        .jitter(false)
}

/// The next item, which must be `Ok`.
async fn next_ok(stream: &mut Subscription<Chat>) -> Update<Chat> {
    match stream.next().await {
        Some(Ok(update)) => update,
        other => panic!("expected an update, got {other:?}"),
    }
}

#[tokio::test]
async fn sse_resumes_from_the_last_event_and_stops_on_a_rejection() {
    let first = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
        retry: 2000\n\n\
        id: 1-0\nevent: push.ready\ndata: {\"cursor\":\"1-0\"}\n\n\
        :\n\n\
        id: 1-1\nevent: push.future\ndata: {}\n\n\
        id: 1-1\r\nevent: message\r\ndata: {\"type\":\"cleared\"}\r\n\r\n\
        id: 1-2\nevent: message\ndata: {\"type\":\"message\",\"from\":\"ann\",\"text\":\"hi\"}\n\n";
    let second = "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
        content-length: 20\r\nconnection: close\r\n\r\ncursor `1-2` is bad\n";
    let (base, mut requests) = scripted_http_server(vec![first.into(), second.into()]).await;
    let config = ClientConfig::default()
        .initial_delay(Duration::from_millis(1))
        .jitter(false);
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .kinds([ChatKind::Message, ChatKind::Cleared])
        .stream();

    assert!(
        matches!(stream.next().await, Some(Ok(Update::Ready { cursor })) if cursor == Cursor::new(1, 0))
    );
    assert!(matches!(
        stream.next().await,
        Some(Ok(Update::Event {
            event: Chat::Cleared,
            ..
        }))
    ));
    match stream.next().await {
        Some(Ok(Update::Event {
            cursor,
            event: Chat::Message { from, .. },
        })) => {
            assert_eq!((cursor, from.as_str()), (Cursor::new(1, 2), "ann"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        stream.next().await,
        Some(Ok(Update::Reconnecting {
            attempt: 1,
            cause: ClientError::Disconnected { .. },
            ..
        }))
    ));
    match stream.next().await {
        Some(Err(ClientError::Rejected { status, message })) => {
            assert_eq!((status, message.as_str()), (400, "cursor `1-2` is bad"));
        }
        other => panic!("{other:?}"),
    }
    assert!(stream.next().await.is_none());
    assert_eq!(stream.position(), Some(Cursor::new(1, 2)));
    assert_eq!(
        next_line(&mut requests).await.as_deref(),
        Some("GET /chat/lobby/sse?events=message,cleared HTTP/1.1")
    );
    assert_eq!(
        next_line(&mut requests).await.as_deref(),
        Some("GET /chat/lobby/sse?after=1-2&events=message,cleared HTTP/1.1")
    );
}

#[tokio::test]
async fn sse_rejects_a_response_that_is_not_an_event_stream() {
    let page = "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\nhi";
    let (base, _requests) = scripted_http_server(vec![page.into()]).await;
    let mut stream = Client::<Chat>::new(&base)
        .expect("client")
        .subscribe("x")
        .stream();
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::UnexpectedResponse { .. }))
    ));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn websocket_resumes_after_going_away_and_stops_on_policy_violation() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (uris, mut seen) = tokio::sync::mpsc::channel::<String>(4);
    tokio::spawn(async move {
        let scripts: [(&[&str], CloseCode); 2] = [
            (
                &[
                    r#"{"cursor":"3-0","event":"push.ready","data":{"cursor":"3-0"}}"#,
                    r#"{"cursor":"3-1","event":"cleared","data":{"type":"cleared"}}"#,
                    "not json",
                    r#"{"cursor":"3-2","event":"message","data":{"type":"nope"}}"#,
                ],
                CloseCode::Away,
            ),
            (&[], CloseCode::Policy),
        ];
        for (messages, code) in scripts {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let uris = uris.clone();
            // The error type is tungstenite's, not ours to shrink.
            #[allow(clippy::result_large_err)]
            let callback = move |request: &Request, response: Response| {
                let _ = uris.try_send(request.uri().to_string());
                Ok(response)
            };
            let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(socket, callback).await else {
                return;
            };
            for message in messages {
                let _ = socket.send(Message::text(*message)).await;
            }
            let close = CloseFrame {
                code,
                reason: "bye".into(),
            };
            let _ = socket.close(Some(close)).await;
        }
    });

    let config = ClientConfig::default()
        .initial_delay(Duration::from_millis(1))
        .jitter(false);
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::WebSocket)
        .stream();
    assert!(matches!(
        stream.next().await,
        Some(Ok(Update::Ready { .. }))
    ));
    assert!(matches!(
        stream.next().await,
        Some(Ok(Update::Event {
            event: Chat::Cleared,
            ..
        }))
    ));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Malformed { .. }))
    ));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Decode { cursor, .. })) if cursor == Cursor::new(3, 2)
    ));
    assert!(matches!(
        stream.next().await,
        Some(Ok(Update::Reconnecting {
            cause: ClientError::Closed { code: 1001, .. },
            ..
        }))
    ));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Closed { code: 1008, .. }))
    ));
    assert!(stream.next().await.is_none());
    assert_eq!(seen.recv().await.as_deref(), Some("/chat/lobby/ws"));
    assert_eq!(
        seen.recv().await.as_deref(),
        Some("/chat/lobby/ws?after=3-2")
    );
}

/// What the scripted server of a WebSocket skip does with one connection.
enum Step {
    /// Upgrades and sends these messages, then closes with the code.
    Socket(Vec<String>, u16),
    /// Answers with this head and the start of a body that never ends.
    Endless(String, String),
}

/// A scripted server for WebSocket and plain requests on one port: the
/// n-th connection gets `steps[n]`. Reports each request's line and
/// lowercased head.
async fn scripted_mixed_server(steps: Vec<Step>) -> (String, tokio::sync::mpsc::Receiver<Seen>) {
    use futures_util::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (requests, seen) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        // Bodies that never end stay open until the test is over.
        let mut held = Vec::new();
        for step in steps {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            // Peeked, not read: a WebSocket handshake reads the head itself.
            let mut buffer = vec![0u8; 4096];
            let head = loop {
                let Ok(peeked) = socket.peek(&mut buffer).await else {
                    return;
                };
                let bytes = &buffer[..peeked];
                if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
                    break String::from_utf8_lossy(&bytes[..end + 4]).into_owned();
                }
                if peeked == 0 || peeked == buffer.len() {
                    return;
                }
                tokio::task::yield_now().await;
            };
            let line = head.lines().next().unwrap_or("").to_owned();
            let at = std::time::Instant::now();
            let _ = requests
                .send(Seen {
                    line,
                    head: head.to_ascii_lowercase(),
                    at,
                })
                .await;
            match step {
                Step::Socket(messages, code) => {
                    let Ok(mut socket) = tokio_tungstenite::accept_async(socket).await else {
                        return;
                    };
                    for message in messages {
                        let _ = socket.send(Message::text(message)).await;
                    }
                    let close = CloseFrame {
                        code: code.into(),
                        reason: "bye".into(),
                    };
                    let _ = socket.close(Some(close)).await;
                }
                Step::Endless(head_out, body_start) => {
                    let mut consumed = vec![0u8; head.len()];
                    if socket.read_exact(&mut consumed).await.is_err() {
                        return;
                    }
                    let _ = socket.write_all(head_out.as_bytes()).await;
                    let _ = socket.write_all(body_start.as_bytes()).await;
                    held.push(socket);
                }
            }
        }
        std::future::pending::<()>().await;
    });
    (base, seen)
}

/// A WebSocket message over the limit: one poll after the position, with
/// the same headers and `limit=1`, whose `ETag` names the item; the client
/// reads no more of that answer than an item's worth (the body here never
/// ends, so waiting for it would time out), yields `TooLarge` with the
/// cursor and reopens the socket after it, at once.
#[tokio::test]
async fn websocket_skips_a_message_over_the_limit_located_by_a_poll() {
    let ready = |cursor: &str| item(cursor, "push.ready", &format!(r#"{{"cursor":"{cursor}"}}"#));
    let cleared = |cursor: &str| item(cursor, "cleared", r#"{"type":"cleared"}"#);
    let big = item("3-2", "message", &format!(r#""{}""#, "x".repeat(8 * 1024)));
    let poll_head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     etag: \"3-2;more\"\r\ncontent-length: 100000000\r\n\r\n"
        .to_owned();
    let poll_body = format!(r#"{{"cursor":"3-2","more":true,"events":[{big}"#);
    let (base, mut requests) = scripted_mixed_server(vec![
        Step::Socket(vec![ready("3-0"), cleared("3-1"), big.clone()], 1000),
        Step::Endless(poll_head, poll_body),
        Step::Socket(vec![ready("3-2"), cleared("3-3")], 1008),
    ])
    .await;
    let config = quick_config()
        .max_item_size(1024)
        .header("authorization", "Bearer t")
        .expect("header");
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::WebSocket)
        .stream();
    assert!(matches!(next_ok(&mut stream).await, Update::Ready { .. }));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Event { cursor, .. } if cursor == Cursor::new(3, 1)
    ));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::TooLarge {
            limit: 1024,
            cursor: Some(cursor),
        })) if cursor == Cursor::new(3, 2)
    ));
    assert_eq!(stream.position(), Some(Cursor::new(3, 2)));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Ready { cursor } if cursor == Cursor::new(3, 2)
    ));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Event { cursor, .. } if cursor == Cursor::new(3, 3)
    ));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Closed { code: 1008, .. }))
    ));
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(requests.recv().await.expect("a request"));
    }
    let lines: Vec<&str> = seen.iter().map(|seen| seen.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /chat/lobby/ws HTTP/1.1",
            "GET /chat/lobby/poll?after=3-1&limit=1 HTTP/1.1",
            "GET /chat/lobby/ws?after=3-2 HTTP/1.1",
        ]
    );
    for seen in &seen {
        assert!(
            seen.head.contains("\r\nauthorization: bearer t\r\n"),
            "{}",
            seen.head
        );
    }
}

/// The poll locating a WebSocket message over the limit may fail (a `503`:
/// the socket is reopened with backoff, meets the message again and polls
/// again) or find that the item is gone from history (a `push.gap`: the
/// gap is delivered and the socket reopened after it). Nothing is skipped
/// silently.
#[tokio::test]
async fn websocket_skip_retries_a_failed_poll_and_delivers_a_gap_it_finds() {
    let ready = |cursor: &str| item(cursor, "push.ready", &format!(r#"{{"cursor":"{cursor}"}}"#));
    let big = item("3-1", "message", &format!(r#""{}""#, "x".repeat(8 * 1024)));
    let unavailable = response("503 Service Unavailable", "text/plain", "", "busy\n");
    let gap = item("3-5", "push.gap", r#"{"from":"3-0","to":"3-5","missed":5}"#);
    let mut answer = poll_answer("3-5", true, &[&gap]);
    answer = answer.replace("etag: \"3-5\"", "etag: \"3-5;gap=3-5;more\"");
    let (base, mut requests) = scripted_mixed_server(vec![
        Step::Socket(vec![ready("3-0"), big.clone()], 1000),
        Step::Endless(unavailable, String::new()),
        Step::Socket(vec![ready("3-0"), big], 1000),
        Step::Endless(answer, String::new()),
        Step::Socket(
            vec![
                ready("3-5"),
                item("3-6", "cleared", r#"{"type":"cleared"}"#),
            ],
            1008,
        ),
    ])
    .await;
    let config = quick_config().max_item_size(1024);
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::WebSocket)
        .stream();
    assert!(matches!(next_ok(&mut stream).await, Update::Ready { .. }));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Reconnecting {
            cause: ClientError::Server { status: 503, .. },
            ..
        }
    ));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Ready { cursor } if cursor == Cursor::new(3, 0)
    ));
    match next_ok(&mut stream).await {
        Update::Gap(gap) => assert_eq!(
            (gap.from, gap.to, gap.missed),
            (Cursor::new(3, 0), Cursor::new(3, 5), Some(5))
        ),
        other => panic!("expected a gap, got {other:?}"),
    }
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Ready { cursor } if cursor == Cursor::new(3, 5)
    ));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Event { cursor, .. } if cursor == Cursor::new(3, 6)
    ));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Closed { code: 1008, .. }))
    ));
    let mut lines = Vec::new();
    for _ in 0..5 {
        lines.push(next_line(&mut requests).await);
    }
    assert_eq!(
        lines.iter().map(|line| line.as_deref()).collect::<Vec<_>>(),
        [
            Some("GET /chat/lobby/ws HTTP/1.1"),
            Some("GET /chat/lobby/poll?after=3-0&limit=1 HTTP/1.1"),
            Some("GET /chat/lobby/ws?after=3-0 HTTP/1.1"),
            Some("GET /chat/lobby/poll?after=3-0&limit=1 HTTP/1.1"),
            Some("GET /chat/lobby/ws?after=3-5 HTTP/1.1"),
        ]
    );
}

#[test]
fn builds_polling_and_iframe_urls() {
    let plain = client("http://127.0.0.1:3000");
    let url = |transport, after, timeout| {
        plain
            .endpoint_with("lobby", transport, after, Some("message"), timeout)
            .map(|url| url.to_string())
            .ok()
    };
    assert_eq!(
        url(Transport::ShortPoll, Some(Cursor::new(5, 7)), None).as_deref(),
        Some("http://127.0.0.1:3000/chat/lobby/poll?after=5-7&events=message")
    );
    assert_eq!(
        url(Transport::LongPoll, None, Some(25)).as_deref(),
        Some("http://127.0.0.1:3000/chat/lobby/long-poll?events=message&timeout=25")
    );
    assert_eq!(
        url(Transport::Iframe, None, None).as_deref(),
        Some("http://127.0.0.1:3000/chat/lobby/iframe?events=message")
    );
    assert_eq!(
        url(Transport::Auto, None, None).as_deref(),
        Some("ws://127.0.0.1:3000/chat/lobby/ws?events=message")
    );
}

#[tokio::test]
async fn short_poll_revalidates_with_the_etag_and_polls_again_at_once_when_more() {
    let cleared = r#"{"type":"cleared"}"#;
    let (base, mut requests) = scripted_http_server(vec![
        poll_answer("1-0", false, &[]),
        response(
            "304 Not Modified",
            "application/json",
            "etag: \"1-0\"\r\n",
            "",
        ),
        poll_answer(
            "1-2",
            true,
            &[
                &item("1-1", "cleared", cleared),
                &item(
                    "1-2",
                    "message",
                    r#"{"type":"message","from":"ann","text":"<hi>"}"#,
                ),
            ],
        ),
        poll_answer(
            "1-7",
            false,
            &[
                &item("1-5", "push.gap", r#"{"from":"1-2","to":"1-5","missed":3}"#),
                &item("1-6", "cleared", cleared),
            ],
        ),
        bad_request("cursor `1-7` is bad"),
    ])
    .await;
    let interval = Duration::from_millis(600);
    let config = quick_config().poll_interval(interval);
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::ShortPoll)
        .stream();
    assert_eq!(stream.transport(), Transport::ShortPoll);
    assert!(
        matches!(next_ok(&mut stream).await, Update::Ready { cursor } if cursor == Cursor::new(1, 0))
    );
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Event { cursor, event: Chat::Cleared } if cursor == Cursor::new(1, 1)
    ));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Event { event: Chat::Message { text, .. }, .. } if text == "<hi>"
    ));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Gap(Gap { to, missed: Some(3), .. }) if to == Cursor::new(1, 5)
    ));
    assert!(
        matches!(next_ok(&mut stream).await, Update::Event { cursor, .. } if cursor == Cursor::new(1, 6))
    );
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Rejected { status: 400, .. }))
    ));
    assert!(stream.next().await.is_none());

    let mut seen = Vec::new();
    while let Some(request) = requests.recv().await {
        seen.push(request);
    }
    let lines: Vec<_> = seen.iter().map(|seen| seen.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /chat/lobby/poll?limit=15 HTTP/1.1",
            "GET /chat/lobby/poll?after=1-0&limit=15 HTTP/1.1",
            "GET /chat/lobby/poll?after=1-0&limit=15 HTTP/1.1",
            "GET /chat/lobby/poll?after=1-2&limit=15 HTTP/1.1",
            "GET /chat/lobby/poll?after=1-7&limit=15 HTTP/1.1",
        ]
    );
    assert!(!seen[0].head.contains("if-none-match"));
    for (request, etag) in seen[1..]
        .iter()
        .zip(["\"1-0\"", "\"1-0\"", "\"1-2\"", "\"1-7\""])
    {
        assert!(
            request.head.contains(&format!("if-none-match: {etag}\r\n")),
            "{}",
            request.head
        );
    }
    // The interval after an answer without `more` and after a 304; none after `more`.
    let gaps: Vec<_> = seen
        .windows(2)
        .map(|pair| pair[1].at - pair[0].at)
        .collect();
    assert!(
        gaps[0] >= interval && gaps[1] >= interval && gaps[3] >= interval,
        "{gaps:?}"
    );
    assert!(gaps[2] < interval, "{gaps:?}");
}

#[tokio::test]
async fn long_poll_loops_at_once_over_empty_answers_and_resumes_after_a_failure() {
    let cleared = r#"{"type":"cleared"}"#;
    let (base, mut requests) = scripted_http_server(vec![
        poll_answer("2-3", false, &[]),
        poll_answer("2-3", false, &[]),
        poll_answer("2-5", false, &[&item("2-4", "cleared", cleared)]),
        response("503 Service Unavailable", "text/plain", "", "broker down\n"),
        poll_answer("2-5", false, &[]),
        bad_request("enough"),
    ])
    .await;
    // An interval longer than the test: a long poll never waits for it.
    let config = quick_config()
        .poll_interval(Duration::from_secs(30))
        .long_poll_timeout(Duration::from_secs(7));
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::LongPoll)
        .after(Cursor::new(2, 3))
        .stream();
    assert!(
        matches!(next_ok(&mut stream).await, Update::Ready { cursor } if cursor == Cursor::new(2, 3))
    );
    assert!(
        matches!(next_ok(&mut stream).await, Update::Event { cursor, .. } if cursor == Cursor::new(2, 4))
    );
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Reconnecting {
            attempt: 1,
            cause: ClientError::Server { status: 503, .. },
            ..
        }
    ));
    // The failed run of polls had moved on to 2-5 (a filtered-out event):
    // the new one resumes from the last item seen, which is safe.
    assert!(
        matches!(next_ok(&mut stream).await, Update::Ready { cursor } if cursor == Cursor::new(2, 4))
    );
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Rejected { status: 400, .. }))
    ));
    let mut lines = Vec::new();
    while let Some(request) = requests.recv().await {
        assert!(!request.head.contains("if-none-match"), "{}", request.head);
        lines.push(request.line);
    }
    assert_eq!(
        lines,
        [
            "GET /chat/lobby/long-poll?after=2-3&timeout=7&limit=15 HTTP/1.1",
            "GET /chat/lobby/long-poll?after=2-3&timeout=7&limit=15 HTTP/1.1",
            "GET /chat/lobby/long-poll?after=2-3&timeout=7&limit=15 HTTP/1.1",
            "GET /chat/lobby/long-poll?after=2-5&timeout=7&limit=15 HTTP/1.1",
            "GET /chat/lobby/long-poll?after=2-4&timeout=7&limit=15 HTTP/1.1",
            "GET /chat/lobby/long-poll?after=2-5&timeout=7&limit=15 HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn long_poll_without_a_position_learns_it_at_once() {
    let (base, mut requests) =
        scripted_http_server(vec![poll_answer("6-9", false, &[]), bad_request("enough")]).await;
    let client = Client::<Chat>::with_config(&base, quick_config()).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::LongPoll)
        .stream();
    assert!(
        matches!(next_ok(&mut stream).await, Update::Ready { cursor } if cursor == Cursor::new(6, 9))
    );
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Rejected { .. }))
    ));
    assert_eq!(
        next_line(&mut requests).await.as_deref(),
        Some("GET /chat/lobby/long-poll?timeout=0&limit=15 HTTP/1.1")
    );
    assert_eq!(
        next_line(&mut requests).await.as_deref(),
        Some("GET /chat/lobby/long-poll?after=6-9&timeout=25&limit=15 HTTP/1.1")
    );
}

#[tokio::test]
async fn a_poll_item_over_the_limit_is_skipped_with_an_error_item() {
    let big = format!(r#""{}""#, "x".repeat(20 * 1024));
    let small = r#"{"type":"cleared"}"#;
    let (base, mut requests) = scripted_http_server(vec![
        // Over the answer's 16 KiB: asked again for one item.
        poll_answer("1-1", false, &[&item("1-1", "cleared", &big)]),
        // Still over: that item, skipped; the tag says where to go on.
        poll_answer("1-1", false, &[&item("1-1", "cleared", &big)]),
        poll_answer("1-2", false, &[&item("1-2", "cleared", small)]),
    ])
    .await;
    let config = quick_config().max_item_size(1024);
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::ShortPoll)
        .after(Cursor::new(1, 0))
        .stream();
    assert!(matches!(next_ok(&mut stream).await, Update::Ready { .. }));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::TooLarge {
            limit: 1024,
            cursor: Some(cursor),
        })) if cursor == Cursor::new(1, 1)
    ));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Event { cursor, .. } if cursor == Cursor::new(1, 2)
    ));
    let mut lines = Vec::new();
    for _ in 0..3 {
        lines.push(next_line(&mut requests).await);
    }
    assert_eq!(
        lines,
        [
            Some("GET /chat/lobby/poll?after=1-0&limit=15 HTTP/1.1".to_owned()),
            Some("GET /chat/lobby/poll?after=1-0&limit=1 HTTP/1.1".to_owned()),
            Some("GET /chat/lobby/poll?after=1-1&limit=15 HTTP/1.1".to_owned()),
        ]
    );
}

/// A forever frame: the prelude, then each item in its script element.
fn forever_frame(items: &[String], end: Option<&str>) -> String {
    let mut body = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>push</title></head><body>\n\
         <!--                                -->\n\
         <script>\"use strict\";var t=location.origin;function m(x){parent.postMessage(x,t)}</script>\n",
    );
    for item in items {
        body.push_str(&format!("<script>m({item})</script>\n<!---->\n"));
    }
    if let Some(cursor) = end {
        let end = item(cursor, "push.end", &format!(r#"{{"cursor":"{cursor}"}}"#));
        body.push_str(&format!("<script>m({end})</script></body></html>"));
    }
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\nconnection: close\r\n\r\n{body}"
    )
}

#[tokio::test]
async fn iframe_reconnects_at_once_after_push_end() {
    let ready = |cursor: &str| item(cursor, "push.ready", &format!(r#"{{"cursor":"{cursor}"}}"#));
    let (base, mut requests) = scripted_http_server(vec![
        forever_frame(
            &[
                ready("4-0"),
                item(
                    "4-1",
                    "message",
                    r#"{"type":"message","from":"\u003cb\u003e","text":"\u0026\u2028"}"#,
                ),
            ],
            Some("4-2"),
        ),
        // Ends without push.end: a lost connection.
        forever_frame(
            &[
                ready("4-2"),
                item("4-3", "cleared", r#"{"type":"cleared"}"#),
            ],
            None,
        ),
        bad_request("enough"),
    ])
    .await;
    // A long delay: a reconnection after push.end must not wait for it.
    let config = ClientConfig::default()
        .initial_delay(Duration::from_secs(1))
        .jitter(false);
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::Iframe)
        .stream();
    assert!(
        matches!(next_ok(&mut stream).await, Update::Ready { cursor } if cursor == Cursor::new(4, 0))
    );
    match next_ok(&mut stream).await {
        Update::Event {
            event: Chat::Message { from, text },
            ..
        } => {
            assert_eq!((from.as_str(), text.as_str()), ("<b>", "&\u{2028}"));
        }
        other => panic!("{other:?}"),
    }
    let started = std::time::Instant::now();
    assert!(
        matches!(next_ok(&mut stream).await, Update::Ready { cursor } if cursor == Cursor::new(4, 2))
    );
    assert!(started.elapsed() < Duration::from_millis(800));
    assert!(
        matches!(next_ok(&mut stream).await, Update::Event { cursor, .. } if cursor == Cursor::new(4, 3))
    );
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Reconnecting {
            attempt: 1,
            cause: ClientError::Disconnected { .. },
            ..
        }
    ));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Rejected { status: 400, .. }))
    ));
    assert!(stream.next().await.is_none());
    let lines = [
        next_line(&mut requests).await,
        next_line(&mut requests).await,
        next_line(&mut requests).await,
    ];
    assert_eq!(
        lines.each_ref().map(Option::as_deref),
        [
            Some("GET /chat/lobby/iframe HTTP/1.1"),
            Some("GET /chat/lobby/iframe?after=4-2 HTTP/1.1"),
            Some("GET /chat/lobby/iframe?after=4-3 HTTP/1.1"),
        ]
    );
}

#[tokio::test]
async fn iframe_backs_off_after_a_document_that_brought_nothing() {
    let ready = |cursor: &str| item(cursor, "push.ready", &format!(r#"{{"cursor":"{cursor}"}}"#));
    // A server that ends every document right after `push.ready` (a byte
    // limit below its prelude): no event, no gap, then `push.end`.
    let empty = forever_frame(&[ready("4-0")], Some("4-0"));
    let (base, mut requests) = scripted_http_server(vec![
        empty.clone(),
        empty.clone(),
        empty,
        bad_request("enough"),
    ])
    .await;
    let delay = Duration::from_millis(300);
    let config = ClientConfig::default().initial_delay(delay).jitter(false);
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::Iframe)
        .stream();
    for _ in 0..3 {
        assert!(matches!(next_ok(&mut stream).await, Update::Ready { .. }));
    }
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Rejected { status: 400, .. }))
    ));
    let mut times = Vec::new();
    for _ in 0..4 {
        times.push(requests.recv().await.expect("a request").at);
    }
    for pair in times.windows(2) {
        let waited = pair[1] - pair[0];
        assert!(
            waited >= delay,
            "reopened after {waited:?}, not the reconnection delay"
        );
    }
}

fn sse_stream(cursor: &str, events: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
         retry: 2000\n\nid: {cursor}\nevent: push.ready\ndata: {{\"cursor\":\"{cursor}\"}}\n\n{events}"
    )
}

#[tokio::test]
async fn auto_falls_back_from_a_missing_websocket_route_to_sse_and_stays_there() {
    let (base, mut requests) = scripted_http_server(vec![
        response("404 Not Found", "text/plain", "", "no route\n"),
        sse_stream(
            "5-0",
            "id: 5-1\nevent: cleared\ndata: {\"type\":\"cleared\"}\n\n",
        ),
        // Once SSE has worked, even a 404 is not a reason to move.
        response("404 Not Found", "text/plain", "", "gone\n"),
    ])
    .await;
    let client = Client::<Chat>::with_config(&base, quick_config()).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::Auto)
        .stream();
    assert_eq!(stream.transport(), Transport::WebSocket);
    match next_ok(&mut stream).await {
        Update::Fallback {
            from,
            to,
            delay,
            cause,
        } => {
            assert_eq!(
                (from, to, delay),
                (Transport::WebSocket, Transport::Sse, Duration::ZERO)
            );
            assert!(
                matches!(cause, ClientError::Rejected { status: 404, .. }),
                "{cause}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stream.transport(), Transport::Sse);
    assert!(matches!(next_ok(&mut stream).await, Update::Ready { .. }));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Event {
            event: Chat::Cleared,
            ..
        }
    ));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Reconnecting { .. }
    ));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Rejected { status: 404, .. }))
    ));
    assert!(stream.next().await.is_none());
    assert_eq!(stream.transport(), Transport::Sse);
    assert_eq!(
        next_line(&mut requests).await.as_deref(),
        Some("GET /chat/lobby/ws HTTP/1.1")
    );
    assert_eq!(
        next_line(&mut requests).await.as_deref(),
        Some("GET /chat/lobby/sse HTTP/1.1")
    );
    assert_eq!(
        next_line(&mut requests).await.as_deref(),
        Some("GET /chat/lobby/sse?after=5-1 HTTP/1.1")
    );
}

#[tokio::test]
async fn auto_goes_down_the_whole_order_when_routes_are_missing() {
    let (base, mut requests) = scripted_http_server(vec![
        response("426 Upgrade Required", "text/plain", "", "upgrade\n"),
        // A proxy's page in place of the event stream.
        response("200 OK", "text/html", "", "<html>hello</html>"),
        response("405 Method Not Allowed", "text/plain", "", ""),
        poll_answer("8-1", false, &[]),
        bad_request("enough"),
    ])
    .await;
    let config = quick_config().poll_interval(Duration::from_millis(1));
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::Auto)
        .after(Cursor::new(8, 0))
        .stream();
    let mut moves = Vec::new();
    loop {
        match next_ok(&mut stream).await {
            Update::Fallback { from, to, .. } => moves.push((from, to)),
            Update::Ready { cursor } => {
                assert_eq!(cursor, Cursor::new(8, 0));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        moves,
        [
            (Transport::WebSocket, Transport::Sse),
            (Transport::Sse, Transport::LongPoll),
            (Transport::LongPoll, Transport::ShortPoll),
        ]
    );
    assert_eq!(stream.transport(), Transport::ShortPoll);
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Rejected { status: 400, .. }))
    ));
    let mut lines = Vec::new();
    while let Some(line) = next_line(&mut requests).await {
        lines.push(line);
    }
    assert_eq!(
        lines,
        [
            "GET /chat/lobby/ws?after=8-0 HTTP/1.1",
            "GET /chat/lobby/sse?after=8-0 HTTP/1.1",
            "GET /chat/lobby/long-poll?after=8-0&timeout=25&limit=15 HTTP/1.1",
            "GET /chat/lobby/poll?after=8-0&limit=15 HTTP/1.1",
            "GET /chat/lobby/poll?after=8-1&limit=15 HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn auto_ends_on_a_bad_request_without_falling_back() {
    let (base, mut requests) =
        scripted_http_server(vec![bad_request("invalid topic: character ' ' at byte 2")]).await;
    let client = Client::<Chat>::with_config(&base, quick_config()).expect("client");
    let mut stream = client
        .subscribe("no good")
        .transport(Transport::Auto)
        .stream();
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Rejected { status: 400, message })) if message.starts_with("invalid topic")
    ));
    assert!(stream.next().await.is_none());
    assert_eq!(stream.transport(), Transport::WebSocket);
    assert_eq!(
        next_line(&mut requests).await.as_deref(),
        Some("GET /chat/no%20good/ws HTTP/1.1")
    );
    assert!(requests.recv().await.is_none(), "a single request");
}

#[tokio::test]
async fn auto_moves_on_after_transient_failures_and_cycles_until_it_gives_up() {
    let config = ClientConfig::default()
        .initial_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(4))
        .max_retries(Some(9))
        .fallback_after(2)
        .jitter(false);
    let base = format!("http://127.0.0.1:{}", closed_port());
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::Auto)
        .stream();
    let mut seen = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(Update::Reconnecting { attempt, cause, .. }) => {
                assert!(matches!(cause, ClientError::Connect { .. }), "{cause}");
                seen.push(format!("retry {attempt} on {:?}", stream.transport()));
            }
            Ok(Update::Fallback {
                from, to, cause, ..
            }) => {
                assert!(matches!(cause, ClientError::Connect { .. }), "{cause}");
                seen.push(format!("{from:?} -> {to:?}"));
            }
            Err(ClientError::GaveUp { attempts, .. }) => {
                seen.push(format!("gave up after {attempts}"))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "retry 1 on WebSocket",
            "WebSocket -> Sse",
            "retry 3 on Sse",
            "Sse -> LongPoll",
            "retry 5 on LongPoll",
            "LongPoll -> ShortPoll",
            "retry 7 on ShortPoll",
            "ShortPoll -> WebSocket",
            "retry 9 on WebSocket",
            "gave up after 9",
        ]
    );
}

#[cfg(test)]
mod credentials;

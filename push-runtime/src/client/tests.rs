//! Unit tests of the client's API surface: URLs, interpretation of frames,
//! and the reconnect loop against a port where nothing listens and against
//! scripted servers that send canned bytes.

use super::frame::{Frame, Meaning, interpret};
use super::*;
use futures_util::StreamExt;

/// A channel written by hand, as `#[push_channel]` would generate it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Chat {
    Message { from: String, text: String },
    Joined(Who),
    Cleared,
}

/// Internal tagging takes a newtype variant only around a struct or map.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Who {
    name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ChatKind {
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
        "https://x",
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
    for transport in [Transport::Sse, Transport::WebSocket] {
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

/// A scripted server: answers the n-th connection with `responses[n]` and
/// reports each request line it saw.
async fn scripted_http_server(
    responses: Vec<&'static str>,
) -> (String, tokio::sync::mpsc::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (requests, seen) = tokio::sync::mpsc::channel(16);
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
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let _ = requests.send(line).await;
            let _ = socket.write_all(response.as_bytes()).await;
            // Dropping the socket ends the body.
        }
    });
    (base, seen)
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
    let (base, mut requests) = scripted_http_server(vec![first, second]).await;
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
        requests.recv().await.as_deref(),
        Some("GET /chat/lobby/sse?events=message,cleared HTTP/1.1")
    );
    assert_eq!(
        requests.recv().await.as_deref(),
        Some("GET /chat/lobby/sse?after=1-2&events=message,cleared HTTP/1.1")
    );
}

#[tokio::test]
async fn sse_rejects_a_response_that_is_not_an_event_stream() {
    let page = "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\nhi";
    let (base, _requests) = scripted_http_server(vec![page]).await;
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

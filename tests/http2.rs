//! `push_runtime::serve::Server` over HTTP/2 (TLS with ALPN `h2`, and h2c
//! with prior knowledge) and HTTP/1.1 over TLS: every subscription route and
//! publish on one connection, WebSocket over HTTP/2 (RFC 8441), the origin
//! check by `:authority`, and the graceful shutdown.

mod serving;
mod support;

use futures_util::{SinkExt, StreamExt};
use push_runtime::serve::ServeConfig;
use serving::{BodyReader, HttpClient, NAME, Running, TestPki, websocket_over_h2};
use support::PATIENCE;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// HTTP/2 chosen by ALPN over TLS.
    Tls,
    /// HTTP/2 with prior knowledge over plain TCP.
    H2c,
}

/// The next text message of a WebSocket (pings are skipped).
async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a WebSocket message in time")
            .expect("the WebSocket is open")
            .expect("a WebSocket message");
        match message {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

/// A WebSocket over HTTP/2 on a new connection of `mode`.
async fn h2_websocket(
    mode: Mode,
    pki: &TestPki,
    server: &Running,
    path: &str,
    headers: &[(&str, &str)],
) -> (
    u16,
    Option<tokio_tungstenite::WebSocketStream<serving::H2Stream>>,
) {
    let (status, ws, _) = match mode {
        Mode::Tls => {
            let tls = pki.connect(server.addr, &[b"h2"]).await;
            websocket_over_h2(tls, &server.https(path), headers).await
        }
        Mode::H2c => {
            let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            websocket_over_h2(tcp, &server.http(path), headers).await
        }
    };
    (status, ws)
}

async fn client(mode: Mode, pki: &TestPki, server: &Running) -> HttpClient {
    match mode {
        Mode::Tls => HttpClient::tls(pki, server.addr, &[b"h2", b"http/1.1"]).await,
        Mode::H2c => HttpClient::h2c(server.addr).await,
    }
}

fn cursor_of(answer: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(answer).expect("a poll answer");
    value["cursor"].as_str().expect("a cursor").to_owned()
}

/// SSE, forever frame, short and long poll and publish as streams of one
/// HTTP/2 connection, and a WebSocket over HTTP/2 on a second: all live
/// at once, all get the event.
async fn every_route_over_http2(mode: Mode) {
    let pki = TestPki::new();
    let tls = (mode == Mode::Tls).then(|| pki.server_config());
    let server = Running::start(ServeConfig::default(), tls).await;
    let mut client = client(mode, &pki, &server).await;

    let sse = client.send("/t/room/sse", &[], None).await;
    assert_eq!(sse.version(), http::Version::HTTP_2, "{mode:?}");
    assert_eq!(sse.status(), 200);
    let mut sse = BodyReader::new(sse);
    sse.until("event: push.ready").await;

    let frame = client.send("/t/room/iframe", &[], None).await;
    assert_eq!(frame.version(), http::Version::HTTP_2);
    assert_eq!(frame.status(), 200);
    let mut frame = BodyReader::new(frame);
    frame.until("push.ready").await;

    let (status, answer) = client.text("/t/room/poll", &[]).await;
    assert_eq!(status, 200, "{answer}");
    let start = cursor_of(&answer);
    let mut held = client.another_stream();
    let long_path = format!("/t/room/long-poll?after={start}&timeout=20");
    let long = tokio::spawn(async move { held.text(&long_path, &[]).await });

    let (status, ws) = h2_websocket(mode, &pki, &server, "/t/room/ws", &[]).await;
    assert_eq!(status, 200, "extended CONNECT refused");
    let mut ws = ws.expect("a WebSocket over HTTP/2");
    assert!(next_text(&mut ws).await.contains("push.ready"));

    let published = client
        .send("/t/room", &[], Some(r#"{"note":"over h2"}"#))
        .await;
    assert_eq!(published.version(), http::Version::HTTP_2);
    assert_eq!(published.status(), 200);

    sse.until(r#"data: {"note":"over h2"}"#).await;
    frame.until("over h2").await;
    let (status, answer) = tokio::time::timeout(PATIENCE, long)
        .await
        .expect("the long poll answered in time")
        .unwrap();
    assert_eq!(status, 200);
    assert!(answer.contains(r#""data":{"note":"over h2"}"#), "{answer}");
    let (status, answer) = client
        .text(&format!("/t/room/poll?after={start}"), &[])
        .await;
    assert_eq!(status, 200);
    assert!(answer.contains(r#""data":{"note":"over h2"}"#), "{answer}");
    let message = next_text(&mut ws).await;
    assert!(
        message.contains(r#""data":{"note":"over h2"}"#),
        "{message}"
    );

    // The WebSocket answers, too: a close is echoed.
    ws.send(Message::Close(None)).await.unwrap();

    // Two connections: one for the five HTTP routes, one for the WebSocket.
    assert_eq!(server.stats.accepted(), 2);
    assert_eq!(server.stats.http2(), 2);
    server.shut_down().await;
}

#[tokio::test]
async fn every_route_over_http2_with_tls_alpn() {
    every_route_over_http2(Mode::Tls).await;
}

#[tokio::test]
async fn every_route_over_h2c_prior_knowledge() {
    every_route_over_http2(Mode::H2c).await;
}

#[tokio::test]
async fn http1_over_tls_still_works_and_upgrades_websockets() {
    let pki = TestPki::new();
    let server = Running::start(ServeConfig::default(), Some(pki.server_config())).await;

    // ALPN `http/1.1`, and no ALPN at all (the server then looks at the bytes).
    let mut offered = HttpClient::tls(&pki, server.addr, &[b"http/1.1"]).await;
    let sse = offered.send("/t/room/sse", &[], None).await;
    assert_eq!(sse.version(), http::Version::HTTP_11);
    assert_eq!(sse.status(), 200);
    let mut sse = BodyReader::new(sse);
    sse.until("event: push.ready").await;

    let tls = pki.connect(server.addr, &[b"http/1.1"]).await;
    let url = format!("wss://{NAME}:{}/t/room/ws", server.addr.port());
    let (mut ws, response) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("WebSocket upgrade over TLS");
    assert_eq!(response.status(), 101);
    assert!(next_text(&mut ws).await.contains("push.ready"));

    let mut plain = HttpClient::tls(&pki, server.addr, &[]).await;
    let published = plain
        .send("/t/room", &[], Some(r#"{"note":"over h1"}"#))
        .await;
    assert_eq!(published.version(), http::Version::HTTP_11);
    assert_eq!(published.status(), 200);

    sse.until(r#"data: {"note":"over h1"}"#).await;
    assert!(next_text(&mut ws).await.contains("over h1"));
    assert_eq!(server.stats.http2(), 0);
    server.shut_down().await;
}

/// Over HTTP/2 there is no `Host`: the server's own origin is read from
/// `:authority`. A page of that origin is allowed, a foreign one refused,
/// on every route kind (HTTP and WebSocket).
async fn origin_by_authority(mode: Mode) {
    let pki = TestPki::new();
    let tls = (mode == Mode::Tls).then(|| pki.server_config());
    let server = Running::start(ServeConfig::default(), tls).await;
    let own = match mode {
        Mode::Tls => format!("https://{NAME}:{}", server.addr.port()),
        Mode::H2c => format!("http://{}", server.addr),
    };
    let own = own.as_str();
    let mut client = client(mode, &pki, &server).await;

    let (status, body) = client.text("/t/room/poll", &[("origin", own)]).await;
    assert_eq!(status, 200, "own origin {own} over {mode:?}: {body}");
    let (status, body) = client
        .text("/t/room/poll", &[("origin", "https://evil.example")])
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("evil.example"), "{body}");

    let sse = client.send("/t/room/sse", &[("origin", own)], None).await;
    assert_eq!(sse.status(), 200);
    drop(sse);

    let (status, ws) = h2_websocket(mode, &pki, &server, "/t/room/ws", &[("origin", own)]).await;
    assert_eq!(status, 200, "own origin over a WebSocket over HTTP/2");
    drop(ws);
    let (status, ws) = h2_websocket(
        mode,
        &pki,
        &server,
        "/t/room/ws",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
    assert!(ws.is_none());
    server.shut_down().await;
}

#[tokio::test]
async fn origin_over_http2_with_tls_is_judged_by_authority() {
    origin_by_authority(Mode::Tls).await;
}

#[tokio::test]
async fn origin_over_h2c_is_judged_by_authority() {
    origin_by_authority(Mode::H2c).await;
}

/// The shutdown signal (which shuts the hub down) ends every stream with a
/// way to resume, HTTP/2 and HTTP/1.1 alike, and the server returns.
#[tokio::test]
async fn graceful_shutdown_ends_streams_on_both_protocols_and_returns() {
    let pki = TestPki::new();
    let server = Running::start(ServeConfig::default(), None).await;
    let mut h2 = HttpClient::h2c(server.addr).await;
    let sse_h2 = h2.sse_ready("/t/room/sse").await;
    let mut h1 = HttpClient::http1(server.addr).await;
    let sse_h1 = h1.sse_ready("/t/room/sse").await;
    let (mut ws_h1, _) =
        tokio_tungstenite::connect_async(server.http("/t/room/ws").replace("http", "ws"))
            .await
            .unwrap();
    assert!(next_text(&mut ws_h1).await.contains("push.ready"));
    let (_, ws_h2) = h2_websocket(Mode::H2c, &pki, &server, "/t/room/ws", &[]).await;
    let mut ws_h2 = ws_h2.unwrap();
    assert!(next_text(&mut ws_h2).await.contains("push.ready"));
    let stats = server.stats.clone();

    tokio::time::timeout(PATIENCE, server.shut_down())
        .await
        .expect("the server returns once its streams ended");
    assert!(sse_h2.read_to_end().await.contains("event: push.end"));
    assert!(sse_h1.read_to_end().await.contains("event: push.end"));
    for closed in [
        tokio::time::timeout(PATIENCE, ws_h1.next()).await,
        tokio::time::timeout(PATIENCE, ws_h2.next()).await,
    ] {
        match closed.expect("closed in time") {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("expected a close 1001, got {other:?}"),
        }
    }
    assert_eq!(stats.open(), 0);
}

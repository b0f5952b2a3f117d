//! Slow and half-open connections against `push_runtime::serve::Server`:
//! a connection that sends nothing, a request head (or HTTP/2 preface)
//! sent a byte at a time, a TLS handshake that never finishes, an HTTP/2
//! connection that opens no stream, and a flood of them at the connection
//! cap. Each is cut after its (short, configured) deadline; the tests wait
//! for the server to close the socket, bounded by a generous patience.

mod serving;
mod support;

use push_runtime::serve::ServeConfig;
use serving::{HttpClient, Running, TestPki};
use std::time::Duration;
use support::PATIENCE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short for a test, long enough that a loaded machine still answers a
/// well-behaved request well within it.
const DEADLINE: Duration = Duration::from_secs(1);

fn short_deadlines() -> ServeConfig {
    ServeConfig::default()
        .request_head_timeout(DEADLINE)
        .tls_handshake_timeout(DEADLINE)
}

/// Reads until the server closes the connection (end of stream or reset);
/// returns what it sent before.
async fn until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let read = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("the server closes the connection in time");
        match read {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `bytes` one at a time, `pause` apart, until the server closes the
/// connection; returns how many were sent and what the server answered.
async fn dribble(tcp: &mut TcpStream, bytes: &[u8], pause: Duration) -> (usize, Vec<u8>) {
    let mut buf = [0; 4096];
    let patience = tokio::time::Instant::now() + PATIENCE;
    for (sent, byte) in bytes.iter().enumerate() {
        if tcp.write_all(&[*byte]).await.is_err() {
            return (sent, Vec::new());
        }
        tokio::select! {
            read = tcp.read(&mut buf) => {
                let answer = match read {
                    Ok(n) => buf[..n].to_vec(),
                    Err(_) => Vec::new(),
                };
                return (sent + 1, answer);
            }
            () = tokio::time::sleep(pause) => {}
        }
        assert!(tokio::time::Instant::now() < patience, "never cut");
    }
    (bytes.len(), until_closed(tcp).await)
}

/// A request head of about 300 bytes: 3 s at 10 ms a byte, three times the deadline.
fn long_head() -> Vec<u8> {
    format!(
        "GET /t/room/poll HTTP/1.1\r\nhost: localhost\r\nx-padding: {}\r\n\r\n",
        "a".repeat(240)
    )
    .into_bytes()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_deadline() {
    let server = Running::start(short_deadlines(), None).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert!(until_closed(&mut idle).await.is_empty());
    assert_eq!(server.stats.timed_out(), 1);
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_while_others_are_served() {
    let server = Running::start(short_deadlines(), None).await;
    let head = long_head();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let dribbling = tokio::spawn(async move {
        let cut = dribble(&mut slow, &head, Duration::from_millis(10)).await;
        (cut, head.len())
    });
    // Another connection is served meanwhile.
    let mut other = HttpClient::http1(server.addr).await;
    let (status, _) = other.text("/t/room/poll", &[]).await;
    assert_eq!(status, 200);

    let ((sent, answer), len) = dribbling.await.unwrap();
    assert!(sent < len, "the whole head ({len} bytes) got through");
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "a slow head was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    // (The other connection, idle since its answer, may be cut too.)
    assert!(server.stats.timed_out() >= 1);
}

#[tokio::test]
async fn an_http2_preface_sent_a_byte_at_a_time_is_cut() {
    let server = Running::start(short_deadlines(), None).await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    // 24 bytes at 150 ms: 3.6 s, more than three times the deadline.
    let (sent, _) = dribble(&mut slow, preface, Duration::from_millis(150)).await;
    assert!(sent < preface.len(), "the whole preface got through");
    assert_eq!(server.stats.timed_out(), 1);
}

#[tokio::test]
async fn an_http2_connection_that_opens_no_stream_is_closed() {
    let server = Running::start(short_deadlines(), None).await;
    let mut quiet = TcpStream::connect(server.addr).await.unwrap();
    // The preface and an empty SETTINGS frame: a valid HTTP/2 connection.
    quiet
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    until_closed(&mut quiet).await;
    assert_eq!(server.stats.http2(), 1);
    assert_eq!(server.stats.timed_out(), 1);
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_deadline() {
    let server = Running::start(short_deadlines(), None).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /t/room/poll HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The answer, then the close once no next request came in time.
    let received = until_closed(&mut tcp).await;
    assert!(received.starts_with(b"HTTP/1.1 200"), "{received:?}");
    assert_eq!(server.stats.timed_out(), 1);
}

#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_cut() {
    let pki = TestPki::new();
    let server = Running::start(short_deadlines(), Some(pki.server_config())).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    // The first bytes of a ClientHello record, and no more.
    partial
        .write_all(b"\x16\x03\x01\x02\x00\x01")
        .await
        .unwrap();
    until_closed(&mut silent).await;
    until_closed(&mut partial).await;
    assert_eq!(server.stats.timed_out(), 2);
    // A real client is served meanwhile and after.
    let mut client = HttpClient::tls(&pki, server.addr, &[b"h2"]).await;
    assert_eq!(client.text("/t/room/poll", &[]).await.0, 200);
}

/// At the connection cap, stalled connections hold the server only until
/// their deadline: a real request waits in the backlog, then is served.
#[tokio::test]
async fn a_flood_of_stalled_connections_holds_the_server_only_until_their_deadline() {
    let cap = 4;
    let server = Running::start(short_deadlines().max_connections(cap), None).await;
    let mut stalled = Vec::new();
    for _ in 0..2 * cap {
        stalled.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut client = HttpClient::http1(server.addr).await;
    let (status, _) = client.text("/t/room/poll", &[]).await;
    assert_eq!(status, 200);
    assert!(
        server.stats.timed_out() >= cap as u64,
        "served before the stalled connections were cut"
    );
    assert!(server.stats.open() <= cap);
    for mut tcp in stalled {
        until_closed(&mut tcp).await;
    }
    // (The client's own connection, idle since its answer, may be cut too.)
    assert!(server.stats.timed_out() >= 2 * cap as u64);
}

/// The first-request deadline ends with the first request: streams opened
/// in time, over HTTP/1.1 and HTTP/2, still receive events after it passed
/// (a silent connection opened after them, cut at its own deadline, shows
/// that theirs has passed too).
#[tokio::test]
async fn a_stream_opened_in_time_outlives_the_first_request_deadline() {
    let server = Running::start(short_deadlines(), None).await;
    let mut h1 = HttpClient::http1(server.addr).await;
    let mut sse_h1 = h1.sse_ready("/t/room/sse").await;
    let mut h2 = HttpClient::h2c(server.addr).await;
    let mut sse_h2 = h2.sse_ready("/t/room/sse").await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    until_closed(&mut silent).await;
    assert_eq!(
        server.stats.timed_out(),
        1,
        "a stream was cut at the deadline"
    );

    let mut publisher = h2.another_stream();
    let published = publisher
        .send("/t/room", &[], Some(r#"{"note":"after the deadline"}"#))
        .await;
    assert_eq!(published.status(), 200);
    sse_h1.until("after the deadline").await;
    sse_h2.until("after the deadline").await;
    assert_eq!(server.stats.timed_out(), 1);
    assert_eq!(server.stats.open(), 2);
}

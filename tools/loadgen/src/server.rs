//! The servers the load generator measures, each run as its own process
//! (`loadgen serve …`) so that its CPU time and memory can be read from `/proc`:
//!
//! - `push`: the framework, with the chat example's channel and publish route;
//! - `baseline`: a hand-written axum + tokio server with no framework, the
//!   reference the targets are measured against (SSE writes everything pending
//!   in one chunk, WebSocket sends one message per event, as such servers do;
//!   short and long polls answer from a list of every event published);
//! - `floor`: plain sockets: one `write()` of `batch` events to each of
//!   `connections` sockets per round, the physical floor of a delivery.

// The chat example's event type, the one `push` serves (shared, not copied).
#[path = "../../../examples/chat/event.rs"]
mod event;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use event::ChatEvent;
use push_runtime::serve::{ServeConfig, Server};
use push_runtime::{Backpressure, ChannelRouter, Hub, HubConfig, Limits, PublishRequest, Refusal};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// Prints the address a server listens on, the line the load generator waits for.
fn announce(listener: &tokio::net::TcpListener) -> std::io::Result<()> {
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()
}

async fn allow(request: PublishRequest<ChatEvent>) -> Result<ChatEvent, Refusal> {
    Ok(request.event)
}

/// The framework with the chat channel; history large enough that bursts of
/// a few thousand events never overtake a subscriber, and connection limits
/// above the benchmark's 10,000 subscribers of one topic (the defaults are
/// 10,000 in all and 5,000 per topic).
///
/// `serve`: served by `push_runtime::serve::Server`, which speaks HTTP/1.1
/// and h2c on one port (the `--http2` runs), with room for every stream of a
/// run on few connections.
///
/// `backpressure`: publishes paced ([`Backpressure`]).
pub async fn push(o: &crate::Options) -> std::io::Result<()> {
    let (addr, hyper, serve) = (o.addr.as_str(), o.hyper, o.serve);
    let mut config = HubConfig::default();
    config.history_len = o.history;
    config.backpressure = o.backpressure.map(|ahead| {
        Backpressure::new()
            .ahead(ahead)
            .max_wait(std::time::Duration::from_millis(o.backpressure_wait_ms))
    });
    let hub = Hub::<ChatEvent>::with_config(config);
    let limits = Limits::default()
        .max_connections(50_000)
        .max_connections_per_topic(50_000);
    let app: Router = ChannelRouter::new(hub)
        .limits(limits)
        .publish(allow)
        .into_router();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    announce(&listener)?;
    if serve {
        let config = ServeConfig::default()
            .max_connections(60_000)
            .http2_max_concurrent_streams(20_000);
        Server::new(listener, app).config(config).run().await;
        return Ok(());
    }
    if hyper {
        // `serve push --hyper`: the router served by hyper-util directly,
        // with each response's pieces copied into one buffer per write
        // (`writev(false)`) instead of axum::serve's defaults.
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder.http1().writev(false);
        // Its routes prepared once, as `into_make_service` does.
        let app: Router = app.with_state(());
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, or a connection reset while
                    // queued: the listener itself is fine.
                    eprintln!("accept: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let builder = builder.clone();
            tokio::spawn(async move {
                let _ = builder
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    }
    axum::serve(listener.tap_io(nodelay), app.into_make_service()).await
}

/// Push servers send small writes as events happen: Nagle's algorithm must
/// not hold them back for an ACK.
fn nodelay(stream: &mut tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// The no-framework baseline: one broadcast channel per process (one topic)
/// for SSE and WebSocket, and for polls every event of the run in a list
/// (a benchmark server: nothing is ever trimmed) with a `watch` of its length.
pub async fn baseline(addr: &str) -> std::io::Result<()> {
    let (sender, _) = broadcast::channel::<Bytes>(65536);
    let state = Baseline {
        sender,
        log: Arc::new(Mutex::new(Vec::new())),
        published: Arc::new(watch::channel(0).0),
    };
    let app = Router::new()
        .route("/chat/{topic}", post(baseline_publish))
        .route("/chat/{topic}/sse", get(baseline_sse))
        .route("/chat/{topic}/ws", get(baseline_ws))
        .route("/chat/{topic}/poll", get(baseline_poll))
        .route("/chat/{topic}/long-poll", get(baseline_long_poll))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    announce(&listener)?;
    axum::serve(listener.tap_io(nodelay), app.into_make_service()).await
}

#[derive(Clone)]
struct Baseline {
    sender: broadcast::Sender<Bytes>,
    log: Arc<Mutex<Vec<Bytes>>>,
    published: Arc<watch::Sender<u64>>,
}

/// Takes the event JSON as is (the framework's route also parses and re-encodes).
async fn baseline_publish(
    State(state): State<Baseline>,
    Path(_topic): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    let count = {
        let mut log = state.log.lock().unwrap_or_else(|e| e.into_inner());
        log.push(body.clone());
        log.len() as u64
    };
    state.published.send_replace(count);
    let _ = state.sender.send(body);
    "{}"
}

/// What a baseline poll asks: `after=<n>` (events are numbered from 1) and
/// `timeout=<s>` for long polls.
#[derive(serde::Deserialize)]
struct PollQuery {
    after: Option<u64>,
    timeout: Option<u64>,
}

/// The most events in one poll answer (as the framework's default).
const POLL_BATCH: u64 = 100;

/// `{"cursor":"<n>","more":…,"events":[…]}` with the events after `after`.
fn poll_answer(state: &Baseline, after: u64) -> axum::response::Response {
    let log = state.log.lock().unwrap_or_else(|e| e.into_inner());
    let total = log.len() as u64;
    let after = after.min(total);
    let end = total.min(after + POLL_BATCH);
    let mut body = format!(r#"{{"cursor":"{end}","more":{},"events":["#, end < total).into_bytes();
    for (i, data) in log[after as usize..end as usize].iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(
            format!(
                r#"{{"cursor":"{}","event":"message","data":"#,
                after + i as u64 + 1
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    (
        [
            ("content-type", "application/json".to_owned()),
            ("etag", format!("\"{end}\"")),
        ],
        body,
    )
        .into_response()
}

/// A short poll: `304` when `If-None-Match` names the current length.
async fn baseline_poll(
    State(state): State<Baseline>,
    Query(query): Query<PollQuery>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let total = *state.published.borrow();
    let etag = format!("\"{total}\"");
    if headers
        .get("if-none-match")
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (axum::http::StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    poll_answer(&state, query.after.unwrap_or(total))
}

/// A long poll: answered at once when something is new after `after`,
/// otherwise when the next event arrives or `timeout` (25 s at most) ends.
async fn baseline_long_poll(
    State(state): State<Baseline>,
    Query(query): Query<PollQuery>,
) -> axum::response::Response {
    let mut published = state.published.subscribe();
    let after = query
        .after
        .unwrap_or_else(|| *published.borrow_and_update());
    let timeout = std::time::Duration::from_secs(query.timeout.unwrap_or(25).min(25));
    let _ = tokio::time::timeout(timeout, published.wait_for(|&total| total > after)).await;
    poll_answer(&state, after)
}

fn sse_block(seq: u64, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("id: {seq}\nevent: message\ndata: ").as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

async fn baseline_sse(State(state): State<Baseline>) -> impl IntoResponse {
    let receiver = state.sender.subscribe();
    let ready = Bytes::from_static(b"event: push.ready\ndata: {}\n\n");
    let first = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(ready) });
    let rest =
        futures_util::stream::unfold((receiver, 0u64), |(mut receiver, mut seq)| async move {
            let first = receiver.recv().await.ok()?;
            let mut out = Vec::with_capacity(256);
            seq += 1;
            sse_block(seq, &first, &mut out);
            // Everything already pending goes in the same chunk.
            while let Ok(next) = receiver.try_recv() {
                seq += 1;
                sse_block(seq, &next, &mut out);
            }
            Some((Ok(Bytes::from(out)), (receiver, seq)))
        });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(futures_util::StreamExt::chain(first, rest)),
    )
}

async fn baseline_ws(
    State(state): State<Baseline>,
    upgrade: WebSocketUpgrade,
) -> impl IntoResponse {
    let receiver = state.sender.subscribe();
    upgrade.on_upgrade(move |socket| baseline_ws_pump(socket, receiver))
}

async fn baseline_ws_pump(mut socket: WebSocket, mut receiver: broadcast::Receiver<Bytes>) {
    let ready = r#"{"cursor":"0","event":"push.ready","data":{}}"#;
    if socket.send(Message::Text(ready.into())).await.is_err() {
        return;
    }
    let mut seq = 0u64;
    while let Ok(data) = receiver.recv().await {
        seq += 1;
        let mut text = format!(r#"{{"cursor":"{seq}","event":"message","data":"#);
        text.push_str(&String::from_utf8_lossy(&data));
        text.push('}');
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
}

/// The floor: accepts `connections`, waits for a line on stdin, then writes
/// `rounds` times `batch` events of `size` bytes to each, one `write()` per
/// socket per round; exits when stdin closes.
pub fn floor(
    addr: &str,
    connections: usize,
    rounds: usize,
    batch: usize,
    size: usize,
    epoll: bool,
) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let mut sockets = Vec::with_capacity(connections);
    while sockets.len() < connections {
        let (socket, _) = listener.accept()?;
        socket.set_nodelay(true)?;
        sockets.push(socket);
    }
    let mut line = String::new();
    let stdin = std::io::stdin();
    stdin.lock().read_line(&mut line)?;
    let payload = vec![b'x'; size * batch];
    if epoll {
        // The same writes from sockets registered with tokio's I/O driver
        // (epoll, edge-triggered, read and write interest: what every tokio
        // server's sockets are), which drains the readiness events the
        // writes' acknowledgements raise once per round.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        runtime.block_on(async {
            let mut streams = Vec::with_capacity(sockets.len());
            for socket in sockets {
                socket.set_nonblocking(true)?;
                streams.push(tokio::net::TcpStream::from_std(socket)?);
            }
            for _ in 0..rounds {
                for stream in &streams {
                    let mut written = 0;
                    while written < payload.len() {
                        match stream.try_write(&payload[written..]) {
                            Ok(n) => written += n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                stream.writable().await?;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
            Ok::<_, std::io::Error>(())
        })?;
    } else {
        for _ in 0..rounds {
            for socket in &mut sockets {
                socket.write_all(&payload)?;
            }
        }
    }
    println!("done");
    std::io::stdout().flush()?;
    line.clear();
    stdin.lock().read_line(&mut line)?;
    Ok(())
}

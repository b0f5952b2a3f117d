//! One accepted connection: the TLS handshake, the choice of HTTP/1.1 or
//! HTTP/2, the first-request deadline, and its part in the shutdown.

use super::config::ServeConfig;
use crate::stream::woken::Woken;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

/// The client connection preface of HTTP/2 (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where the server is in its life, as its connections see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Serving,
    /// Finish the requests under way, take no new ones.
    Draining,
    /// The shutdown timeout passed: close now.
    Closing,
}

/// Counters of a [`Server`](super::Server)'s connections, cheap to clone
/// and read while it runs.
#[derive(Debug, Clone, Default)]
pub struct ConnectionStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    accepted: AtomicU64,
    open: AtomicUsize,
    http2: AtomicU64,
    timed_out: AtomicU64,
}

impl ConnectionStats {
    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Connections that spoke HTTP/2 (by ALPN or with prior knowledge).
    pub fn http2(&self) -> u64 {
        self.inner.http2.load(Ordering::Relaxed)
    }

    /// Connections closed because their TLS handshake or a request head
    /// did not arrive in time (see [`ServeConfig`](super::ServeConfig)).
    pub fn timed_out(&self) -> u64 {
        self.inner.timed_out.load(Ordering::Relaxed)
    }

    pub(crate) fn count_accept(&self) {
        self.inner.accepted.fetch_add(1, Ordering::Relaxed);
        self.inner.open.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) config: ServeConfig,
    pub(crate) stats: ConnectionStats,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Shared {
    pub(crate) fn new(router: Router, config: ServeConfig, stats: ConnectionStats) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            // Each response's pieces copied into one buffer per write rather
            // than a vectored write: fewer instructions per SSE delivery
            // (README, "Performance").
            .writev(false)
            .timer(TokioTimer::new())
            .header_read_timeout(config.request_head_timeout);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.http2_max_concurrent_streams)
            .keep_alive_interval(config.http2_keep_alive_interval)
            .keep_alive_timeout(config.http2_keep_alive_timeout)
            // WebSocket over HTTP/2 (RFC 8441).
            .enable_connect_protocol();
        Self {
            // Its routes prepared once, as `into_make_service` does: a
            // `Router` called as is rebuilds them for every connection.
            router: router.with_state(()),
            config,
            stats,
            #[cfg(feature = "tls")]
            tls: None,
            http1,
            http2,
        }
    }
}

/// Decrements the open count when the connection's task ends, however.
struct OpenGuard(ConnectionStats);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.inner.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Serves one accepted connection to its end (counted by `count_accept`).
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    _slot: OwnedSemaphorePermit,
) {
    let _open = OpenGuard(shared.stats.clone());
    let accepted = Instant::now();
    // Events are small writes that must not wait for an ACK.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    #[cfg(feature = "tls")]
    if let Some(acceptor) = shared.tls.clone() {
        let deadline = accepted + shared.config.tls_handshake_timeout;
        let handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp));
        let tls = tokio::select! {
            tls = handshake => tls,
            () = until(phase.clone(), Phase::Draining) => return,
        };
        let tls = match tls {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                shared.stats.inner.timed_out.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let alpn = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => Some(Protocol::Http2),
            Some(_) => Some(Protocol::Http1),
            None => None,
        };
        return serve_http(tls, alpn, peer, accepted, &shared, phase).await;
    }
    serve_http(tcp, None, peer, accepted, &shared, phase).await;
}

/// Serves HTTP on `io`: the protocol negotiated by ALPN, or else the one
/// its first bytes show (HTTP/2 with prior knowledge sends the preface).
async fn serve_http<I>(
    mut io: I,
    alpn: Option<Protocol>,
    peer: SocketAddr,
    accepted: Instant,
    shared: &Shared,
    phase: watch::Receiver<Phase>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let deadline = accepted + shared.config.request_head_timeout;
    let (protocol, prefix) = match alpn {
        Some(protocol) => (protocol, Prefix::default()),
        None => {
            let detected = tokio::select! {
                detected = tokio::time::timeout_at(deadline, detect(&mut io)) => detected,
                () = until(phase.clone(), Phase::Draining) => return,
            };
            match detected {
                Ok(Ok(Some(found))) => found,
                Ok(Ok(None)) => return,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "connection failed before its first request");
                    return;
                }
                Err(_) => {
                    shared.stats.inner.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "no request in time: closing the connection");
                    return;
                }
            }
        }
    };
    let io = TokioIo::new(Prefixed { prefix, io });
    let requested = Arc::new(AtomicBool::new(false));
    let service = ConnService {
        router: shared.router.clone(),
        peer,
        requested: Arc::clone(&requested),
    };
    let stats = &shared.stats;
    match protocol {
        Protocol::Http1 => {
            let conn = shared.http1.serve_connection(io, service).with_upgrades();
            drive(conn, deadline, &requested, phase, peer, stats).await;
        }
        Protocol::Http2 => {
            stats.inner.http2.fetch_add(1, Ordering::Relaxed);
            let conn = shared.http2.serve_connection(io, service);
            drive(conn, deadline, &requested, phase, peer, stats).await;
        }
    }
}

/// Reads the first bytes until they show the protocol: `None` if the peer
/// closed first. At most 24 bytes are read, all given back in the prefix.
async fn detect<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Option<(Protocol, Prefix)>> {
    let mut prefix = Prefix::default();
    while prefix.len < H2_PREFACE.len() {
        let read = io.read(&mut prefix.bytes[prefix.len..]).await?;
        if read == 0 {
            return Ok(None);
        }
        prefix.len += read;
        if prefix.bytes[..prefix.len] != H2_PREFACE[..prefix.len] {
            return Ok(Some((Protocol::Http1, prefix)));
        }
    }
    Ok(Some((Protocol::Http2, prefix)))
}

/// What hyper's connections have in common for [`drive`].
trait GracefulConnection: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

type Io<I> = TokioIo<Prefixed<I>>;

impl<I> GracefulConnection for http1::UpgradeableConnection<Io<I>, ConnService>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I> GracefulConnection for http2::Connection<Io<I>, ConnService, TokioExecutor>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// What ended one wait of [`drive`].
enum Woke {
    /// The connection ended.
    Ended(Result<(), hyper::Error>),
    /// The first-request deadline passed.
    Deadline,
    /// The server's phase changed (`false`: the server is gone).
    Phase(bool),
}

/// Runs `conn` to its end: closed if no request came by `deadline`, shut
/// down gracefully when the server drains, dropped when it closes.
///
/// A streaming connection is woken for each event it writes, so what this
/// loop looks at besides the connection costs every delivery; with 10,000
/// connections none of a connection's own memory is still in cache when it
/// is woken, and each line of it read is a cache miss. So the deadline's
/// sleep is polled only once it woke the task ([`Woken`]), and only until
/// the first request came (read from `requested` while waiting, then never
/// again); the phase's `changed` is polled only when a receiver of the
/// server's phase, `probe`, sees a new value, which reads the channel's
/// state shared by every connection (in cache) instead of a flag of this
/// connection's. Polling both on each wakeup cost an SSE delivery about
/// 230 instructions (`.ci/callgrind-delivery sse 10000 20`, 10,000
/// subscribers); a flag of their own each instead of `requested` and
/// `probe`, 1.4 more cache misses per delivery at 10,000 subscribers and
/// 2.3 at 1,000 (callgrind's cache simulation with a 2 MiB last level).
async fn drive<F: GracefulConnection>(
    conn: F,
    deadline: Instant,
    requested: &AtomicBool,
    mut phase: watch::Receiver<Phase>,
    peer: SocketAddr,
    stats: &ConnectionStats,
) {
    let mut conn = std::pin::pin!(conn);
    let first_request = tokio::time::sleep_until(deadline);
    let mut first_request = std::pin::pin!(first_request);
    let deadline_woke = Woken::new();
    let mut waiting = true;
    let mut draining = false;
    if *phase.borrow_and_update() != Phase::Serving {
        conn.as_mut().graceful_shutdown();
        draining = true;
    }
    let mut probe = phase.clone();
    loop {
        let woke = {
            // Seen by `probe`: a change from here on makes `has_changed` true.
            probe.borrow_and_update();
            let changed = phase.changed();
            let mut changed = std::pin::pin!(changed);
            let mut first_poll = true;
            std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Woke::Ended(result));
                }
                if waiting {
                    if requested.load(Ordering::Acquire) {
                        // The deadline no longer matters (see `Woke::Deadline`).
                        waiting = false;
                    } else if deadline_woke
                        .poll(cx, |cx| first_request.as_mut().poll(cx))
                        .is_ready()
                    {
                        return Poll::Ready(Woke::Deadline);
                    }
                }
                // Polled once to register, then when the phase moved (or
                // its sender is gone).
                if std::mem::take(&mut first_poll) || probe.has_changed().unwrap_or(true) {
                    return changed
                        .as_mut()
                        .poll(cx)
                        .map(|changed| Woke::Phase(changed.is_ok()));
                }
                Poll::Pending
            })
            .await
        };
        match woke {
            Woke::Ended(result) => {
                if let Err(error) = result {
                    if error.is_timeout() {
                        // An HTTP/1.1 request head that did not come in time.
                        stats.inner.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            Woke::Deadline => {
                waiting = false;
                if !requested.load(Ordering::Acquire) {
                    stats.inner.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "no request in time: closing the connection");
                    return;
                }
            }
            Woke::Phase(changed) => {
                let now = if changed {
                    *phase.borrow_and_update()
                } else {
                    Phase::Closing
                };
                match now {
                    Phase::Serving => {}
                    Phase::Draining if !draining => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Phase::Draining => {}
                    Phase::Closing => return,
                }
            }
        }
    }
}

/// Waits until the server's phase is at least `phase` (or the server is gone).
async fn until(mut receiver: watch::Receiver<Phase>, phase: Phase) {
    let reached = |now: &Phase| match phase {
        Phase::Serving => true,
        Phase::Draining => *now != Phase::Serving,
        Phase::Closing => *now == Phase::Closing,
    };
    let _ = receiver.wait_for(reached).await;
}

/// The router as hyper calls it on one connection: marks that a request
/// came, and gives handlers the peer's address (`ConnectInfo<SocketAddr>`).
#[derive(Clone)]
pub(crate) struct ConnService {
    router: Router,
    peer: SocketAddr,
    requested: Arc<AtomicBool>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.requested.store(true, Ordering::Release);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        // A `Router` is always ready; its clone is a reference count.
        tower_service::Service::call(&mut self.router.clone(), request)
    }
}

/// The bytes read to tell the protocol, given back before the rest.
#[derive(Debug, Default)]
struct Prefix {
    bytes: [u8; 24],
    /// How many were read.
    len: usize,
    /// How many were given back.
    taken: usize,
}

/// `io` with the bytes already read from it put back in front.
struct Prefixed<I> {
    prefix: Prefix,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Prefix { bytes, len, taken } = &mut this.prefix;
        if *taken < *len {
            let n = (*len - *taken).min(buf.remaining());
            buf.put_slice(&bytes[*taken..*taken + n]);
            *taken += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

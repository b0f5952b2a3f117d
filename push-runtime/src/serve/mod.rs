//! Serving an app: [`Server`] accepts connections and speaks HTTP/1.1 and
//! HTTP/2 on one port, over plain TCP or TLS, with deadlines on peers that
//! stall and a graceful shutdown.
//!
//! What it does that `axum::serve` does not (and why the examples use it):
//!
//! - **HTTP/2** beside HTTP/1.1: over TLS the client picks by ALPN (`h2`,
//!   `http/1.1`); over plain TCP an HTTP/2 client with prior knowledge
//!   (h2c) is recognised by its preface. Browsers open at most 6 HTTP/1.1
//!   connections per server, so a page with more streams than that needs
//!   HTTP/2, where every stream shares one connection. WebSocket works over
//!   both (over HTTP/2 by extended `CONNECT`, RFC 8441).
//! - **TLS** (feature `tls`): rustls with the ring provider, [`TlsConfig`].
//! - **Deadlines** ([`ServeConfig`]): a TLS handshake, and a connection's
//!   first request, must finish within a set time of the accept, and each
//!   later HTTP/1.1 request head within a set time of the previous answer;
//!   a connection that sends nothing, or a request a byte at a time, is
//!   closed then. Open connections are capped; at the cap the server stops
//!   accepting until one closes, so a flood of stalled connections holds
//!   the server at most for those deadlines.
//! - **Accept errors** (no file descriptor left) are logged and retried
//!   after a pause, never a busy loop, never the end of the server.
//! - `TCP_NODELAY` on every connection, and `ConnectInfo<SocketAddr>` in
//!   every request's extensions.
//!
//! ```no_run
//! # #[push_runtime::push_channel(path = "/chat")]
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! # enum ChatEvent { Joined(String) }
//! use push_runtime::serve::{ServeConfig, Server};
//! use push_runtime::Hub;
//! use std::time::Duration;
//!
//! # async fn run() -> std::io::Result<()> {
//! let hub = Hub::<ChatEvent>::new();
//! let app = axum::Router::new().merge(ChatEvent::router(&hub));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! Server::new(listener, app)
//!     .config(ServeConfig::default().request_head_timeout(Duration::from_secs(10)))
//!     .run_until(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         // Streams end with a resume cursor, so connections can close.
//!         hub.shutdown();
//!     })
//!     .await;
//! # Ok(())
//! # }
//! ```

mod config;
mod conn;
#[cfg(feature = "tls")]
mod tls;

pub use config::{
    DEFAULT_ACCEPT_ERROR_BACKOFF, DEFAULT_HTTP2_KEEP_ALIVE, DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_OPEN_CONNECTIONS, DEFAULT_REQUEST_HEAD_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT, ServeConfig,
};
pub use conn::ConnectionStats;
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsError};

use axum::Router;
use conn::{Phase, Shared};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, watch};

/// Serves an axum app (e.g. a channel's routes) on a listener: HTTP/1.1
/// and HTTP/2, optionally TLS, with the deadlines of a [`ServeConfig`].
/// See the [module](self) for what it does.
pub struct Server {
    listener: TcpListener,
    router: Router,
    config: ServeConfig,
    stats: ConnectionStats,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Server");
        debug
            .field("listener", &self.listener)
            .field("config", &self.config);
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls.is_some());
        debug.finish_non_exhaustive()
    }
}

impl Server {
    /// Serves `router` on `listener`, with the default [`ServeConfig`].
    pub fn new(listener: TcpListener, router: Router) -> Self {
        Self {
            listener,
            router,
            config: ServeConfig::default(),
            stats: ConnectionStats::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Binds `addr` and serves `router` there.
    pub async fn bind(addr: impl ToSocketAddrs, router: Router) -> io::Result<Self> {
        Ok(Self::new(TcpListener::bind(addr).await?, router))
    }

    /// Deadlines and limits of the connections.
    pub fn config(mut self, config: ServeConfig) -> Self {
        self.config = config;
        self
    }

    /// Serves HTTPS with this certificate (ALPN `h2` and `http/1.1`)
    /// instead of plain HTTP.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The address the server listens on (e.g. the port picked for `:0`).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Counters of the server's connections, readable while it runs.
    pub fn stats(&self) -> ConnectionStats {
        self.stats.clone()
    }

    /// Serves until the process ends.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// Serves until `signal` completes, then shuts down gracefully: stops
    /// accepting, lets every connection finish the requests under way
    /// (HTTP/2 connections get a `GOAWAY`) and returns once all are closed,
    /// or after [`ServeConfig::shutdown_timeout`], closing those left.
    ///
    /// Streams (SSE, forever frame, WebSocket, held long polls) end only
    /// when their hub tells them to: call [`Hub::shutdown`](crate::Hub::shutdown)
    /// in `signal` (as the module's example does), and they end at once
    /// with a way to resume. A WebSocket over HTTP/1.1 has left its
    /// connection (it was upgraded): it is not waited for, only ended by
    /// the hub.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send) {
        #[cfg_attr(
            not(feature = "tls"),
            expect(unused_mut, reason = "set below with TLS")
        )]
        let mut shared = Shared::new(self.router, self.config, self.stats);
        #[cfg(feature = "tls")]
        {
            shared.tls = self.tls.as_ref().map(TlsConfig::acceptor);
        }
        accept_loop(self.listener, Arc::new(shared), signal).await;
    }
}

/// Where connections come from: a `TcpListener`, or in tests one that fails.
trait Accept: Send {
    fn accept(&mut self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    fn accept(&mut self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

/// Whether an accept error concerns only the connection being accepted
/// (the peer gave up first), so the next accept may follow at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn accept_loop<L: Accept>(
    mut listener: L,
    shared: Arc<Shared>,
    signal: impl Future<Output = ()> + Send,
) {
    let mut signal = std::pin::pin!(signal);
    let (phase, watching) = watch::channel(Phase::Serving);
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    loop {
        // At the connection limit, wait for a slot before accepting: new
        // connections wait in the kernel's backlog meanwhile.
        let slot = tokio::select! {
            () = signal.as_mut() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            () = signal.as_mut() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                shared.stats.count_accept();
                tokio::spawn(conn::serve(
                    tcp,
                    peer,
                    Arc::clone(&shared),
                    watching.clone(),
                    slot,
                ));
            }
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: retrying at once would spin.
                let pause = shared.config.accept_error_backoff;
                tracing::warn!(%error, ?pause, "accepting a connection failed; retrying after a pause");
                tokio::select! {
                    () = signal.as_mut() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    drop(listener);
    drop(watching);
    tracing::info!(
        open = shared.stats.open(),
        "stopped accepting: connections finish their requests"
    );
    let _ = phase.send(Phase::Draining);
    let drained = tokio::time::timeout(shared.config.shutdown_timeout, phase.closed()).await;
    if drained.is_err() {
        tracing::info!(
            open = shared.stats.open(),
            "shutdown timeout: closing the connections left"
        );
        let _ = phase.send(Phase::Closing);
        phase.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A listener whose every accept fails as when file descriptors run out.
    struct Exhausted(Arc<AtomicUsize>);

    impl Accept for Exhausted {
        fn accept(&mut self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err(io::Error::from_raw_os_error(24))) // EMFILE
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_pause_and_do_not_end_the_server() {
        let calls = Arc::new(AtomicUsize::new(0));
        let config = ServeConfig::default().accept_error_backoff(Duration::from_millis(100));
        let shared = Arc::new(Shared::new(
            Router::new(),
            config,
            ConnectionStats::default(),
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(accept_loop(Exhausted(Arc::clone(&calls)), shared, async {
            let _ = stopped.await;
        }));
        // One virtual second: about ten tries, not millions.
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        let tries = calls.load(Ordering::SeqCst);
        assert!((10..=12).contains(&tries), "{tries} accepts in 1 s");
        assert!(!server.is_finished(), "accept errors ended the server");
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[test]
    fn a_refused_peer_is_not_a_resource_error() {
        assert!(is_connection_error(
            &io::ErrorKind::ConnectionAborted.into()
        ));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(24)));
    }
}

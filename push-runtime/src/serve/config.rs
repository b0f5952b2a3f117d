//! [`ServeConfig`]: the deadlines and limits of the connections a
//! [`Server`](super::Server) accepts.

use std::time::Duration;

/// Default [`ServeConfig::tls_handshake_timeout`]: 10 s.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ServeConfig::request_head_timeout`]: 15 s.
pub const DEFAULT_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// Default [`ServeConfig::max_connections`]: 10,000.
pub const DEFAULT_MAX_OPEN_CONNECTIONS: usize = 10_000;
/// Default [`ServeConfig::http2_max_concurrent_streams`]: 256.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default [`ServeConfig::http2_keep_alive`] interval and timeout: 20 s each.
pub const DEFAULT_HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Default [`ServeConfig::shutdown_timeout`]: 20 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`ServeConfig::accept_error_backoff`]: 100 ms.
pub const DEFAULT_ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Deadlines and limits of a [`Server`](super::Server)'s connections.
///
/// Each one bounds what a peer that connects and then stalls (on purpose
/// or not) can hold:
///
/// | setting | default | what happens |
/// |---|---|---|
/// | [`tls_handshake_timeout`](Self::tls_handshake_timeout) | 10 s | a TLS handshake not finished by then: the connection is closed |
/// | [`request_head_timeout`](Self::request_head_timeout) | 15 s | no complete first request (HTTP/1.1 head, or HTTP/2 `HEADERS`) within this time of the accept (TLS handshake included): closed. On HTTP/1.1 every later request head too must arrive within this time of the previous response, so an idle keep-alive connection is closed after it |
/// | [`max_connections`](Self::max_connections) | 10,000 | open connections (TCP, before TLS); at the limit the server stops accepting (the kernel's backlog holds new ones) until one closes |
/// | [`http2_max_concurrent_streams`](Self::http2_max_concurrent_streams) | 256 | streams one HTTP/2 connection may have open (each subscription is one) |
/// | [`http2_keep_alive`](Self::http2_keep_alive) | 20 s, 20 s | an HTTP/2 connection is pinged after this long without a frame and closed if no answer comes in time |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | 20 s | after the shutdown signal, connections still open after this are closed |
/// | [`accept_error_backoff`](Self::accept_error_backoff) | 100 ms | the pause after a failed accept (no file descriptor left, `EMFILE`), so the loop does not spin |
///
/// So a flood of connections that never send a request (or send it a byte
/// at a time) holds each slot at most `request_head_timeout` (plus
/// `tls_handshake_timeout` over TLS); the limits of the routes themselves
/// (subscriptions, sizes) are [`Limits`](crate::Limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    pub(crate) tls_handshake_timeout: Duration,
    pub(crate) request_head_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) http2_max_concurrent_streams: u32,
    pub(crate) http2_keep_alive_interval: Option<Duration>,
    pub(crate) http2_keep_alive_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) accept_error_backoff: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            request_head_timeout: DEFAULT_REQUEST_HEAD_TIMEOUT,
            max_connections: DEFAULT_MAX_OPEN_CONNECTIONS,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            http2_keep_alive_interval: Some(DEFAULT_HTTP2_KEEP_ALIVE),
            http2_keep_alive_timeout: DEFAULT_HTTP2_KEEP_ALIVE,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            accept_error_backoff: DEFAULT_ACCEPT_ERROR_BACKOFF,
        }
    }
}

impl ServeConfig {
    /// How long a TLS handshake may take from the accept (default 10 s).
    /// Zero is raised to 1 ms.
    pub fn tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.tls_handshake_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a connection may take to deliver its first complete
    /// request from the accept, and, on HTTP/1.1, each later request head
    /// from the end of the previous response (default 15 s). Zero is raised
    /// to 1 ms.
    pub fn request_head_timeout(mut self, timeout: Duration) -> Self {
        self.request_head_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many connections may be open at once (default 10,000; at least 1).
    /// Keep the process's open-file limit (`ulimit -n`) above it.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How many streams one HTTP/2 connection may have open at once
    /// (default 256; at least 1). A browser page's subscriptions to one
    /// server all share one connection: keep this above the number of
    /// subscriptions a page opens.
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.http2_max_concurrent_streams = max.max(1);
        self
    }

    /// HTTP/2 keep-alive: a connection is pinged after `interval` without
    /// any frame from the peer, and closed if the answer takes longer than
    /// `timeout` (default 20 s and 20 s). `None` turns pings off; dead peers
    /// are then only found by the streams' own heartbeats.
    pub fn http2_keep_alive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.http2_keep_alive_interval = interval;
        self.http2_keep_alive_timeout = timeout;
        self
    }

    /// How long, after the shutdown signal, connections get to finish
    /// (default 20 s); those still open then are closed.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The pause after an accept that failed for want of resources (no
    /// file descriptor or memory left) before the next (default 100 ms;
    /// at least 1 ms).
    pub fn accept_error_backoff(mut self, pause: Duration) -> Self {
        self.accept_error_backoff = pause.max(Duration::from_millis(1));
        self
    }
}

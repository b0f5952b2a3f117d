//! Settings of the typed client.

use std::time::Duration;

/// How a [`Client`](super::Client) connects, reconnects and bounds what it
/// reads. Built from [`ClientConfig::default`] with chained setters.
///
/// | setting | default |
/// |---|---|
/// | [`initial_delay`](Self::initial_delay) | 250 ms |
/// | [`max_delay`](Self::max_delay) | 30 s |
/// | [`max_retries`](Self::max_retries) | `None` (retry forever) |
/// | [`jitter`](Self::jitter) | on |
/// | [`connect_timeout`](Self::connect_timeout) | 10 s |
/// | [`idle_timeout`](Self::idle_timeout) | 60 s |
/// | [`max_item_size`](Self::max_item_size) | 1 MiB |
///
/// Reconnection delays grow exponentially (factor 2) from `initial_delay` up
/// to `max_delay`; with jitter each delay is lengthened by a random 0–100 %,
/// so clients cut off together do not come back together. The delays restart
/// from `initial_delay` whenever a connection succeeds (the server's
/// `push.ready` arrives). The server's SSE `retry:` hint is not used: these
/// settings govern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    pub(crate) initial_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) max_retries: Option<u32>,
    pub(crate) jitter: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_item_size: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_retries: None,
            jitter: true,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(60)),
            max_item_size: 1024 * 1024,
        }
    }
}

impl ClientConfig {
    /// The delay before the first reconnection attempt after a failure.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The longest delay between two reconnection attempts (before jitter).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How many reconnection attempts in a row may fail before the stream
    /// gives up with [`ClientError::GaveUp`](super::ClientError::GaveUp);
    /// `None` retries forever. `Some(0)` never reconnects.
    pub fn max_retries(mut self, retries: Option<u32>) -> Self {
        self.max_retries = retries;
        self
    }

    /// Whether to randomize reconnection delays (recommended).
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// How long establishing a connection (up to the response headers or the
    /// WebSocket handshake) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an established connection may stay silent before the client
    /// considers it dead and reconnects; `None` waits forever.
    ///
    /// The server sends an SSE heartbeat every 15 s and a WebSocket ping every
    /// 20 s by default: keep this well above the server's interval.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The largest item the client accepts, in bytes: one SSE line or event
    /// block, one WebSocket message (clamped to at least 1 KiB).
    pub fn max_item_size(mut self, bytes: usize) -> Self {
        self.max_item_size = bytes.max(1024);
        self
    }
}

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
/// | [`max_item_size`](Self::max_item_size) | [`DEFAULT_MAX_ITEM_SIZE`](Self::DEFAULT_MAX_ITEM_SIZE): 1 MiB + 16 KiB |
/// | [`poll_interval`](Self::poll_interval) | 1 s |
/// | [`long_poll_timeout`](Self::long_poll_timeout) | 25 s |
/// | [`fallback_after`](Self::fallback_after) | 3 |
///
/// Reconnection delays grow exponentially (factor 2) from `initial_delay` up
/// to `max_delay`; with jitter each delay is lengthened by a random 0–100 %,
/// so clients cut off together do not come back together. The delays restart
/// from `initial_delay` whenever a connection succeeds (the server's
/// `push.ready` arrives). The server's SSE `retry:` hint is not used: these
/// settings govern.
///
/// A response the server ends on purpose (`push.end`: the forever frame's
/// size or age limit, a shutdown) is no failure: it is reopened at once
/// when it brought an event or a gap, and after `initial_delay` (with
/// jitter) when it brought nothing since its `push.ready`, so that a
/// client never spins on responses that make no progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    pub(crate) initial_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) max_retries: Option<u32>,
    pub(crate) jitter: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_item_size: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) long_poll_timeout: Duration,
    pub(crate) fallback_after: u32,
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
            max_item_size: Self::DEFAULT_MAX_ITEM_SIZE,
            poll_interval: Duration::from_secs(1),
            long_poll_timeout: Duration::from_secs(25),
            fallback_after: 3,
        }
    }
}

impl ClientConfig {
    /// The default [`max_item_size`](Self::max_item_size): the server's
    /// default largest event ([`DEFAULT_MAX_EVENT_SIZE`](crate::DEFAULT_MAX_EVENT_SIZE),
    /// 1 MiB) plus [`ITEM_FRAMING`](Self::ITEM_FRAMING), so that every event
    /// a server with default settings accepts reaches the client on every
    /// transport.
    pub const DEFAULT_MAX_ITEM_SIZE: usize = crate::DEFAULT_MAX_EVENT_SIZE + Self::ITEM_FRAMING;

    /// What [`DEFAULT_MAX_ITEM_SIZE`](Self::DEFAULT_MAX_ITEM_SIZE) allows for
    /// the framing of one item around its payload (16 KiB): the JSON
    /// message's cursor and name, SSE's `id:`/`event:`/`data:` lines, the
    /// forever frame's `<script>m(…)</script>`. Against a server with a
    /// larger `HubConfig::max_event_size`, set `max_item_size` to that plus
    /// this.
    pub const ITEM_FRAMING: usize = 16 * 1024;

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
    /// WebSocket handshake) may take; for short polling, a whole poll (up to
    /// the end of its answer).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an established connection may stay silent before the client
    /// considers it dead and reconnects; `None` waits forever.
    ///
    /// The server sends an SSE or forever-frame heartbeat every 15 s and a
    /// WebSocket ping every 20 s by default: keep this well above the
    /// server's interval. Polls do not use it: each request has its own
    /// deadline (see [`connect_timeout`](Self::connect_timeout) and
    /// [`long_poll_timeout`](Self::long_poll_timeout)).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The largest item the client accepts, in bytes: one SSE line or event
    /// block, one WebSocket message, one forever-frame item, one poll item
    /// (clamped to at least 1 KiB; default
    /// [`DEFAULT_MAX_ITEM_SIZE`](Self::DEFAULT_MAX_ITEM_SIZE)). On SSE, the
    /// forever frame and polls an item over it is skipped: the stream yields
    /// [`ClientError::TooLarge`](super::ClientError::TooLarge) for it and
    /// goes on. A whole short- or long-poll answer may be
    /// [`POLL_ANSWER_ITEMS`](Self::POLL_ANSWER_ITEMS) times this; each poll
    /// asks for as many items as fit (`limit=`), and for one at a time
    /// after an answer over that size.
    pub fn max_item_size(mut self, bytes: usize) -> Self {
        self.max_item_size = bytes.max(1024);
        self
    }

    /// How many items' worth of bytes ([`max_item_size`](Self::max_item_size)
    /// each) a poll answer may hold. A poll asks for `limit=` one item less
    /// (room for the answer's envelope), so a backlog of large events
    /// arrives over several answers.
    pub const POLL_ANSWER_ITEMS: usize = 16;

    /// The largest poll answer body accepted, in bytes.
    pub(crate) fn max_answer_size(&self) -> usize {
        self.max_item_size.saturating_mul(Self::POLL_ANSWER_ITEMS)
    }

    /// [`Transport::ShortPoll`](super::Transport::ShortPoll): how long to
    /// wait after an answer that was not cut short (`"more":false`, or a
    /// `304`) before polling again. An answer with `"more":true` is followed
    /// by the next poll at once.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// [`Transport::LongPoll`](super::Transport::LongPoll): how long the
    /// server may hold a request when nothing is new, sent as
    /// `timeout=<whole seconds>` (the server caps it, at 25 s by default).
    /// The client gives each request this plus
    /// [`connect_timeout`](Self::connect_timeout) to complete, so a held
    /// request is not mistaken for a dead one. Clamped to at least 1 s: a
    /// `timeout=0` would make every long poll answer at once, in a tight loop.
    pub fn long_poll_timeout(mut self, timeout: Duration) -> Self {
        self.long_poll_timeout = timeout.max(Duration::from_secs(1));
        self
    }

    /// [`Transport::Auto`](super::Transport::Auto): how many attempts in a row
    /// may fail with a transient error on one transport, before it ever
    /// worked, until the subscription tries the next transport (clamped to
    /// at least 1). See [`Transport::Auto`](super::Transport::Auto).
    pub fn fallback_after(mut self, attempts: u32) -> Self {
        self.fallback_after = attempts.max(1);
        self
    }

    /// How long one poll request may take, up to the end of its body.
    pub(crate) fn poll_request_timeout(&self, long_poll: bool) -> Duration {
        if long_poll {
            self.long_poll_timeout.saturating_add(self.connect_timeout)
        } else {
            self.connect_timeout
        }
    }
}

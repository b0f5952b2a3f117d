//! Settings of the typed client.

use super::credentials::{CredentialsProvider, HeaderNames, parse_header};
use super::error::ClientError;
use axum::http::header::HeaderMap;
use std::fmt;
use std::sync::Arc;
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
/// | [`header`](Self::header) | none |
/// | [`credentials`](Self::credentials) | none |
/// | [`root_certificate_pem`](Self::root_certificate_pem) (feature `rustls`) | none |
/// | [`built_in_roots`](Self::built_in_roots) (feature `rustls`) | on: Mozilla's roots (`webpki-roots`) |
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
///
/// # Credentials and TLS
///
/// Headers set with [`header`](Self::header) go with every request of every
/// transport, each reconnection and the WebSocket handshake included. A
/// [`CredentialsProvider`] set with [`credentials`](Self::credentials) is
/// asked before every connection attempt and adds its headers (e.g. a
/// bearer token) to those; it is also what lets a subscription go on after
/// the server refuses it (`401`/`403`) or its authorization expires. With
/// the `rustls` feature (on by default) the base URL may be `https://`:
/// every transport then uses TLS (`wss://` for WebSocket), trusting
/// Mozilla's roots and the certificates added with
/// [`root_certificate_pem`](Self::root_certificate_pem). The client never
/// uses a proxy from the environment.
///
/// ```no_run
/// # fn run() -> Result<(), push_runtime::client::ClientError> {
/// use push_runtime::client::{ClientConfig, Credentials, CredentialsReason};
/// let config = ClientConfig::default()
///     .header("x-tenant", "acme")?
///     .root_certificate_pem(&std::fs::read("ca.pem").unwrap_or_default())?
///     .credentials(|_why: CredentialsReason| async move {
///         // Ask your identity provider for a token here.
///         Credentials::bearer("a-token").ok()
///     });
/// # let _ = config; Ok(())
/// # }
/// ```
#[derive(Clone)]
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
    pub(crate) headers: HeaderMap,
    pub(crate) credentials: Option<Arc<dyn CredentialsProvider>>,
    #[cfg(feature = "rustls")]
    pub(crate) roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    #[cfg(feature = "rustls")]
    pub(crate) built_in_roots: bool,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ClientConfig");
        debug
            .field("initial_delay", &self.initial_delay)
            .field("max_delay", &self.max_delay)
            .field("max_retries", &self.max_retries)
            .field("jitter", &self.jitter)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_item_size", &self.max_item_size)
            .field("poll_interval", &self.poll_interval)
            .field("long_poll_timeout", &self.long_poll_timeout)
            .field("fallback_after", &self.fallback_after)
            // Names only: values may be secrets.
            .field("headers", &HeaderNames(&self.headers))
            .field("credentials", &self.credentials.is_some());
        #[cfg(feature = "rustls")]
        debug
            .field("roots", &self.roots.len())
            .field("built_in_roots", &self.built_in_roots);
        debug.finish()
    }
}

/// Two configurations are equal when every setting is, the same provider
/// (the same `Arc`) included.
impl PartialEq for ClientConfig {
    fn eq(&self, other: &Self) -> bool {
        let same_provider = match (&self.credentials, &other.credentials) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        #[cfg(feature = "rustls")]
        let same_roots = self.roots == other.roots && self.built_in_roots == other.built_in_roots;
        #[cfg(not(feature = "rustls"))]
        let same_roots = true;
        self.initial_delay == other.initial_delay
            && self.max_delay == other.max_delay
            && self.max_retries == other.max_retries
            && self.jitter == other.jitter
            && self.connect_timeout == other.connect_timeout
            && self.idle_timeout == other.idle_timeout
            && self.max_item_size == other.max_item_size
            && self.poll_interval == other.poll_interval
            && self.long_poll_timeout == other.long_poll_timeout
            && self.fallback_after == other.fallback_after
            && self.headers == other.headers
            && same_provider
            && same_roots
    }
}

impl Eq for ClientConfig {}

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
            headers: HeaderMap::new(),
            credentials: None,
            #[cfg(feature = "rustls")]
            roots: Vec::new(),
            #[cfg(feature = "rustls")]
            built_in_roots: true,
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
    /// [`DEFAULT_MAX_ITEM_SIZE`](Self::DEFAULT_MAX_ITEM_SIZE)). On every
    /// transport an item over it is skipped: the stream yields
    /// [`ClientError::TooLarge`](super::ClientError::TooLarge) for it and
    /// goes on. On WebSocket the client first locates the item with one
    /// short poll of the topic and reopens the socket after it (so the
    /// topic's `poll` route must be reachable with the same headers;
    /// without it the stream ends there, see
    /// [`ClientError::TooLarge`](super::ClientError::TooLarge)). A whole
    /// short- or long-poll answer may be
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

    /// Adds a header to every request of every transport: each poll, each
    /// reconnection, the WebSocket handshake. A second header of the same
    /// name adds a value. Values of `authorization`, `proxy-authorization`
    /// and `cookie` are kept out of `Debug` output.
    ///
    /// Refused with [`ClientError::InvalidHeader`]: a name that is not an
    /// HTTP token, a value with a control character (a line break), and the
    /// headers the client sets itself (`host`, `connection`, `upgrade`,
    /// `content-length`, `transfer-encoding`, `te`, `trailer`,
    /// `keep-alive`, `proxy-connection`, `sec-websocket-*`, `accept`,
    /// `if-none-match`, `last-event-id`).
    ///
    /// For credentials that change (a token that expires), use a
    /// [`credentials`](Self::credentials) provider instead: its headers
    /// replace those of the same name set here.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, ClientError> {
        let (name, value) = parse_header(name, value)?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// The provider of credentials, asked before every connection attempt
    /// and told why ([`CredentialsReason`](super::CredentialsReason)); see
    /// [`CredentialsProvider`]. A closure `|why| async move { … }` returning
    /// `Option<`[`Credentials`](super::Credentials)`>` is one.
    ///
    /// Without a provider, a `401`/`403` ends a subscription with
    /// [`ClientError::Unauthorized`] and the server's expiry ends it with
    /// [`ClientError::Expired`]; with one, the provider decides whether to
    /// go on with fresh credentials.
    pub fn credentials(mut self, provider: impl CredentialsProvider) -> Self {
        self.credentials = Some(Arc::new(provider));
        self
    }

    /// Trusts the certificate authorities of a PEM bundle (one or more
    /// `-----BEGIN CERTIFICATE-----` blocks; other blocks are ignored) for
    /// `https://` and `wss://`, besides the built-in roots: for a private
    /// deployment whose certificates a private authority signs. The same
    /// trust applies to every transport.
    ///
    /// Refused with [`ClientError::InvalidCertificate`] when the text holds
    /// no certificate or one that does not parse.
    #[cfg(feature = "rustls")]
    pub fn root_certificate_pem(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        self.roots.extend(super::tls::parse_pem(pem)?);
        Ok(self)
    }

    /// Whether to trust Mozilla's roots (`webpki-roots`, compiled in; the
    /// platform's store is not read). On by default; off, only the
    /// certificates added with
    /// [`root_certificate_pem`](Self::root_certificate_pem) are trusted.
    #[cfg(feature = "rustls")]
    pub fn built_in_roots(mut self, trust: bool) -> Self {
        self.built_in_roots = trust;
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

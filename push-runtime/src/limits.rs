//! The limits of a channel's routes: connections, request sizes, and how much
//! a connection that does not read may hold.
//!
//! The hub's own limits (history length, topics alive, topic name length)
//! are in [`HubConfig`](crate::HubConfig); the per-transport ones (WebSocket
//! message size, poll batch, long-poll timeout) in each transport's config.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Default for [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default for [`Limits::max_connections_per_topic`].
pub const DEFAULT_MAX_CONNECTIONS_PER_TOPIC: usize = 5_000;
/// Default for [`Limits::max_request_target`].
pub const DEFAULT_MAX_REQUEST_TARGET: usize = 2048;
/// Default for [`Limits::max_query`].
pub const DEFAULT_MAX_QUERY: usize = 1024;
/// Default for [`Limits::max_buffered_per_connection`].
pub const DEFAULT_MAX_BUFFERED_PER_CONNECTION: usize = 64 * 1024;
/// Default for [`Limits::stall_timeout`].
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`Limits::retry_after`].
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Limits of a channel's routes, set with
/// [`ChannelRouter::limits`](crate::ChannelRouter::limits).
///
/// ```
/// use push_runtime::Limits;
/// use std::time::Duration;
/// let limits = Limits::default()
///     .max_connections(50_000)
///     .max_connections_per_topic(5_000)
///     .stall_timeout(Duration::from_secs(10));
/// # let _ = limits;
/// ```
#[derive(Clone, Debug)]
pub struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_topic: usize,
    pub(crate) max_request_target: usize,
    pub(crate) max_query: usize,
    pub(crate) max_buffered_per_connection: usize,
    pub(crate) stall_timeout: Duration,
    pub(crate) retry_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_topic: DEFAULT_MAX_CONNECTIONS_PER_TOPIC,
            max_request_target: DEFAULT_MAX_REQUEST_TARGET,
            max_query: DEFAULT_MAX_QUERY,
            max_buffered_per_connection: DEFAULT_MAX_BUFFERED_PER_CONNECTION,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

impl Limits {
    /// Subscriptions open at once on the hub, all transports and topics
    /// together (default 10 000; a poll counts while it is answered or held).
    /// One more gets `503` with `Retry-After`.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Subscriptions open at once on one topic (default 5 000). One more
    /// gets `503` with `Retry-After`.
    pub fn max_connections_per_topic(mut self, n: usize) -> Self {
        self.max_connections_per_topic = n;
        self
    }

    /// The longest path plus query, in bytes (default 2048). Longer gets `414`.
    pub fn max_request_target(mut self, bytes: usize) -> Self {
        self.max_request_target = bytes;
        self
    }

    /// The longest query string, in bytes (default 1024). Longer gets `414`.
    pub fn max_query(mut self, bytes: usize) -> Self {
        self.max_query = bytes;
        self
    }

    /// The most bytes handed to one streaming connection and not yet written
    /// to its socket (default 64 KiB, at least 1, at most 256 KiB). Past it,
    /// nothing more is taken from the topic for that connection: the
    /// subscriber stays a cursor in the history and gets a gap if it falls
    /// out of it. SSE and forever-frame bytes are handed over in pieces of a
    /// quarter of this, so a connection holds less than 5/4 of it; a
    /// WebSocket holds at most one batch (`WsConfig::max_batch` events), and
    /// this is its write buffer size.
    pub fn max_buffered_per_connection(mut self, bytes: usize) -> Self {
        self.max_buffered_per_connection = bytes.max(1);
        self
    }

    /// How long a streaming connection may stay at its buffer limit, writing
    /// nothing, before it is cut (default 30 s). The client reconnects and
    /// resumes from its last cursor.
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// The `Retry-After` announced with a `503` (default 5 s).
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = delay;
        self
    }
}

/// A request refused because a limit was reached.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LimitRefusal {
    /// [`Limits::max_connections`] subscriptions are open.
    #[error("too many connections: the server holds its limit of {0}; retry later")]
    Connections(usize),
    /// [`Limits::max_connections_per_topic`] subscriptions are open on the topic.
    #[error("too many connections to this topic: it holds its limit of {0}; retry later")]
    TopicConnections(usize),
    /// The path and query are longer than [`Limits::max_request_target`].
    #[error("the request target is {len} bytes long, the limit is {max}")]
    RequestTarget {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The query is longer than [`Limits::max_query`].
    #[error("the query is {len} bytes long, the limit is {max}")]
    Query {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl IntoResponse for LimitRefusal {
    /// `414` for a request target too long; `503` for a capacity limit (the
    /// route adds `Retry-After`).
    fn into_response(self) -> Response {
        match self {
            Self::RequestTarget { .. } | Self::Query { .. } => {
                (StatusCode::URI_TOO_LONG, self.to_string()).into_response()
            }
            Self::Connections(_) | Self::TopicConnections(_) => {
                tracing::warn!(refusal = %self, "refused a subscription at a limit");
                unavailable(self.to_string())
            }
        }
    }
}

/// `503 Service Unavailable`: the one answer to a request that a later
/// attempt may pass (a limit reached, a full or unreachable broker, a
/// server shutting down). The routes' last step
/// (`admission::finish`) gives every `503` the configured `Retry-After`.
pub(crate) fn unavailable(message: impl Into<String>) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, message.into()).into_response()
}

/// The `Retry-After` value of [`Limits::retry_after`], in whole seconds (at least 1).
pub(crate) fn retry_after_header(limits: &Limits) -> HeaderValue {
    HeaderValue::from(limits.retry_after.as_secs().max(1))
}

/// Checks the sizes of the request target.
pub(crate) fn check_target(uri: &axum::http::Uri, limits: &Limits) -> Result<(), LimitRefusal> {
    let query = uri.query().map_or(0, str::len);
    let len = uri.path().len() + query;
    if query > limits.max_query {
        return Err(LimitRefusal::Query {
            len: query,
            max: limits.max_query,
        });
    }
    if len > limits.max_request_target {
        return Err(LimitRefusal::RequestTarget {
            len,
            max: limits.max_request_target,
        });
    }
    Ok(())
}

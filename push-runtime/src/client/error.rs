//! What can go wrong in the client, and which of it is worth retrying.

use crate::cursor::Cursor;
use std::error::Error as StdError;

/// An error of the typed client.
///
/// Items of a [`Subscription`](super::Subscription) are `Err` in three cases:
/// - an item the stream skips and continues past ([`ClientError::Decode`],
///   [`ClientError::Malformed`], [`ClientError::TooLarge`]);
/// - a permanent error, after which the stream ends (see
///   [`ClientError::is_retryable`]);
/// - [`ClientError::GaveUp`]: transient errors went on for longer than the
///   configured number of retries; the stream ends.
///
/// Transient errors themselves are not yielded as `Err`: the client
/// reconnects and reports them as [`Update::Reconnecting`](super::Update::Reconnecting).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL given to [`Client::new`](super::Client::new) is unusable.
    #[error("invalid base url `{url}`: {reason}")]
    InvalidBaseUrl {
        /// The URL as given (at most 256 characters of it).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A topic that cannot even be put in a URL (`.` and `..`). Permanent.
    /// Other invalid names are sent and rejected by the server
    /// ([`ClientError::Rejected`]), which knows its own limits.
    #[error("invalid topic `{topic}`: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server refused the subscription with a client error status
    /// (e.g. `400` for an invalid topic, cursor or event filter). Permanent;
    /// but before it has settled, [`Transport::Auto`](super::Transport::Auto)
    /// takes a `404`, `405` or `426` (or a WebSocket handshake answered with a
    /// non-error status) to mean that this transport's route is not there, and
    /// tries the next one.
    #[error("subscription rejected ({status}): {message}")]
    Rejected {
        /// The HTTP status code.
        status: u16,
        /// The server's message (its one-line `text/plain` body).
        message: String,
    },
    /// The server refused the subscription with `401 Unauthorized` or `403
    /// Forbidden` (its authorization hook said no), on any route, the
    /// WebSocket handshake included. Permanent unless a
    /// [`CredentialsProvider`](super::CredentialsProvider) is configured and
    /// gives fresh [`Credentials`](super::Credentials) when asked with
    /// [`CredentialsReason::Refused`](super::CredentialsReason::Refused): then the
    /// client tries again after the reconnection delay (yielding
    /// [`Update::Reauthorized`](super::Update::Reauthorized)), and gives up
    /// after [`max_retries`](super::ClientConfig::max_retries) refusals in a
    /// row like after any failure. This is what ends the stream when the
    /// provider declines or none is set; the client never retries without
    /// the credentials it was configured with.
    ///
    /// A `401` whose message is `authorization expired` is the server's
    /// expiry, reported as [`ClientError::Expired`].
    #[error("unauthorized ({status}): {message}")]
    Unauthorized {
        /// `401` or `403`.
        status: u16,
        /// The server's message (its one-line `text/plain` body).
        message: String,
    },
    /// The authorization of the subscription expired: the server ended the
    /// stream with `push.expired` (SSE, forever frame, WebSocket), closed
    /// the WebSocket with code `4401`, or answered a request `401` with the
    /// message `authorization expired` (a poll held at the expiry, or a
    /// connection made with credentials already expired). Permanent unless
    /// a [`CredentialsProvider`](super::CredentialsProvider) gives fresh
    /// credentials when asked with
    /// [`CredentialsReason::Expired`](super::CredentialsReason::Expired): then
    /// the client resumes from `cursor` with them, so nothing is lost or
    /// repeated. This is what ends the stream when the provider declines or
    /// none is set.
    #[error("authorization expired{}", match cursor { Some(cursor) => format!(" at {cursor}"), None => String::new() })]
    Expired {
        /// Where the stream stands: the cursor `push.expired` named, or
        /// the subscription's position for a close or a `401` (`None`
        /// only before any position is known).
        cursor: Option<Cursor>,
    },
    /// The [`CredentialsProvider`](super::CredentialsProvider) declined to
    /// give credentials for a first connection
    /// ([`CredentialsReason::Connect`](super::CredentialsReason::Connect)) or
    /// a reconnection ([`CredentialsReason::Reconnect`](super::CredentialsReason::Reconnect)).
    /// The stream ends: the client does not connect without the credentials
    /// the provider stands for.
    #[error("the credentials provider declined to give credentials")]
    CredentialsDeclined,
    /// A header given to [`ClientConfig::header`](super::ClientConfig::header)
    /// or [`Credentials::header`](super::Credentials::header) cannot be sent.
    #[error("invalid header `{name}`: {reason}")]
    InvalidHeader {
        /// The header's name as given (at most 64 characters of it).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A certificate given to
    /// [`ClientConfig::root_certificate_pem`](super::ClientConfig::root_certificate_pem)
    /// is unusable.
    #[error("invalid root certificate: {reason}")]
    InvalidCertificate {
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS handshake with the server failed: its certificate is not
    /// trusted (signed by an authority that is not among the roots, see
    /// [`ClientConfig::root_certificate_pem`](super::ClientConfig::root_certificate_pem)),
    /// does not name the host, or has expired; or the server does not speak
    /// TLS on that port. Permanent: trying again would fail the same way.
    #[error("tls handshake failed: {reason}")]
    Tls {
        /// What rustls said, with its causes.
        reason: String,
    },
    /// The server answered with a server error status (`5xx`), or with `408`
    /// or `429`. Transient.
    #[error("server error ({status}): {message}")]
    Server {
        /// The HTTP status code.
        status: u16,
        /// The server's message, if any.
        message: String,
    },
    /// The server answered `200` but not with what the transport expects (an
    /// event stream, an HTML forever frame, a poll answer of the right shape):
    /// wrong URL, a proxy's page… Permanent (but [`Transport::Auto`](super::Transport::Auto)
    /// tries the next transport before it has settled).
    #[error("unexpected response: {reason}")]
    UnexpectedResponse {
        /// What was unexpected.
        reason: String,
    },
    /// The connection could not be established (refused, timed out, reset
    /// during the handshake). Transient.
    #[error("connection failed: {reason}")]
    Connect {
        /// The underlying error, with its causes.
        reason: String,
    },
    /// An established connection ended: the stream ended, was reset, or was
    /// idle for longer than the configured idle timeout. Transient.
    #[error("connection lost: {reason}")]
    Disconnected {
        /// Why, as far as the client can tell.
        reason: String,
    },
    /// The server closed the WebSocket with this code. Permanent for `1002`,
    /// `1003`, `1007`, `1008`, `1009` and `1010` (the client must be fixed),
    /// transient for every other code (`1001` going away, `1011` internal
    /// error, …).
    #[error("websocket closed by the server ({code}): {reason}")]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason the server gave (may be empty).
        reason: String,
    },
    /// An event whose payload does not deserialize into the channel type.
    /// The stream continues past it, and its cursor counts as seen.
    #[error("event `{event}` at `{cursor}` does not decode: {source}")]
    Decode {
        /// The event's position.
        cursor: Cursor,
        /// The event's wire name (at most 128 characters of it).
        event: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// An item that does not follow the wire protocol (no valid cursor, a
    /// control payload of the wrong shape, a WebSocket message that is not the
    /// JSON envelope). The stream continues past it.
    #[error("malformed item from the server: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// An item larger than the configured
    /// [`max_item_size`](super::ClientConfig::max_item_size): the stream
    /// skips it and goes on, on every transport.
    ///
    /// On WebSocket the message cannot be read past, so the client finds
    /// the item's cursor with one short poll of the topic
    /// (`GET {base}/{topic}/poll?after=<position>&limit=1`, with the same
    /// headers and event filter; only the answer's head and at most
    /// `max_item_size` + 1 KiB of its body are read) and reopens the
    /// WebSocket after it, at once: nothing else is lost or repeated. If
    /// that poll cannot locate the item (the route answers `404` or another
    /// client error, something that is not a poll answer, or an answer too
    /// large whose `ETag` names no cursor), this error is permanent and the
    /// stream ends, also with [`Transport::Auto`](super::Transport::Auto),
    /// which keeps to WebSocket. If the poll fails transiently (or is
    /// refused or expired), it is handled as a failure of the socket: the
    /// client reconnects with backoff (or asks for fresh credentials), meets
    /// the message again and polls again. On the polling transports, the
    /// answer to a one-item poll too large to read whose `ETag` names no
    /// cursor is permanent too.
    #[error("item larger than the limit of {limit} bytes{}", match cursor { Some(cursor) => format!(" at {cursor}"), None => String::new() })]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
        /// The skipped item's cursor, when the client knows it (WebSocket
        /// and polls; an SSE or forever-frame item over the limit is not
        /// read far enough to know it). It counts as seen, like a
        /// [`ClientError::Decode`]'s cursor.
        cursor: Option<Cursor>,
    },
    /// Reconnection was attempted the configured maximum number of times
    /// without success; `last` is the last failure. The stream ends.
    #[error("gave up after {attempts} reconnection attempts: {last}")]
    GaveUp {
        /// How many reconnections were attempted.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// Whether the client retries after this error (with backoff, resuming
    /// from the last position) rather than ending the stream.
    ///
    /// Errors that only skip one item ([`ClientError::Decode`],
    /// [`ClientError::Malformed`]) never end a stream; for them this is `false`
    /// as there is nothing to retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Server { .. }
            | ClientError::Connect { .. }
            | ClientError::Disconnected { .. } => true,
            ClientError::Closed { code, .. } => !is_permanent_close(*code),
            _ => false,
        }
    }
}

/// WebSocket close codes that say the client is at fault: reconnecting the
/// same way would fail the same way.
pub(crate) fn is_permanent_close(code: u16) -> bool {
    matches!(code, 1002 | 1003 | 1007 | 1008 | 1009 | 1010)
}

/// Whether an HTTP error status is worth retrying.
pub(crate) fn is_transient_status(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// The message of the server's `401` when a subscription's authorization
/// has expired.
pub(crate) const EXPIRED_MESSAGE: &str = "authorization expired";

/// The WebSocket close code of the server's expiry.
pub(crate) const EXPIRED_CLOSE: u16 = 4401;

/// The error for an HTTP status other than the expected one.
pub(crate) fn from_status(status: u16, message: String) -> ClientError {
    match status {
        401 if message == EXPIRED_MESSAGE => ClientError::Expired { cursor: None },
        401 | 403 => ClientError::Unauthorized { status, message },
        _ if is_transient_status(status) => ClientError::Server { status, message },
        _ => ClientError::Rejected { status, message },
    }
}

/// The error for a connection that could not be established: a TLS
/// failure (permanent) or a transient [`ClientError::Connect`].
pub(crate) fn connect_failure(error: &(dyn StdError + 'static)) -> ClientError {
    #[cfg(feature = "rustls")]
    if let Some(tls) = tls_failure(error) {
        return ClientError::Tls {
            reason: format!("{tls}{}", tls_hint(tls)),
        };
    }
    ClientError::Connect {
        reason: describe(error),
    }
}

/// The rustls error in a chain of causes, if any. An `io::Error`'s `source`
/// skips the error it wraps, so that one is looked at with `get_ref`.
#[cfg(feature = "rustls")]
fn tls_failure<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && let Some(tls) = tls_failure(inner)
        {
            return Some(tls);
        }
        next = error.source();
    }
    None
}

/// What to check, for the usual TLS failures.
#[cfg(feature = "rustls")]
fn tls_hint(error: &rustls::Error) -> &'static str {
    match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            " (the server's certificate is not signed by a trusted root; for a private \
             authority, add its certificate with ClientConfig::root_certificate_pem)"
        }
        rustls::Error::InvalidMessage(_) => " (does the server speak tls on this port?)",
        _ => "",
    }
}

/// An error and its chain of causes on one line (`a: b: c`), since the
/// top-level messages of hyper and tungstenite often omit the cause.
pub(crate) fn describe(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// At most `limit` characters of `text`, for quoting untrusted input in errors.
pub(crate) fn quote(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The server's message from an error body: its first line, bounded.
pub(crate) fn body_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    quote(line, MESSAGE_LIMIT)
}

/// The longest server message kept from an error body, in characters.
pub(crate) const MESSAGE_LIMIT: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses_and_close_codes() {
        assert!(from_status(503, String::new()).is_retryable());
        assert!(from_status(429, String::new()).is_retryable());
        assert!(!from_status(400, String::new()).is_retryable());
        assert!(!from_status(404, String::new()).is_retryable());
        for code in [1000, 1001, 1005, 1006, 1011, 1012, 1013, 4000] {
            let error = ClientError::Closed {
                code,
                reason: String::new(),
            };
            assert!(error.is_retryable(), "{code}");
        }
        for code in [1002, 1003, 1007, 1008, 1009, 1010] {
            let error = ClientError::Closed {
                code,
                reason: String::new(),
            };
            assert!(!error.is_retryable(), "{code}");
        }
    }

    #[test]
    fn quotes_are_bounded_and_char_safe() {
        assert_eq!(quote("héllo", 2), "hé…");
        assert_eq!(quote("hi", 2), "hi");
        assert_eq!(body_message(b"bad topic\nmore"), "bad topic");
        assert_eq!(body_message(&[0xff, b'x']), "\u{fffd}x");
        assert!(body_message("y".repeat(10_000).as_bytes()).len() < 1100);
    }
}

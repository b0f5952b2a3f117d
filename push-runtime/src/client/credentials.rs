//! Credentials: the headers a subscription sends with every connection
//! attempt, and the provider asked for fresh ones before each attempt.

use super::error::{ClientError, quote};
use crate::cursor::Cursor;
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// Headers that carry who the client is (e.g. `Authorization: Bearer …`),
/// given by a [`CredentialsProvider`] for one connection attempt.
///
/// Their values are marked sensitive and never printed by `Debug`. A header
/// of the same name set with [`ClientConfig::header`](super::ClientConfig::header)
/// is replaced by the credentials' for that attempt.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    headers: HeaderMap,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("headers", &HeaderNames(&self.headers))
            .finish()
    }
}

impl Credentials {
    /// No headers: a provider that accepts to connect with only the
    /// configured headers answers this (declining is answering `None`).
    pub fn new() -> Self {
        Self::default()
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Result<Self, ClientError> {
        Self::new().header("authorization", &format!("Bearer {token}"))
    }

    /// Adds a header (validated as [`ClientConfig::header`](super::ClientConfig::header)
    /// validates it); a second one of the same name adds a value.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, ClientError> {
        let (name, value) = parse_header(name, value)?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// The headers.
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// Why a [`CredentialsProvider`] is asked for credentials. It is asked
/// before every connection attempt of a subscription, once per attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsReason {
    /// The subscription's first connection attempt.
    Connect,
    /// Another attempt after a connection failed or ended for a reason
    /// that has nothing to do with authorization (the server restarted, the
    /// network dropped, a forever frame reached its size limit…).
    Reconnect,
    /// The server ended the subscription because its authorization expired
    /// (`push.expired`, a WebSocket close `4401`, or a `401` with the message
    /// `authorization expired`). With fresh credentials the client resumes
    /// from `cursor` at once (after the reconnection delay if the expired
    /// connection was not live, or brought nothing since the previous expiry).
    Expired {
        /// Where the subscription resumes: the cursor `push.expired` named,
        /// or the subscription's position (`None` only before any position
        /// is known).
        cursor: Option<Cursor>,
    },
    /// The server refused a connection attempt with `401` or `403`. With
    /// fresh credentials the client tries again after the reconnection
    /// delay (which grows with each refusal in a row, as after any failure).
    Refused {
        /// `401` or `403`.
        status: u16,
        /// The server's message.
        message: String,
    },
}

/// What a [`CredentialsProvider`] answers: `Some` credentials to send with
/// the next connection attempt, or `None` to decline, which ends the
/// subscription.
pub type CredentialsFuture = Pin<Box<dyn Future<Output = Option<Credentials>> + Send>>;

/// Gives a subscription the credentials of each connection attempt, set
/// with [`ClientConfig::credentials`](super::ClientConfig::credentials).
///
/// Asked before every connection attempt (the first, every reconnection,
/// and after the server refused or expired the authorization), so a token
/// refreshed meanwhile is the one sent. Answering `None` declines: the
/// subscription ends with [`ClientError::CredentialsDeclined`] (first
/// connection, reconnection), [`ClientError::Unauthorized`] (refused) or
/// [`ClientError::Expired`] (expired); it never connects without
/// credentials instead. The subscription waits for the answer: a provider
/// that fetches a token bounds its own wait.
///
/// Implemented for every `Fn(CredentialsReason) -> impl Future<Output =
/// Option<Credentials>>`, so a closure will do:
///
/// ```no_run
/// # use push_runtime::client::{ClientConfig, Credentials, CredentialsReason};
/// # async fn fetch_token(_: bool) -> Option<String> { None }
/// let config = ClientConfig::default().credentials(|why: CredentialsReason| async move {
///     // A fresh token when the server said the last one expired or was refused.
///     let renew = matches!(why, CredentialsReason::Expired { .. } | CredentialsReason::Refused { .. });
///     let token = fetch_token(renew).await?;
///     Credentials::bearer(&token).ok()
/// });
/// ```
pub trait CredentialsProvider: Send + Sync + 'static {
    /// The credentials for the next connection attempt, or `None` to
    /// decline.
    fn credentials(&self, reason: CredentialsReason) -> CredentialsFuture;
}

impl<F, Fut> CredentialsProvider for F
where
    F: Fn(CredentialsReason) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Credentials>> + Send + 'static,
{
    fn credentials(&self, reason: CredentialsReason) -> CredentialsFuture {
        Box::pin(self(reason))
    }
}

/// Headers the client sets itself, per transport and per attempt: framing,
/// the WebSocket handshake, content negotiation and the resume position.
const RESERVED: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "accept",
    "if-none-match",
    "last-event-id",
];

/// Headers whose values are secrets: marked sensitive.
const SECRET: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// A header name and value checked for sending, or why not.
pub(crate) fn parse_header(
    name: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), ClientError> {
    let invalid = |reason| ClientError::InvalidHeader {
        name: quote(name, 64),
        reason,
    };
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| invalid("not a valid header name (a token: letters, digits, `-`…)"))?;
    if RESERVED.contains(&header.as_str()) {
        return Err(invalid(
            "the client sets this header itself on each request",
        ));
    }
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| invalid("the value holds a control character such as a line break"))?;
    if SECRET.contains(&header.as_str()) {
        value.set_sensitive(true);
    }
    Ok((header, value))
}

/// Prints header names only: values may be secrets.
pub(crate) struct HeaderNames<'a>(pub(crate) &'a HeaderMap);

impl fmt::Debug for HeaderNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.keys().map(HeaderName::as_str))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_validated_with_a_reason() {
        for (name, value, reason) in [
            ("", "x", "not a valid header name"),
            ("bad name", "x", "not a valid header name"),
            ("x-ok", "line\r\nbreak", "control character"),
            ("Host", "evil", "sets this header itself"),
            ("Sec-WebSocket-Key", "x", "sets this header itself"),
            ("last-event-id", "1-1", "sets this header itself"),
        ] {
            match parse_header(name, value) {
                Err(ClientError::InvalidHeader { reason: said, .. }) => {
                    assert!(said.contains(reason), "{name}: {said}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let (name, value) = parse_header("X-Tenant", "acme").expect("valid");
        assert_eq!(
            (name.as_str(), value.as_bytes()),
            ("x-tenant", &b"acme"[..])
        );
    }

    #[test]
    fn secrets_are_sensitive_and_never_printed() {
        let credentials = Credentials::bearer("s3cr3t").expect("valid");
        let value = credentials.headers().get("authorization").expect("set");
        assert!(value.is_sensitive());
        assert_eq!(value.as_bytes(), b"Bearer s3cr3t");
        let printed = format!("{credentials:?}");
        assert!(printed.contains("authorization") && !printed.contains("s3cr3t"));
        assert!(Credentials::bearer("a\nb").is_err());
    }
}

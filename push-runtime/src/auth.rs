//! Authorization: the hook the application provides, asked once per
//! subscription on every transport before anything is subscribed, the
//! [`Principal`] it answers with (who, and until when), and the
//! [`Refusal`] that it (or the publish hook) answers with.

use crate::topic::Topic;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The message of every answer to an expired authorization: the `401` body,
/// and the reason of the WebSocket close `4401`.
pub(crate) const EXPIRED: &str = "authorization expired";

/// The answer to a subscription whose principal's authorization expired
/// (already when admitted, or while a long poll was held): `401`, [`EXPIRED`].
pub(crate) fn expired() -> Response {
    Refusal::unauthorized(EXPIRED).into_response()
}

/// Who a subscription belongs to, as the authorization hook decided: the
/// server's logs name a subscription by its [`id`](Principal::id).
///
/// The hook may also say until when the authorization holds
/// ([`Principal::expires_at`], [`Principal::expires_in`]), e.g. a bearer
/// token's `exp`. A principal already expired when admitted is refused with
/// `401 authorization expired`; at the expiry, a stream ends with the
/// control event `push.expired` (a WebSocket then closes with `4401`) and a
/// held long poll is answered `401`, so that the client comes back with
/// fresh credentials and resumes from its cursor, authorized again.
#[derive(Clone)]
pub struct Principal {
    id: Option<Arc<str>>,
    extra: Option<Arc<dyn Any + Send + Sync>>,
    expires: Option<SystemTime>,
}

impl Principal {
    /// Nobody in particular: what subscriptions get when no hook is set.
    pub fn anonymous() -> Self {
        Self {
            id: None,
            extra: None,
            expires: None,
        }
    }

    /// Someone identified by `id` (e.g. a user name), as logs show it.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self {
            id: Some(id.into()),
            extra: None,
            expires: None,
        }
    }

    /// Attaches any application value (e.g. the user's roles).
    pub fn with<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.extra = Some(Arc::new(value));
        self
    }

    /// The authorization ends at `at` (wall-clock time, e.g. a token's
    /// `exp`): no event is delivered to the subscription at or after it.
    /// A time already past refuses the subscription (`401`).
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires = Some(at);
        self
    }

    /// The authorization ends `lifetime` from now ([`Principal::expires_at`]).
    /// A lifetime past what the clock can count means no expiry.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires = SystemTime::now().checked_add(lifetime);
        self
    }

    /// When the authorization ends, if it does.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }

    /// The id, unless anonymous.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The attached value, if it is a `T`.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.extra.as_deref().and_then(|v| v.downcast_ref())
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("id", &self.id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// What the authorization hook is asked about.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuthRequest {
    /// The request's method, URI, headers (e.g. `Authorization`, `Cookie`)
    /// and extensions.
    pub parts: Parts,
    /// The topic the request wants to read.
    pub topic: Topic,
}

/// A hook's refusal (authorization or publish): an HTTP status and a
/// message for the caller.
#[derive(Debug, Clone)]
pub struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    /// A refusal with any status (use a 4xx) and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// `401 Unauthorized`: the caller did not say who they are.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// `403 Forbidden`: the caller may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

type AuthFuture = Pin<Box<dyn Future<Output = Result<Principal, Refusal>> + Send>>;

/// Decides whether a subscription may start, and who it belongs to.
///
/// Implemented for every `Fn(AuthRequest) -> impl Future<Output = Result<Principal, Refusal>>`;
/// answer [`Refusal::unauthorized`] (`401`) to a caller who did not say who
/// they are and [`Refusal::forbidden`] (`403`) to one who may not read the
/// topic. [`DenyAll`] refuses everything.
pub trait Authorize: Send + Sync + 'static {
    /// The principal of the subscription, or why not.
    fn authorize(&self, request: AuthRequest) -> AuthFuture;
}

impl<F, Fut> Authorize for F
where
    F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Principal, Refusal>> + Send + 'static,
{
    fn authorize(&self, request: AuthRequest) -> AuthFuture {
        Box::pin(self(request))
    }
}

/// Refuses every subscription with `401`: deny-by-default in one line,
/// `ChannelRouter::new(hub).authorize(DenyAll)`, until a real hook replaces it.
#[derive(Clone, Copy, Debug, Default)]
pub struct DenyAll;

impl Authorize for DenyAll {
    fn authorize(&self, _: AuthRequest) -> AuthFuture {
        Box::pin(std::future::ready(Err(Refusal::unauthorized(
            "subscriptions require authorization",
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_carries_its_id_and_value() {
        let principal = Principal::new("ann").with(7_u8);
        assert_eq!(principal.id(), Some("ann"));
        assert_eq!(principal.get::<u8>(), Some(&7));
        assert_eq!(principal.get::<u16>(), None);
        assert_eq!(Principal::anonymous().id(), None);
        assert_eq!(principal.expires(), None);
    }

    #[test]
    fn a_principal_carries_its_expiry() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        assert_eq!(Principal::new("ann").expires_at(at).expires(), Some(at));
        let before = SystemTime::now();
        let soon = Principal::anonymous().expires_in(Duration::from_secs(60));
        let expires = soon.expires().expect("an expiry");
        assert!(expires >= before + Duration::from_secs(60), "{expires:?}");
        assert!(expires <= SystemTime::now() + Duration::from_secs(60));
        assert_eq!(
            Principal::anonymous().expires_in(Duration::MAX).expires(),
            None,
            "a lifetime the clock cannot count is no expiry"
        );
    }
}

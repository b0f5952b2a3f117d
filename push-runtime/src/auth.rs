//! Authorization: the hook the application provides, asked once per
//! subscription on every transport before anything is subscribed, and the
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

/// Who a subscription belongs to, as the authorization hook decided: the
/// server's logs name a subscription by its [`id`](Principal::id).
#[derive(Clone)]
pub struct Principal {
    id: Option<Arc<str>>,
    extra: Option<Arc<dyn Any + Send + Sync>>,
}

impl Principal {
    /// Nobody in particular: what subscriptions get when no hook is set.
    pub fn anonymous() -> Self {
        Self {
            id: None,
            extra: None,
        }
    }

    /// Someone identified by `id` (e.g. a user name), as logs show it.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self {
            id: Some(id.into()),
            extra: None,
        }
    }

    /// Attaches any application value (e.g. the user's roles).
    pub fn with<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.extra = Some(Arc::new(value));
        self
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
    }
}

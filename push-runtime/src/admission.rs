//! What every route of a channel goes through: request size limits and the
//! origin policy (with CORS) first ([`check`]); then, for subscriptions, the
//! topic, the shutdown state, the authorization hook (and the expiry of the
//! principal it answers) and the connection limits ([`admit`]); and last,
//! CORS and `Retry-After` on the answer ([`finish`]). Nothing is subscribed
//! before all of them pass.

use crate::auth::{self, AuthRequest, Principal};
use crate::channel::Channel;
use crate::limits::{self, Limits};
use crate::meter::{ConnectionPermit, Meter, Metered, Outbound};
use crate::origin::{self, Verdict};
use crate::params::SubscribeRejection;
use crate::state::ChannelState;
use crate::stream::timer::after;
use crate::topic::Topic;
use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

/// Which kind of route a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// A streaming subscription: SSE or WebSocket.
    Stream,
    /// A short or long poll (which may also start from `If-None-Match`).
    Poll,
    /// The forever frame, loaded by a frame navigation.
    Frame,
    /// `POST {base}/{topic}` (its own hook authorizes it).
    Publish,
}

/// A subscription that passed every check: its place in the connection
/// count (freed when the last clone is dropped).
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    _permit: Arc<ConnectionPermit>,
    meter: Arc<Meter>,
}

impl Admission {
    /// Accounting for one connection's unwritten bytes.
    pub(crate) fn outbound(&self, limits: &Limits) -> Arc<Outbound> {
        Outbound::new(Arc::clone(&self.meter), limits)
    }

    /// A streaming response body, metered and bounded per [`Limits`], that
    /// keeps this admission (and so the connection count) until it ends.
    pub(crate) fn body<S>(self, stream: S, limits: &Limits) -> Body
    where
        S: Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
    {
        let outbound = self.outbound(limits);
        Body::from_stream(Metered::new(stream, outbound, self))
    }
}

fn forbidden(reason: &str, path: &str) -> Response {
    tracing::warn!(%reason, path, "refused a request from another origin");
    (StatusCode::FORBIDDEN, format!("forbidden: {reason}")).into_response()
}

/// What a subscription route's handler gets once every check passed: the
/// request (its body is not read), the validated topic, the admission and
/// the end of the authorization, if the hook set one.
pub(crate) struct Admitted {
    pub(crate) parts: Parts,
    pub(crate) topic: Topic,
    pub(crate) admission: Admission,
    /// When the principal's authorization ends, on the runtime's clock.
    pub(crate) expiry: Option<Instant>,
}

/// The principal's expiry on the runtime's clock, converted once, here:
/// `Err` if it is already past (or now).
fn expiry(principal: Option<&Principal>) -> Result<Option<Instant>, ()> {
    let Some(at) = principal.and_then(Principal::expires) else {
        return Ok(None);
    };
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(left) if !left.is_zero() => Ok(Some(after(now, left))),
        _ => Err(()),
    }
}

/// The checks every route of a channel shares, before anything else: the
/// request-size limits and the origin policy. `Ok` carries the other
/// origin to answer with CORS headers, if any ([`finish`]); `Err` is the
/// final answer: a refusal, or a preflight's (`OPTIONS`) answer.
///
/// Plain functions the handlers call rather than a middleware layer: a
/// layer cost every request a boxed future, a second trip through a boxed
/// route and a second extraction of the path.
#[expect(
    clippy::result_large_err,
    reason = "the error is the answer itself, returned once per refused request"
)]
pub(crate) fn check<C: Channel>(
    state: &ChannelState<C>,
    route: RouteKind,
    request: &Request,
) -> Result<Option<String>, Response> {
    if let Err(refusal) = limits::check_target(request.uri(), &state.limits) {
        return Err(refusal.into_response());
    }
    let cross = match state
        .origins
        .judge(request.headers(), route == RouteKind::Frame)
    {
        Verdict::Own => None,
        Verdict::Cross(origin) => Some(origin),
        Verdict::Refused(reason) => return Err(forbidden(&reason, request.uri().path())),
    };
    if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        origin::preflight_headers(response.headers_mut());
        return Err(finish(state, cross, response));
    }
    Ok(cross)
}

/// What every answer of a channel's routes gets once [`check`] passed: CORS
/// headers for an allowed other origin, and `Retry-After` on every `503`.
pub(crate) fn finish<C>(
    state: &ChannelState<C>,
    cross: Option<String>,
    mut response: Response,
) -> Response {
    if let Some(origin) = cross {
        origin::cors_headers(response.headers_mut(), &origin);
    }
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        // Every 503 (`limits::unavailable`) says when to come back, as configured.
        response.headers_mut().insert(
            header::RETRY_AFTER,
            limits::retry_after_header(&state.limits),
        );
    }
    response
}

/// The checks of a subscription after [`check`]: the topic, the shutdown
/// state, the authorization hook (a principal already expired is refused
/// `401 authorization expired`), then the connection limits. `Err` is the
/// refusal to answer.
pub(crate) async fn admit<C: Channel>(
    state: &ChannelState<C>,
    topic: &str,
    request: Request,
) -> Result<Admitted, Response> {
    let topic: Topic = match state.hub.topic(topic) {
        Ok(topic) => topic,
        Err(error) => return Err(SubscribeRejection::from(error).into_response()),
    };
    if state.hub.shutdown_signal().is_triggered() {
        return Err(limits::unavailable("the server is shutting down"));
    }
    let (parts, _body) = request.into_parts();
    let (parts, principal) = match &state.authorize {
        None => (parts, None),
        Some(hook) => {
            let request = AuthRequest {
                parts,
                topic: topic.clone(),
            };
            let parts = request.parts.clone();
            match hook.authorize(request).await {
                Ok(principal) => (parts, Some(principal)),
                Err(refusal) => {
                    tracing::debug!(?refusal, %topic, "subscription refused by the authorization hook");
                    return Err(refusal.into_response());
                }
            }
        }
    };
    let Ok(expiry) = expiry(principal.as_ref()) else {
        tracing::debug!(?principal, %topic, "subscription refused: its authorization expired");
        return Err(auth::expired());
    };
    let meter = state.hub.meter();
    let permit = match meter.admit(&topic, &state.limits) {
        Ok(permit) => permit,
        Err(refusal) => {
            meter.count_refusal();
            return Err(refusal.into_response());
        }
    };
    let principal = principal.as_ref().and_then(|p| p.id());
    tracing::debug!(principal, %topic, ?expiry, "subscription admitted");
    Ok(Admitted {
        parts,
        topic,
        admission: Admission {
            _permit: Arc::new(permit),
            meter: Arc::clone(meter),
        },
        expiry,
    })
}

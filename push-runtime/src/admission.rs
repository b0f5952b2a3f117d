//! What every route of a channel goes through before its handler: request
//! size limits, the origin policy (with CORS), then, for subscriptions, the
//! topic, the authorization hook and the connection limits. Nothing is
//! subscribed before all of them pass.

use crate::auth::{AuthRequest, Principal};
use crate::channel::Channel;
use crate::limits::{self, Limits};
use crate::meter::{ConnectionPermit, Meter, Metered, Outbound};
use crate::origin::{self, Verdict};
use crate::params::SubscribeRejection;
use crate::router::ChannelState;
use crate::topic::Topic;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use std::convert::Infallible;
use std::sync::Arc;

/// Which kind of route a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// A subscription route other than the forever frame.
    Subscribe,
    /// The forever frame, loaded by a frame navigation.
    Frame,
    /// `POST {base}/{topic}` (its own hook authorizes it).
    Publish,
}

/// A subscription that passed every check: who it is, and its place in
/// the connection count (freed when the last clone is dropped).
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    pub(crate) principal: Principal,
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
        Body::from_stream(Metered::new(stream, outbound, Box::new(self)))
    }
}

fn forbidden(reason: &str, path: &str) -> Response {
    tracing::warn!(%reason, path, "refused a request from another origin");
    (StatusCode::FORBIDDEN, format!("forbidden: {reason}")).into_response()
}

/// The middleware in front of every route of a channel.
pub(crate) async fn guard<C: Channel>(
    State((state, route)): State<(Arc<ChannelState<C>>, RouteKind)>,
    Path(topic): Path<String>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(refusal) = limits::check_target(request.uri(), &state.limits) {
        return refusal.response(state.limits.retry_after);
    }
    let cross = match state
        .origins
        .judge(request.headers(), route == RouteKind::Frame)
    {
        Verdict::Own => None,
        Verdict::Cross(origin) => Some(origin),
        Verdict::Refused(reason) => return forbidden(&reason, request.uri().path()),
    };
    let mut response = if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        origin::preflight_headers(response.headers_mut());
        response
    } else if route == RouteKind::Publish {
        next.run(request).await
    } else {
        admit(&state, &topic, request, next).await
    };
    if let Some(origin) = cross {
        origin::cors_headers(response.headers_mut(), &origin);
    }
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        // Every 503 (a full broker too) says when to come back, as configured.
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(state.limits.retry_after.as_secs().max(1)),
        );
    }
    response
}

async fn admit<C: Channel>(
    state: &ChannelState<C>,
    topic: &str,
    request: Request,
    next: Next,
) -> Response {
    let topic: Topic = match state.hub.topic(topic) {
        Ok(topic) => topic,
        Err(error) => return SubscribeRejection::from(error).into_response(),
    };
    if state.hub.shutdown_signal().is_triggered() {
        return unavailable("the server is shutting down", &state.limits);
    }
    let (mut parts, body) = request.into_parts();
    let principal = match &state.authorize {
        None => Principal::anonymous(),
        Some(hook) => {
            let request = AuthRequest {
                parts: parts.clone(),
                topic: topic.clone(),
            };
            match hook.authorize(request).await {
                Ok(principal) => principal,
                Err(refusal) => {
                    tracing::debug!(?refusal, %topic, "subscription refused by the authorization hook");
                    return refusal.into_response();
                }
            }
        }
    };
    let meter = state.hub.meter();
    let permit = match meter.admit(&topic, &state.limits) {
        Ok(permit) => permit,
        Err(refusal) => {
            meter.count_refusal();
            return refusal.response(state.limits.retry_after);
        }
    };
    tracing::debug!(principal = principal.id(), %topic, "subscription admitted");
    parts.extensions.insert(principal.clone());
    parts.extensions.insert(Admission {
        principal,
        _permit: Arc::new(permit),
        meter: Arc::clone(meter),
    });
    next.run(Request::from_parts(parts, body)).await
}

/// `503` with `Retry-After`.
pub(crate) fn unavailable(message: &str, limits: &Limits) -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, message.to_owned()).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(limits.retry_after.as_secs().max(1)),
    );
    response
}

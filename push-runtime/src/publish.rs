//! The publish endpoint, `POST {base}/{topic}`: off unless a hook is set
//! ([`ChannelRouter::publish`](crate::ChannelRouter::publish)), it publishes
//! the JSON body as an event once the hook allows it.

use crate::admission::{self, RouteKind};
use crate::auth::Refusal;
use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::hub::PublishError;
use crate::limits;
use crate::state::{ChannelState, RouteState};
use crate::topic::Topic;
use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The largest publish request body accepted by default, in bytes.
pub const DEFAULT_MAX_PUBLISH_BODY: usize = 64 * 1024;

/// An event someone asks to publish over HTTP, handed to the publish hook.
#[derive(Debug)]
#[non_exhaustive]
pub struct PublishRequest<C> {
    /// The request's method, URI, headers and extensions (e.g. for auth).
    pub parts: Parts,
    /// The topic to publish to.
    pub topic: Topic,
    /// The event, deserialized from the body.
    pub event: C,
}

type HookFuture<C> = Pin<Box<dyn Future<Output = Result<C, Refusal>> + Send>>;

/// Decides whether an HTTP publish goes through, and may rewrite the event
/// (e.g. stamp the sender from the caller's credentials).
///
/// Implemented for every `Fn(PublishRequest<C>) -> impl Future<Output = Result<C, Refusal>>`.
pub trait PublishHook<C>: Send + Sync + 'static {
    /// Returns the event to publish, or why not.
    fn check(&self, request: PublishRequest<C>) -> HookFuture<C>;
}

impl<C, F, Fut> PublishHook<C> for F
where
    F: Fn(PublishRequest<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C, Refusal>> + Send + 'static,
{
    fn check(&self, request: PublishRequest<C>) -> HookFuture<C> {
        Box::pin(self(request))
    }
}

/// The publish route's settings.
pub(crate) struct PublishConfig<C> {
    pub(crate) hook: Arc<dyn PublishHook<C>>,
    /// The largest body accepted, in bytes.
    pub(crate) max_body: usize,
}

#[derive(serde::Serialize)]
struct Published {
    cursor: Cursor,
}

/// `POST {base}/{topic}`.
pub(crate) async fn handler<C: Channel>(
    State(route): State<Arc<RouteState<C, PublishConfig<C>>>>,
    Path(topic): Path<String>,
    mut request: Request,
) -> Response {
    let channel = &route.channel;
    let grant = match admission::check(channel, RouteKind::Publish, &mut request) {
        Ok(grant) => grant,
        Err(answer) => return answer,
    };
    let response = publish(channel, &*route.config.hook, &topic, request).await;
    admission::finish(channel, grant, response)
}

async fn publish<C: Channel>(
    state: &ChannelState<C>,
    hook: &dyn PublishHook<C>,
    topic: &str,
    request: Request,
) -> Response {
    let topic = match state.hub.topic(topic) {
        Ok(topic) => topic,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let (parts, body) = request.into_parts();
    let Json(event) =
        match Json::<C>::from_request(Request::from_parts(parts.clone(), body), &()).await {
            Ok(json) => json,
            Err(rejection) => return rejection.into_response(),
        };
    let event = match hook
        .check(PublishRequest {
            parts,
            topic: topic.clone(),
            event,
        })
        .await
    {
        Ok(event) => event,
        Err(refusal) => return refusal.into_response(),
    };
    match state.hub.publish(topic.as_str(), &event).await {
        Ok(cursor) => Json(Published { cursor }).into_response(),
        Err(PublishError::Encode(error)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("could not serialize the event: {error}"),
        )
            .into_response(),
        Err(error @ PublishError::TooLarge { .. }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, error.to_string()).into_response()
        }
        Err(PublishError::Broker(error)) if error.is_transient() => {
            tracing::warn!(%error, "publishing over HTTP failed for now");
            limits::unavailable(error.to_string())
        }
        Err(error) => {
            tracing::error!(%error, "publishing over HTTP failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the event could not be published",
            )
                .into_response()
        }
    }
}

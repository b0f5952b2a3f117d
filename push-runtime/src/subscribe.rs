//! The subscribe step every subscription route takes, written once: the
//! route's checks ([`admission`](crate::admission)), the start and filter
//! (`after`, `Last-Event-ID`, `If-None-Match`, `events`), the transport's
//! own parameters, the subscription to the hub, then the transport's answer,
//! then CORS and `Retry-After` on it.
//!
//! A transport adds only what is its own: parameters (a poll's `limit` and
//! `timeout`, the frame's `origin`, the WebSocket handshake) and what it
//! does with the subscription.

use crate::admission::{self, Admission, Admitted, RouteKind};
use crate::channel::Channel;
use crate::history::{Start, Subscription};
use crate::meter::Transport;
use crate::params::{self, PollTag, Query, SubscribeRejection, SubscribeRequest};
use crate::state::ChannelState;
use crate::topic::Topic;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::future::Future;
use tokio::time::Instant;

/// A subscription that every check passed, handed to its transport.
pub(crate) struct Subscribed<P> {
    /// Positioned at the request's start, filtered as it asked.
    pub(crate) subscription: Subscription,
    /// Its place in the connection count, to keep until the connection ends.
    pub(crate) admission: Admission,
    /// Where it asked to start.
    pub(crate) start: Start,
    /// The tag of `If-None-Match`, on the routes of kind [`RouteKind::Poll`].
    pub(crate) tag: Option<PollTag>,
    /// When its authorization ends (the principal's expiry on the
    /// runtime's clock), if it does: the transport delivers nothing at or
    /// after it.
    pub(crate) expiry: Option<Instant>,
    /// The transport's own parameters.
    pub(crate) params: P,
}

/// Runs the subscribe step for the request to `topic`, then `open`.
///
/// `own` reads the transport's own parameters from the request (its body is
/// never read) once the common ones are valid; its `Err` is the answer.
/// The request is dropped before the subscription is awaited, so a held
/// long poll keeps none of it.
pub(crate) async fn subscribe<C, P, E, Fut>(
    channel: &ChannelState<C>,
    transport: Transport,
    topic: &str,
    mut request: Request,
    own: impl FnOnce(&mut Parts, &Query<'_>) -> Result<P, E>,
    open: impl FnOnce(Subscribed<P>) -> Fut,
) -> Response
where
    C: Channel,
    E: IntoResponse,
    Fut: Future<Output: IntoResponse>,
{
    let grant = match admission::check(channel, RouteKind::of(transport), &mut request) {
        Ok(grant) => grant,
        Err(answer) => return answer,
    };
    // One async layer (no nested async fn taking the request): each layer
    // would keep a slot of its own for the request in a held long poll.
    let response = match admission::admit(channel, topic, request, transport).await {
        Err(refusal) => refusal,
        Ok(admitted) => match read::<C, P, E>(RouteKind::of(transport), admitted, own) {
            Err(refusal) => refusal.into_response(),
            Ok(Read {
                topic,
                request: SubscribeRequest { start, filter, tag },
                admission,
                expiry,
                params,
            }) => match channel.hub.subscribe_topic(&topic, start, filter).await {
                Err(error) => SubscribeRejection::from(error).into_response(),
                Ok(subscription) => open(Subscribed {
                    subscription,
                    admission,
                    start,
                    tag,
                    expiry,
                    params,
                })
                .await
                .into_response(),
            },
        },
    };
    admission::finish(channel, grant, response)
}

/// The own parameters of a transport that has none.
pub(crate) fn no_params(_: &mut Parts, _: &Query<'_>) -> Result<(), Infallible> {
    Ok(())
}

/// A request whose parameters are valid, without the request.
struct Read<P> {
    topic: Topic,
    request: SubscribeRequest,
    admission: Admission,
    expiry: Option<Instant>,
    params: P,
}

/// Why the parameters are refused: the common ones, or the transport's own.
enum Refused<E> {
    Common(SubscribeRejection),
    Own(E),
}

impl<E: IntoResponse> IntoResponse for Refused<E> {
    fn into_response(self) -> Response {
        match self {
            Self::Common(rejection) => rejection.into_response(),
            Self::Own(rejection) => rejection.into_response(),
        }
    }
}

/// Reads the parameters, the common ones then the transport's own, and
/// drops the request's parts.
fn read<C: Channel, P, E>(
    route: RouteKind,
    admitted: Admitted,
    own: impl FnOnce(&mut Parts, &Query<'_>) -> Result<P, E>,
) -> Result<Read<P>, Refused<E>> {
    let Admitted {
        mut parts,
        topic,
        admission,
        expiry,
    } = admitted;
    // The query borrows the target while `own` may take from the parts
    // (the WebSocket handshake does): a clone shares the target's bytes.
    let uri = parts.uri.clone();
    let query = Query::new(uri.query());
    let request = params::parse::<C>(&query, &parts.headers, route == RouteKind::Poll)
        .map_err(Refused::Common)?;
    let params = own(&mut parts, &query).map_err(Refused::Own)?;
    Ok(Read {
        topic,
        request,
        admission,
        expiry,
        params,
    })
}

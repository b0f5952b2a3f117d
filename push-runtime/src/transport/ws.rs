//! WebSocket: `GET {base}/{topic}/ws`.
//!
//! Each event is one text message `{"cursor":…,"event":…,"data":…}`, framed
//! once per publish and shared. Everything pending is fed before one flush.

use crate::admission::Admission;
use crate::auth;
use crate::channel::Channel;
use crate::history::{Delivery, EncodedEvent, FrameSlot, Framing, Subscription};
use crate::meter::{Outbound, Transport};
use crate::params::Query;
use crate::shutdown::ShutdownWaiter;
use crate::state::{ChannelState, RouteState};
use crate::stream::batch::clear_batch;
use crate::stream::timer::after;
use crate::stream::woken::Woken;
use crate::stream::{Expiry, Timer};
use crate::subscribe::{self, Subscribed};
use crate::wire;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::future::Future as _;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Settings of the WebSocket transport.
#[derive(Clone, Debug)]
pub struct WsConfig {
    pub(crate) ping_interval: Duration,
    pub(crate) max_batch: usize,
    pub(crate) max_incoming: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(20),
            max_batch: 256,
            max_incoming: 4096,
        }
    }
}

impl WsConfig {
    /// How often the server pings (default 20 s). A peer silent for two
    /// intervals is closed with `1001`.
    pub fn ping_interval(mut self, every: Duration) -> Self {
        self.ping_interval = every.max(Duration::from_millis(1));
        self
    }

    /// The most events fed to a connection before one flush (default 256).
    pub fn max_batch(mut self, events: usize) -> Self {
        self.max_batch = events.max(1);
        self
    }

    /// The largest message or frame a client may send, in bytes (default
    /// 4 KiB; clients only send control frames). Larger ones close with `1009`.
    pub fn max_incoming(mut self, bytes: usize) -> Self {
        self.max_incoming = bytes.max(125);
        self
    }
}

/// The close code of a connection whose authorization expired (after the
/// `push.expired` message): reconnect with fresh credentials and resume.
pub(crate) const CLOSE_EXPIRED: u16 = 4401;

/// The WebSocket read buffer, in bytes: room for a control frame (at most
/// 131 bytes from a client); larger frames take more reads. Every idle
/// connection keeps it: 512 bytes made one 4.13 KiB in all, 256 make it 3.85.
const READ_BUFFER: usize = 256;

/// An event's WebSocket message: the JSON message of [`wire::Message`] as
/// checked UTF-8 text, checked once per event so that sending it to each
/// subscriber does not check it again.
pub(crate) struct Text;

impl Framing for Text {
    type Frame = Utf8Bytes;
    const SLOT: FrameSlot = FrameSlot::new(3);

    fn frame(event: &EncodedEvent) -> Utf8Bytes {
        text(event.frame::<wire::Message>())
    }
}

/// Wire messages are UTF-8 by construction (`wire::message`).
fn text(message: Bytes) -> Utf8Bytes {
    Utf8Bytes::try_from(message.clone())
        .unwrap_or_else(|_| Utf8Bytes::from(String::from_utf8_lossy(&message).into_owned()))
}

fn delivery_text(delivery: &Delivery) -> Utf8Bytes {
    match delivery {
        Delivery::Event(event) => event.frame::<Text>(),
        Delivery::Gap(_) => text(wire::delivery_message(delivery)),
    }
}

/// `GET {base}/{topic}/ws`.
pub(crate) async fn handler<C: Channel>(
    State(route): State<Arc<RouteState<C, WsConfig>>>,
    Path(topic): Path<String>,
    request: Request,
) -> Response {
    let channel = &route.channel;
    let open = |subscribed| async { open(channel, &route.config, subscribed) };
    subscribe::subscribe(channel, Transport::Ws, &topic, request, handshake, open).await
}

/// The WebSocket's own parameters: the handshake. Read after the common
/// ones, so a bad request is a plain 400 whether or not it upgrades.
fn handshake(parts: &mut Parts, _: &Query<'_>) -> Result<WebSocketUpgrade, Handshake> {
    // axum's extraction only inspects the parts: it is ready at once.
    match WebSocketUpgrade::from_request_parts(parts, &()).now_or_never() {
        Some(Ok(upgrade)) => Ok(upgrade),
        Some(Err(rejection)) => Err(Handshake::Refused(rejection)),
        None => Err(Handshake::Pending),
    }
}

/// Why a request is not a usable WebSocket handshake.
enum Handshake {
    Refused(WebSocketUpgradeRejection),
    /// axum's extraction waited, which it never does today.
    Pending,
}

impl IntoResponse for Handshake {
    fn into_response(self) -> Response {
        match self {
            Self::Refused(rejection) => refuse_upgrade(rejection),
            Self::Pending => {
                tracing::error!("the WebSocket handshake could not be read at once");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

fn open<C: Channel>(
    channel: &ChannelState<C>,
    config: &WsConfig,
    subscribed: Subscribed<WebSocketUpgrade>,
) -> Response {
    let Subscribed {
        subscription,
        admission,
        params: upgrade,
        expiry,
        ..
    } = subscribed;
    let config = config.clone();
    let outbound = admission.outbound(&channel.limits);
    let shutdown = channel.hub.shutdown_signal().waiter();
    // tungstenite writes out once this much is buffered, and fails (so the
    // connection is dropped) rather than buffer past the hard cap.
    let budget = outbound.budget();
    upgrade
        .max_message_size(config.max_incoming)
        .max_frame_size(config.max_incoming)
        // tungstenite zero-fills its whole read buffer (128 KiB by default)
        // before every read attempt, and the pump polls for a read at every
        // wakeup: that memset was 40% of the CPU of a fan-out, and it made
        // each idle connection resident for 128 KiB. Clients send only
        // control frames; a larger frame grows the buffer as it arrives.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(budget)
        .max_write_buffer_size(write_cap(budget, channel.hub.config().max_event_size))
        .on_upgrade(move |socket| {
            let link = Link {
                outbound,
                shutdown,
                expiry: expiry.map(Expiry::at),
                _admission: admission,
            };
            serve(socket, subscription, config, link)
        })
}

/// The hard cap of tungstenite's write buffer, given its soft size (`budget`:
/// past it tungstenite writes out) and the hub's largest event.
///
/// tungstenite refuses a message that does not fit under the cap
/// (`WriteBufferFull`), which ends the connection; the client would resume
/// from the same cursor and fail on the same event forever. A message is
/// queued only while the buffer holds at most `budget` bytes (past it, a
/// write drains the buffer before the next message is taken), so the cap
/// must hold `budget` plus one message of the largest event, its JSON
/// envelope, the frame header and a queued pong or close: whatever the size
/// of a batch, every event the hub accepts can be sent. At least four
/// budgets, so that small events are queued without waiting as before.
fn write_cap(budget: usize, max_event_size: usize) -> usize {
    /// A frame header (at most 14 bytes) and a queued control frame (at most 131).
    const FRAMING: usize = 1024;
    let largest = max_event_size
        .saturating_add(wire::MAX_MESSAGE_OVERHEAD)
        .saturating_add(FRAMING);
    budget.saturating_add(largest).max(budget.saturating_mul(4))
}

/// What a connection keeps beside its socket and subscription.
struct Link {
    outbound: std::sync::Arc<Outbound>,
    shutdown: ShutdownWaiter,
    /// The end of the authorization, if it has one.
    expiry: Option<Box<Expiry>>,
    /// Holds the connection's place in the count until it ends.
    _admission: Admission,
}

/// Answers a request that is not a usable WebSocket handshake.
///
/// A request that does not ask for an upgrade at all (a plain `GET`, or one
/// whose `Connection`/`Upgrade` headers a proxy stripped) gets
/// `426 Upgrade Required` with `Upgrade: websocket`, so a client can tell it
/// from a refusal of the request itself and fall back to another transport.
/// A malformed handshake keeps axum's precise `400`/`405`.
fn refuse_upgrade(rejection: WebSocketUpgradeRejection) -> Response {
    match rejection {
        WebSocketUpgradeRejection::InvalidConnectionHeader(_)
        | WebSocketUpgradeRejection::InvalidUpgradeHeader(_)
        | WebSocketUpgradeRejection::ConnectionNotUpgradable(_) => (
            StatusCode::UPGRADE_REQUIRED,
            [
                (header::UPGRADE, "websocket"),
                (header::CONNECTION, "upgrade"),
            ],
            "this route speaks WebSocket only: send a WebSocket upgrade request",
        )
            .into_response(),
        WebSocketUpgradeRejection::InvalidWebSocketVersionHeader(_) => (
            StatusCode::UPGRADE_REQUIRED,
            [(header::SEC_WEBSOCKET_VERSION, "13")],
            "unsupported WebSocket version: only version 13 is spoken",
        )
            .into_response(),
        other => other.into_response(),
    }
}

/// Why a connection ended.
enum End {
    /// The peer closed or vanished: nothing more to say.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The authorization ended: `push.expired`, then close with
    /// [`CLOSE_EXPIRED`].
    Expired,
}

async fn serve(
    mut socket: WebSocket,
    mut subscription: Subscription,
    config: WsConfig,
    mut link: Link,
) {
    let ready = wire::control_message(subscription.resume_point(), wire::READY);
    let mut end = match socket.send(Message::Text(text(ready))).await {
        Ok(()) => pump(&mut socket, &mut subscription, &config, &mut link).await,
        Err(_) => End::Gone,
    };
    if let End::Expired = end {
        link.outbound.meter().count_expiry_cut();
        // Where to resume with fresh credentials: nothing was taken from
        // the subscription since its last batch was written.
        let expired = wire::control_message(subscription.resume_point(), wire::EXPIRED);
        let sent = tokio::time::timeout(
            link.outbound.stall_timeout(),
            socket.send(Message::Text(text(expired))),
        )
        .await;
        end = match sent {
            Ok(Ok(())) => End::Close(CLOSE_EXPIRED, auth::EXPIRED),
            _ => End::Gone,
        };
    }
    if let End::Close(code, reason) = end {
        tracing::debug!(code, reason, "closing websocket");
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        // The peer may already be gone (or stopped reading): there is
        // nobody left to tell, and no reason to wait for it.
        let _ = tokio::time::timeout(
            link.outbound.stall_timeout(),
            socket.send(Message::Close(Some(frame))),
        )
        .await;
    }
}

/// Writes a batch, counting its bytes as buffered until the flush completes;
/// `false` if the peer is gone or took nothing for the stall timeout.
async fn write_batch(socket: &mut WebSocket, batch: &[Delivery], outbound: &Outbound) -> bool {
    let mut fed = 0;
    let write = async {
        for delivery in batch {
            let message = delivery_text(delivery);
            let len = message.len();
            socket.feed(Message::Text(message)).await?;
            outbound.add(len);
            fed += len;
        }
        socket.flush().await
    };
    let result = {
        let mut write = std::pin::pin!(write);
        // Most writes complete at once; one that waits for the socket is counted.
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
        match first {
            std::task::Poll::Ready(result) => Ok(result),
            std::task::Poll::Pending => {
                outbound.hold(true);
                let result = tokio::time::timeout(outbound.stall_timeout(), write).await;
                outbound.hold(false);
                result
            }
        }
    };
    outbound.release(fed);
    match result {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            outbound.count_stall();
            tracing::info!("cutting a websocket that stopped reading");
            false
        }
    }
}

async fn pump(
    socket: &mut WebSocket,
    subscription: &mut Subscription,
    config: &WsConfig,
    link: &mut Link,
) -> End {
    let mut batch = Vec::new();
    let mut last_heard = Instant::now();
    let mut ping = Timer::at(after(Instant::now(), config.ping_interval));
    let reads = Woken::new();
    // The socket and the timer come first (free unless they woke the task),
    // so a stream of events never starves pongs, closes or pings; right
    // after a message from the peer, events do, so a peer sending without
    // pause never starves the stream either.
    let mut events_first = false;
    loop {
        clear_batch(&mut batch);
        let next = std::future::poll_fn(|cx| {
            // First, so that no batch is taken at or after the expiry.
            if let Some(expiry) = link.expiry.as_deref_mut()
                && expiry.poll(cx).is_ready()
            {
                return Poll::Ready(Next::Expired);
            }
            if link.shutdown.poll_wait(cx).is_ready() {
                return Poll::Ready(Next::Shutdown);
            }
            let mut events = |cx: &mut Context<'_>| {
                subscription
                    .poll_next_batch(cx, &mut batch, config.max_batch)
                    .map(|_| Next::Batch)
            };
            if events_first && let Poll::Ready(next) = events(cx) {
                return Poll::Ready(next);
            }
            if let Poll::Ready(incoming) = reads.poll(cx, |cx| socket.poll_next_unpin(cx)) {
                return Poll::Ready(Next::Incoming(incoming));
            }
            if ping.poll(cx).is_ready() {
                return Poll::Ready(Next::Ping);
            }
            if events_first {
                Poll::Pending
            } else {
                events(cx)
            }
        })
        .await;
        events_first = matches!(next, Next::Incoming(_));
        match next {
            Next::Batch => {
                if !write_batch(socket, &batch, &link.outbound).await {
                    return End::Gone;
                }
            }
            Next::Shutdown => {
                return End::Close(
                    close_code::AWAY,
                    "server shutting down; reconnect and resume",
                );
            }
            Next::Expired => return End::Expired,
            Next::Incoming(incoming) => {
                last_heard = Instant::now();
                match incoming {
                    None => return End::Gone,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) => return End::Gone,
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                        return End::Close(
                            close_code::POLICY,
                            "clients may only send ping, pong and close",
                        );
                    }
                    Some(Err(error)) => return close_for(&error),
                }
            }
            Next::Ping => {
                ping.reset(after(Instant::now(), config.ping_interval));
                if last_heard.elapsed() >= config.ping_interval.saturating_mul(2) {
                    return End::Close(close_code::AWAY, "no pong from the peer");
                }
                let ping = socket.send(Message::Ping(Bytes::new()));
                if !matches!(
                    tokio::time::timeout(link.outbound.stall_timeout(), ping).await,
                    Ok(Ok(()))
                ) {
                    return End::Gone;
                }
            }
        }
    }
}

/// What woke a connection's pump.
enum Next {
    Batch,
    Shutdown,
    Expired,
    Incoming(Option<Result<Message, axum::Error>>),
    Ping,
}

fn close_for(error: &axum::Error) -> End {
    use tungstenite::error::{CapacityError, Error as WsError};
    let cause = std::error::Error::source(error).and_then(|e| e.downcast_ref::<WsError>());
    match cause {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
            End::Close(close_code::SIZE, "message too big")
        }
        Some(WsError::Protocol(_) | WsError::Capacity(_) | WsError::Utf8(_)) => {
            End::Close(close_code::PROTOCOL, "protocol error")
        }
        _ => End::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_cap_holds_a_budget_and_one_maximal_message() {
        for max in [0, 1024, 1024 * 1024, 2 * 1024 * 1024, 64 * 1024 * 1024] {
            for budget in [1, 64 * 1024, 1024 * 1024] {
                let cap = write_cap(budget, max);
                let message = max + wire::MAX_MESSAGE_OVERHEAD + 14;
                assert!(cap >= budget + message, "{budget} {max}");
                assert!(cap >= 4 * budget);
            }
        }
        assert_eq!(write_cap(usize::MAX, usize::MAX), usize::MAX);
    }
}

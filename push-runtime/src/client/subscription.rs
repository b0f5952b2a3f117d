//! The subscription stream: connect, read, interpret, reconnect.

use super::error::ClientError;
use super::frame::{Meaning, Read, interpret};
use super::reconnect::Reconnect;
use super::sse::SseConnection;
use super::ws::WsConnection;
use super::{Client, Transport, Update};
use crate::channel::Channel;
use crate::cursor::Cursor;
use futures_util::Stream;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// What a subscription connects to.
pub(crate) struct Target<C> {
    pub(crate) client: Client<C>,
    pub(crate) topic: String,
    pub(crate) transport: Transport,
    /// The `events` query value, already encoded.
    pub(crate) events: Option<String>,
}

type Item<C> = Result<Update<C>, ClientError>;

/// A live subscription: a [`Stream`] of [`Update`]s that reconnects by
/// itself. Made by [`Subscribe::stream`](super::Subscribe::stream).
///
/// The stream ends after yielding a permanent error (or
/// [`ClientError::GaveUp`]); otherwise it goes on forever. Dropping it closes
/// the connection.
pub struct Subscription<C> {
    inner: Pin<Box<dyn Stream<Item = Item<C>> + Send>>,
    position: Option<Cursor>,
}

impl<C> fmt::Debug for Subscription<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl<C: Channel> Subscription<C> {
    pub(crate) fn start(target: Target<C>, after: Option<Cursor>) -> Self {
        let driver = Driver {
            reconnect: Reconnect::new(&target.client.config),
            target,
            position: after,
            connection: None,
            delay: None,
            finished: false,
        };
        let inner = futures_util::stream::unfold(driver, |mut driver| async move {
            let item = driver.next().await?;
            Some((item, driver))
        });
        Self {
            inner: Box::pin(inner),
            position: after,
        }
    }
}

impl<C> Subscription<C> {
    /// The last position seen: the cursor of the last event (or undecodable
    /// event), gap end or `push.ready` yielded, or the `after` cursor before
    /// any. This is where a reconnection resumes, and what to store to resume
    /// later with [`Subscribe::after`](super::Subscribe::after).
    pub fn position(&self) -> Option<Cursor> {
        self.position
    }
}

impl<C> Stream for Subscription<C> {
    type Item = Item<C>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<C>>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(item)) = &polled {
            // The driver moved its own position the same way before yielding.
            if let Some(cursor) = position_of(item) {
                self.position = Some(cursor);
            }
        }
        polled
    }
}

/// The position an item moves the subscription to, if any.
fn position_of<C>(item: &Item<C>) -> Option<Cursor> {
    match item {
        Ok(Update::Ready { cursor }) | Ok(Update::Event { cursor, .. }) => Some(*cursor),
        Ok(Update::Gap(gap)) => Some(gap.to),
        Err(ClientError::Decode { cursor, .. }) => Some(*cursor),
        _ => None,
    }
}

enum Connection {
    Sse(SseConnection),
    Ws(WsConnection),
}

impl Connection {
    async fn next(&mut self) -> Result<Read, ClientError> {
        match self {
            Connection::Sse(connection) => connection.next().await,
            Connection::Ws(connection) => connection.next().await,
        }
    }
}

/// The state behind a [`Subscription`].
struct Driver<C> {
    target: Target<C>,
    reconnect: Reconnect,
    position: Option<Cursor>,
    connection: Option<Connection>,
    /// The wait before the next connection attempt.
    delay: Option<Duration>,
    finished: bool,
}

impl<C: Channel> Driver<C> {
    async fn next(&mut self) -> Option<Item<C>> {
        loop {
            if self.finished {
                return None;
            }
            let connection = match &mut self.connection {
                Some(connection) => connection,
                None => {
                    if let Some(delay) = self.delay.take() {
                        tokio::time::sleep(delay).await;
                    }
                    match connect(&self.target, self.position).await {
                        Ok(connection) => self.connection.insert(connection),
                        Err(error) => return Some(self.failed(error)),
                    }
                }
            };
            let read = match connection.next().await {
                Ok(read) => read,
                Err(error) => {
                    self.connection = None;
                    return Some(self.failed(error));
                }
            };
            let frame = match read {
                Read::Frame(frame) => frame,
                Read::Skipped(error) => return Some(Err(error)),
            };
            match interpret::<C>(&frame) {
                Meaning::Ready(cursor) => {
                    tracing::debug!(topic = %self.target.topic, %cursor, "subscription ready");
                    self.reconnect.reset();
                    self.position = Some(cursor);
                    return Some(Ok(Update::Ready { cursor }));
                }
                Meaning::Gap(gap) => {
                    self.position = Some(gap.to);
                    return Some(Ok(Update::Gap(gap)));
                }
                Meaning::Event { cursor, event } => {
                    self.position = Some(cursor);
                    return Some(Ok(Update::Event { cursor, event }));
                }
                Meaning::Ignored => {}
                Meaning::Invalid(error) => {
                    if let ClientError::Decode { cursor, .. } = &error {
                        self.position = Some(*cursor);
                    }
                    return Some(Err(error));
                }
            }
        }
    }

    /// A connection attempt failed or a connection ended: what to yield.
    fn failed(&mut self, error: ClientError) -> Item<C> {
        if !error.is_retryable() {
            tracing::debug!(%error, "subscription ended");
            self.finished = true;
            return Err(error);
        }
        match self.reconnect.next_delay() {
            Some((attempt, delay)) => {
                tracing::debug!(%error, attempt, ?delay, "reconnecting");
                self.delay = Some(delay);
                Ok(Update::Reconnecting {
                    attempt,
                    delay,
                    cause: error,
                })
            }
            None => {
                self.finished = true;
                Err(ClientError::GaveUp {
                    attempts: self.reconnect.attempts(),
                    last: Box::new(error),
                })
            }
        }
    }
}

/// One connection attempt, resuming after `position`.
async fn connect<C: Channel>(
    target: &Target<C>,
    position: Option<Cursor>,
) -> Result<Connection, ClientError> {
    let url = target.client.endpoint(
        &target.topic,
        target.transport,
        position,
        target.events.as_deref(),
    )?;
    tracing::debug!(%url, "connecting");
    let config = &target.client.config;
    Ok(match target.transport {
        Transport::Sse => {
            Connection::Sse(SseConnection::open(&target.client.http, url, config).await?)
        }
        Transport::WebSocket => Connection::Ws(WsConnection::open(url, config).await?),
    })
}

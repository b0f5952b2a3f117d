//! The subscription stream: connect, read, interpret, reconnect.

use super::credentials::{Credentials, CredentialsReason};
use super::error::ClientError;
use super::frame::{Meaning, Read, interpret};
use super::iframe::IframeConnection;
use super::poll::PollConnection;
use super::reconnect::Reconnect;
use super::sse::SseConnection;
use super::ws::WsConnection;
use super::{Client, Transport, Update};
use crate::channel::Channel;
use crate::cursor::Cursor;
use axum::http::header::HeaderMap;
use futures_util::Stream;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
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
    transport: Transport,
}

impl<C> fmt::Debug for Subscription<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("position", &self.position)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl<C: Channel> Subscription<C> {
    pub(crate) fn start(target: Target<C>, after: Option<Cursor>) -> Self {
        let fallback = Fallback::new(target.transport, target.client.config.fallback_after);
        let transport = fallback.current();
        let driver = Driver {
            reconnect: Reconnect::new(&target.client.config),
            target,
            fallback,
            position: after,
            connection: None,
            sent: HeaderMap::new(),
            delay: None,
            progressed: false,
            finished: false,
            fresh: None,
            attempted: false,
            idle_expiries: 0,
        };
        let inner = futures_util::stream::unfold(driver, |mut driver| async move {
            let item = driver.next().await?;
            Some((item, driver))
        });
        Self {
            inner: Box::pin(inner),
            position: after,
            transport,
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

    /// The transport in use: the one chosen, or with [`Transport::Auto`] the
    /// one being tried (never `Auto` itself). With `Auto` it changes at each
    /// [`Update::Fallback`] yielded, and no more once an
    /// [`Update::Ready`] has been.
    pub fn transport(&self) -> Transport {
        self.transport
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
            if let Ok(Update::Fallback { to, .. }) = item {
                self.transport = *to;
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
        Err(ClientError::Decode { cursor, .. })
        | Err(ClientError::TooLarge {
            cursor: Some(cursor),
            ..
        }) => Some(*cursor),
        // The cursor `push.expired` named, where the subscription resumes.
        Ok(Update::Reauthorized {
            reason: CredentialsReason::Expired { cursor },
            ..
        })
        | Err(ClientError::Expired { cursor }) => *cursor,
        _ => None,
    }
}

enum Connection {
    Sse(SseConnection),
    /// Boxed: with TLS, the socket holds rustls' buffers inline.
    Ws(Box<WsConnection>),
    Poll(PollConnection),
    Iframe(IframeConnection),
    /// What a WebSocket skip brought, in place of the socket it closed.
    Skip(Skip),
}

impl Connection {
    async fn next(&mut self) -> Result<Read, ClientError> {
        match self {
            Connection::Sse(connection) => connection.next().await,
            Connection::Ws(connection) => connection.next().await,
            Connection::Poll(connection) => connection.next().await,
            Connection::Iframe(connection) => connection.next().await,
            Connection::Skip(skip) => Ok(skip.next()),
        }
    }
}

/// The items of the one-item poll that located a WebSocket message over
/// the size limit (that item, skipped with its cursor, or the gap before
/// it), then a [`Read::Resume`] from the poll's cursor: the WebSocket is
/// reopened after them.
#[derive(Debug)]
struct Skip {
    items: VecDeque<Read>,
    resume: Cursor,
}

impl Skip {
    fn next(&mut self) -> Read {
        self.items.pop_front().unwrap_or(Read::Resume(self.resume))
    }
}

/// The order [`Transport::Auto`] tries transports in.
const AUTO_ORDER: [Transport; 4] = [
    Transport::WebSocket,
    Transport::Sse,
    Transport::LongPoll,
    Transport::ShortPoll,
];

/// Which transport a subscription uses, and for [`Transport::Auto`] when to
/// move on to the next (documented on [`Transport::Auto`]).
#[derive(Debug)]
struct Fallback {
    /// The transports still in play: one for a fixed transport, the
    /// [`AUTO_ORDER`] less those ruled out for `Auto`.
    candidates: Vec<Transport>,
    /// The index of the current one in `candidates`.
    index: usize,
    /// A transport delivered `Ready`: no more moves.
    settled: bool,
    /// Transient failures in a row on the current transport.
    failures: u32,
    /// How many of them move on.
    limit: u32,
}

/// How a failure before `Ready` moves an `Auto` subscription.
enum Move {
    /// Stay on the current transport.
    Stay,
    /// Rule the current transport out and try the next at once.
    RuleOut,
    /// Try the next transport after the reconnection delay.
    Next,
}

impl Fallback {
    fn new(transport: Transport, limit: u32) -> Self {
        let candidates = match transport {
            Transport::Auto => AUTO_ORDER.to_vec(),
            fixed => vec![fixed],
        };
        Self {
            settled: candidates.len() == 1,
            candidates,
            index: 0,
            failures: 0,
            limit: limit.max(1),
        }
    }

    fn current(&self) -> Transport {
        self.candidates
            .get(self.index)
            .copied()
            .unwrap_or(Transport::Sse)
    }

    fn settle(&mut self) {
        self.settled = true;
    }

    /// How `error` moves the subscription. Only transport-specific answers
    /// rule a transport out; other permanent errors are the request's.
    fn judge(&mut self, error: &ClientError) -> Move {
        if self.settled {
            return Move::Stay;
        }
        if route_unavailable(error) {
            return if self.candidates.len() > 1 {
                Move::RuleOut
            } else {
                Move::Stay
            };
        }
        if !error.is_retryable() {
            return Move::Stay;
        }
        self.failures += 1;
        if self.failures >= self.limit && self.candidates.len() > 1 {
            Move::Next
        } else {
            Move::Stay
        }
    }

    /// Applies a move; the transport left and the one tried next.
    fn apply(&mut self, step: Move) -> Option<(Transport, Transport)> {
        let from = self.current();
        match step {
            Move::Stay => return None,
            Move::RuleOut => {
                self.candidates.remove(self.index);
                if self.index >= self.candidates.len() {
                    self.index = 0;
                }
            }
            Move::Next => self.index = (self.index + 1) % self.candidates.len(),
        }
        self.failures = 0;
        Some((from, self.current()))
    }
}

/// An answer saying that this transport's route is not there (or not usable
/// through what stands between), rather than that the request is wrong.
fn route_unavailable(error: &ClientError) -> bool {
    match error {
        ClientError::Rejected { status, .. } => matches!(status, 404 | 405 | 426) || *status < 400,
        ClientError::UnexpectedResponse { .. } => true,
        _ => false,
    }
}

/// The state behind a [`Subscription`].
struct Driver<C> {
    target: Target<C>,
    fallback: Fallback,
    reconnect: Reconnect,
    position: Option<Cursor>,
    connection: Option<Connection>,
    /// The headers the current connection was opened with: a WebSocket
    /// skip's poll sends them too.
    sent: HeaderMap,
    /// The wait before the next connection attempt.
    delay: Option<Duration>,
    /// The current response brought an event or a gap since its `push.ready`.
    progressed: bool,
    finished: bool,
    /// Credentials the provider gave after a refusal or an expiry, for the
    /// next attempt (otherwise it is asked right before the attempt).
    fresh: Option<Credentials>,
    /// An attempt was made: the provider's next reason is `Reconnect`.
    attempted: bool,
    /// Expiries of live connections in a row with no event or gap between.
    idle_expiries: u32,
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
                    let headers = match self.headers().await {
                        Ok(headers) => headers,
                        Err(error) => {
                            tracing::debug!(%error, "subscription ended");
                            self.finished = true;
                            return Some(Err(error));
                        }
                    };
                    let transport = self.fallback.current();
                    match connect(&self.target, transport, self.position, &headers).await {
                        Ok(connection) => {
                            self.progressed = false;
                            self.sent = headers;
                            self.connection.insert(connection)
                        }
                        Err(error) => return Some(self.failed(error, false).await),
                    }
                }
            };
            let read = match connection.next().await {
                Ok(read) => read,
                // A WebSocket message over the limit cannot be read past:
                // locate it with a poll and reopen the socket after it.
                Err(ClientError::TooLarge { limit, .. })
                    if matches!(connection, Connection::Ws(_)) =>
                {
                    self.connection = None;
                    match self.skip(limit).await {
                        Ok(skip) => {
                            self.connection = Some(Connection::Skip(skip));
                            continue;
                        }
                        Err(item) => return Some(item),
                    }
                }
                Err(error) => {
                    self.connection = None;
                    return Some(self.failed(error, true).await);
                }
            };
            let meaning = match read {
                Read::Frame(frame) => interpret::<C>(&frame),
                Read::Ready(cursor) => Meaning::Ready(cursor),
                Read::Resume(cursor) => Meaning::End(cursor),
                Read::Skipped(error) => {
                    // An item skipped by its cursor counts as seen.
                    if let ClientError::TooLarge {
                        cursor: Some(cursor),
                        ..
                    } = &error
                    {
                        self.progressed = true;
                        self.position = Some(*cursor);
                    }
                    return Some(Err(error));
                }
            };
            match meaning {
                Meaning::Ready(cursor) => {
                    tracing::debug!(
                        topic = %self.target.topic,
                        %cursor,
                        transport = ?self.fallback.current(),
                        "subscription ready"
                    );
                    self.reconnect.reset();
                    self.fallback.settle();
                    self.position = Some(cursor);
                    return Some(Ok(Update::Ready { cursor }));
                }
                Meaning::Gap(gap) => {
                    self.progressed = true;
                    self.position = Some(gap.to);
                    return Some(Ok(Update::Gap(gap)));
                }
                Meaning::Event { cursor, event } => {
                    self.progressed = true;
                    self.position = Some(cursor);
                    return Some(Ok(Update::Event { cursor, event }));
                }
                Meaning::End(cursor) => {
                    // Not a failure: the server asks for a fresh response,
                    // at once after progress. A response that brought
                    // nothing (a server whose documents hold only
                    // `push.ready`, or one idle until its age limit) is
                    // reopened after the reconnection delay, so that client
                    // and server never spin without progress.
                    self.connection = None;
                    self.position = Some(cursor);
                    if !self.progressed {
                        let delay = self.reconnect.initial_delay();
                        tracing::debug!(%cursor, ?delay, "the server ended a response that brought nothing; resuming after the delay");
                        self.delay = Some(delay);
                    } else {
                        tracing::debug!(%cursor, "the server ended the response; resuming at once");
                    }
                }
                Meaning::Expired(cursor) => {
                    self.connection = None;
                    self.position = Some(cursor);
                    return Some(self.expired(Some(cursor), true).await);
                }
                Meaning::Ignored => {}
                Meaning::Invalid(error) => {
                    if let ClientError::Decode { cursor, .. } = &error {
                        self.progressed = true;
                        self.position = Some(*cursor);
                    }
                    return Some(Err(error));
                }
            }
        }
    }

    /// A WebSocket message over `limit` bytes ended the socket: one short
    /// poll (`limit=1`, the same headers and event filter) after the
    /// position names that item's cursor, or brings the gap before it.
    /// Its items are yielded and the socket reopened after them, with no
    /// backoff and without counting a failure. When the poll cannot locate
    /// the item, the stream ends with [`ClientError::TooLarge`]; when it
    /// fails transiently (or its authorization is refused or expired), as
    /// any failure of a live connection: the socket is reopened from the
    /// position, which meets the same message and polls again.
    async fn skip(&mut self, limit: usize) -> Result<Skip, Item<C>> {
        let too_large = ClientError::TooLarge {
            limit,
            cursor: None,
        };
        // A socket is read past its `push.ready`, which sets the position.
        let Some(after) = self.position else {
            self.finished = true;
            return Err(Err(too_large));
        };
        let client = &self.target.client;
        let url_for = {
            let client = client.clone();
            let topic = self.target.topic.clone();
            let events = self.target.events.clone();
            move |after, _timeout| {
                client.endpoint(&topic, Transport::ShortPoll, after, events.as_deref())
            }
        };
        tracing::debug!(topic = %self.target.topic, %after, limit, "a websocket message over the limit; locating it with a poll");
        let located = PollConnection::locate(
            client.http.clone(),
            self.sent.clone(),
            Box::new(url_for),
            after,
            &client.config,
        )
        .await;
        let answer = match located {
            Ok(answer) if !answer.items.is_empty() => answer,
            Ok(_) => {
                tracing::warn!(%after, "the poll locating a websocket message over the limit found no item; ending the subscription");
                self.finished = true;
                return Err(Err(too_large));
            }
            Err(error @ (ClientError::Expired { .. } | ClientError::Unauthorized { .. })) => {
                return Err(self.failed(error, true).await);
            }
            Err(error) if error.is_retryable() => return Err(self.failed(error, true).await),
            Err(error) => {
                tracing::warn!(%error, %after, "a websocket message over the limit cannot be located with a poll; ending the subscription");
                self.finished = true;
                return Err(Err(too_large));
            }
        };
        Ok(Skip {
            items: answer.items.into(),
            resume: answer.cursor,
        })
    }

    /// The headers of the next attempt: the configured ones, and the
    /// credentials given after a refusal or an expiry or else asked for now
    /// (replacing configured headers of the same names). The provider's
    /// refusal ends the subscription.
    async fn headers(&mut self) -> Result<HeaderMap, ClientError> {
        let config = &self.target.client.config;
        let mut headers = config.headers.clone();
        let credentials = match (self.fresh.take(), config.credentials.clone()) {
            (Some(credentials), _) => Some(credentials),
            (None, None) => None,
            (None, Some(provider)) => {
                let reason = if self.attempted {
                    CredentialsReason::Reconnect
                } else {
                    CredentialsReason::Connect
                };
                let credentials = provider.credentials(reason).await;
                Some(credentials.ok_or(ClientError::CredentialsDeclined)?)
            }
        };
        self.attempted = true;
        if let Some(credentials) = credentials {
            for name in credentials.headers().keys() {
                headers.remove(name);
            }
            for (name, value) in credentials.headers() {
                headers.append(name, value.clone());
            }
        }
        Ok(headers)
    }

    /// Asks the provider, if any, for credentials after a refusal or an
    /// expiry. (The future holds no borrow of the driver, which is not `Sync`.)
    fn ask(&self, reason: CredentialsReason) -> impl Future<Output = Option<Credentials>> + use<C> {
        let asked = self
            .target
            .client
            .config
            .credentials
            .as_ref()
            .map(|provider| provider.credentials(reason));
        async move {
            match asked {
                Some(asked) => asked.await,
                None => None,
            }
        }
    }

    /// The authorization expired, at `cursor`: on a live connection
    /// (`push.expired`, a close `4401`, a held poll answered `401`) or at a
    /// connection attempt. With fresh credentials, resume at once from a
    /// live connection that made progress (or that is the first to expire
    /// since some did); otherwise after a delay, so that credentials that
    /// expire at once never make client and server spin.
    async fn expired(&mut self, cursor: Option<Cursor>, live: bool) -> Item<C> {
        let reason = CredentialsReason::Expired { cursor };
        let error = ClientError::Expired { cursor };
        let delay = if live {
            if self.progressed {
                self.idle_expiries = 0;
            }
            self.idle_expiries = self.idle_expiries.saturating_add(1);
            Some(if self.idle_expiries == 1 {
                Duration::ZERO
            } else {
                self.reconnect.initial_delay()
            })
        } else {
            self.reconnect.next_delay().map(|(_, delay)| delay)
        };
        let Some(delay) = delay else {
            return self.give_up(error);
        };
        let Some(credentials) = self.ask(reason.clone()).await else {
            tracing::debug!(%error, "subscription ended: no fresh credentials");
            self.finished = true;
            return Err(error);
        };
        tracing::debug!(
            ?cursor,
            ?delay,
            "authorization expired; resuming with fresh credentials"
        );
        self.fresh = Some(credentials);
        self.delay = Some(delay);
        Ok(Update::Reauthorized { reason, delay })
    }

    /// The server refused an attempt with `401`/`403`: with fresh
    /// credentials, try again after the reconnection delay (counted like
    /// any failure, so a refused retry loop backs off and may give up).
    async fn refused(&mut self, status: u16, message: String, error: ClientError) -> Item<C> {
        let reason = CredentialsReason::Refused { status, message };
        let Some((attempt, delay)) = self.reconnect.next_delay() else {
            return self.give_up(error);
        };
        let Some(credentials) = self.ask(reason.clone()).await else {
            tracing::debug!(%error, "subscription ended: no fresh credentials");
            self.finished = true;
            return Err(error);
        };
        tracing::debug!(%error, attempt, ?delay, "refused; trying again with fresh credentials");
        self.fresh = Some(credentials);
        self.delay = Some(delay);
        Ok(Update::Reauthorized { reason, delay })
    }

    /// A connection attempt failed (`live` false) or a connection ended:
    /// what to yield.
    async fn failed(&mut self, error: ClientError, live: bool) -> Item<C> {
        match error {
            ClientError::Expired { cursor } => {
                return self.expired(cursor.or(self.position), live).await;
            }
            ClientError::Unauthorized {
                status,
                ref message,
            } => {
                let message = message.clone();
                return self.refused(status, message, error).await;
            }
            _ => {}
        }
        match self.fallback.judge(&error) {
            Move::Stay => {}
            Move::RuleOut => {
                if let Some((from, to)) = self.fallback.apply(Move::RuleOut) {
                    tracing::debug!(%error, ?from, ?to, "transport unavailable, falling back");
                    return Ok(Update::Fallback {
                        from,
                        to,
                        delay: Duration::ZERO,
                        cause: error,
                    });
                }
            }
            Move::Next => {
                let Some((_, delay)) = self.reconnect.next_delay() else {
                    return self.give_up(error);
                };
                if let Some((from, to)) = self.fallback.apply(Move::Next) {
                    tracing::debug!(%error, ?from, ?to, ?delay, "transport failing, falling back");
                    self.delay = Some(delay);
                    return Ok(Update::Fallback {
                        from,
                        to,
                        delay,
                        cause: error,
                    });
                }
            }
        }
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
            None => self.give_up(error),
        }
    }

    fn give_up(&mut self, error: ClientError) -> Item<C> {
        self.finished = true;
        Err(ClientError::GaveUp {
            attempts: self.reconnect.attempts(),
            last: Box::new(error),
        })
    }
}

/// One connection attempt with `headers`, resuming after `position`.
async fn connect<C: Channel>(
    target: &Target<C>,
    transport: Transport,
    position: Option<Cursor>,
    headers: &HeaderMap,
) -> Result<Connection, ClientError> {
    let client = &target.client;
    let config = &client.config;
    if let Transport::ShortPoll | Transport::LongPoll = transport {
        let url_for = {
            let client = client.clone();
            let topic = target.topic.clone();
            let events = target.events.clone();
            move |after, timeout| {
                client.endpoint_with(&topic, transport, after, events.as_deref(), timeout)
            }
        };
        tracing::debug!(topic = %target.topic, ?transport, ?position, "polling");
        let long = transport == Transport::LongPoll;
        let connection = PollConnection::open(
            client.http.clone(),
            headers.clone(),
            Box::new(url_for),
            long,
            position,
            config,
        )
        .await?;
        return Ok(Connection::Poll(connection));
    }
    let url = client.endpoint(&target.topic, transport, position, target.events.as_deref())?;
    tracing::debug!(%url, "connecting");
    Ok(match transport {
        Transport::WebSocket | Transport::Auto => {
            let connection =
                WsConnection::open(url, headers, client.ws_connector(), config).await?;
            Connection::Ws(Box::new(connection))
        }
        Transport::Iframe => {
            Connection::Iframe(IframeConnection::open(&client.http, url, headers, config).await?)
        }
        _ => Connection::Sse(SseConnection::open(&client.http, url, headers, config).await?),
    })
}

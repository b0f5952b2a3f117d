//! The typed Rust client: subscribe to a channel's topic over SSE, WebSocket,
//! short or long polling or a forever frame (or let [`Transport::Auto`] pick
//! the first that gets through) and receive the channel's own enum, with
//! automatic reconnection that resumes where it left off.
//!
//! ```no_run
//! # use push_runtime::{Channel, Cursor, EventKind};
//! use futures_util::StreamExt;
//! use push_runtime::client::{Client, Transport, Update};
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! # #[serde(tag = "type", rename_all = "snake_case")]
//! # enum ChatEvent { Message { from: String, text: String } }
//! # #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
//! # enum ChatEventKind { Message }
//! # impl EventKind for ChatEventKind {
//! #     const ALL: &'static [Self] = &[ChatEventKind::Message];
//! #     const NAMES: &'static [&'static str] = &["message"];
//! #     fn name(self) -> &'static str { "message" }
//! #     fn index(self) -> usize { 0 }
//! # }
//! # impl Channel for ChatEvent {
//! #     type Kind = ChatEventKind;
//! #     const PATH: &'static str = "/chat";
//! #     fn kind(&self) -> ChatEventKind { ChatEventKind::Message }
//! # }
//!
//! # async fn run() -> Result<(), push_runtime::client::ClientError> {
//! // With `#[push_channel]`, `ChatEvent::client(…)` is the same call.
//! let client = Client::<ChatEvent>::new("http://127.0.0.1:3000")?;
//! let mut stream = client
//!     .subscribe("lobby")
//!     .transport(Transport::WebSocket)
//!     .kinds([ChatEventKind::Message])
//!     .stream();
//! while let Some(item) = stream.next().await {
//!     match item? {
//!         Update::Event { cursor, event: ChatEvent::Message { from, text } } => {
//!             println!("{cursor} {from}: {text}");
//!         }
//!         Update::Gap(gap) => println!("missed {:?} events", gap.missed),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Transports
//!
//! | [`Transport`] | route | a "connection" is | live after |
//! |---|---|---|---|
//! | [`Sse`](Transport::Sse) (default) | `GET …/sse` | one event stream | its `push.ready` |
//! | [`WebSocket`](Transport::WebSocket) | `GET …/ws`, upgraded | one socket | its `push.ready` |
//! | [`ShortPoll`](Transport::ShortPoll) | `GET …/poll?after=…` | a run of polls that succeed | the first answer |
//! | [`LongPoll`](Transport::LongPoll) | `GET …/long-poll?after=…&timeout=…` | a run of polls that succeed | the first answer |
//! | [`Iframe`](Transport::Iframe) | `GET …/iframe` | one HTML document | its `push.ready` |
//! | [`Auto`](Transport::Auto) | WebSocket → SSE → long poll → short poll | the first that works | as that transport |
//!
//! Whatever the transport, the same items arrive: [`Update::Ready`] once per
//! connection (with the position it continues from), then events and gaps in
//! cursor order. Polls carry no `push.ready`: the client yields `Ready` at the
//! first answer, at the position it asked from (or, without one, at the
//! position the server answered). A forever frame that the server ends with
//! `push.end` is reopened at once from the cursor it names, without backoff
//! and without an [`Update::Reconnecting`]; the new document yields a new
//! `Ready`. [`Subscription::transport`] tells which transport is in use.
//!
//! # Delivery
//!
//! A [`Subscription`] yields the topic's events in cursor order. When the
//! connection drops (refused, reset, server error, idle for too long, SSE body
//! or forever frame ended without `push.end`, WebSocket closed with
//! `1001`/`1011`, a poll that failed or did not answer in time…) the client
//! waits (exponential backoff with jitter, see [`ClientConfig`]) and
//! reconnects with `?after=<last position>`, so nothing is lost or repeated;
//! events the server no longer holds arrive as an [`Update::Gap`]. Permanent
//! errors (a `4xx` answer other than `408`/`429`, WebSocket close
//! `1002`/`1008`/`1009`…) end the stream after being yielded as `Err`. See
//! [`ClientError`] for the full classification.
//!
//! # TLS and credentials
//!
//! With the `rustls` feature (on by default) the base URL may be `https://`:
//! every transport then uses TLS (WebSocket as `wss://`) with the `ring`
//! crypto provider, trusting Mozilla's roots (`webpki-roots`, compiled in;
//! the platform's store is not read) and the authorities added with
//! [`ClientConfig::root_certificate_pem`]. A certificate that is not trusted
//! ends the stream with [`ClientError::Tls`].
//!
//! [`ClientConfig::header`] adds a header to every request, reconnection and
//! WebSocket handshake. A [`CredentialsProvider`]
//! ([`ClientConfig::credentials`], a closure will do) is asked before every
//! connection attempt, told why ([`CredentialsReason`]), and answers the
//! [`Credentials`] to send or declines:
//!
//! ```no_run
//! # use push_runtime::client::{Client, ClientConfig, Credentials, CredentialsReason};
//! # async fn token(_fresh: bool) -> Option<String> { None }
//! # fn run<C: push_runtime::Channel>() -> Result<Client<C>, push_runtime::client::ClientError> {
//! let config = ClientConfig::default().credentials(|why: CredentialsReason| async move {
//!     let fresh = matches!(why, CredentialsReason::Expired { .. } | CredentialsReason::Refused { .. });
//!     Credentials::bearer(&token(fresh).await?).ok()
//! });
//! Client::<C>::with_config("https://push.example.com", config)
//! # }
//! ```
//!
//! When the server refuses a connection (`401`/`403`) or the subscription's
//! authorization expires (`push.expired`, WebSocket close `4401`, a poll
//! answered `401 authorization expired`), the provider is asked for fresh
//! credentials: with them the subscription goes on from its position,
//! yielding [`Update::Reauthorized`] (at once after an expiry, nothing lost or
//! repeated; after the reconnection delay after a refusal, so a refused
//! retry loop backs off); without them (or without a provider) it ends with
//! [`ClientError::Unauthorized`] or [`ClientError::Expired`]. A subscription
//! never connects without the credentials it was given.
//!
//! The wire format is `docs/protocol.md` in the repository.

mod config;
mod credentials;
pub(crate) mod error;
mod frame;
mod http;
mod iframe;
mod poll;
mod reconnect;
mod sse;
mod subscription;
#[cfg(feature = "rustls")]
mod tls;
mod ws;

pub use config::ClientConfig;
pub use credentials::{Credentials, CredentialsFuture, CredentialsProvider, CredentialsReason};
pub use error::ClientError;
pub use subscription::Subscription;

use crate::channel::{Channel, EventKind};
use crate::cursor::Cursor;
use crate::history::Gap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;
use url::Url;

/// A typed client of channel `C` on one server.
///
/// Cheap to clone: clones share the HTTP connection pool.
pub struct Client<C> {
    /// The base URL with the segments of `C::PATH` appended.
    root: Url,
    http: http::HttpClient,
    /// The WebSocket transport's TLS: the same trust as `http`'s.
    #[cfg(feature = "rustls")]
    tls: std::sync::Arc<rustls::ClientConfig>,
    config: ClientConfig,
    channel: PhantomData<fn() -> C>,
}

impl<C> Clone for Client<C> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            http: self.http.clone(),
            #[cfg(feature = "rustls")]
            tls: self.tls.clone(),
            config: self.config.clone(),
            channel: PhantomData,
        }
    }
}

impl<C> fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("root", &self.root.as_str())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How a subscription is carried.
///
/// The default is [`Transport::Sse`]: plain HTTP, which passes through more
/// proxies. Every transport carries exactly the same items, resumes the same
/// way (from [`Subscription::position`]) and classifies errors the same way;
/// they differ in latency and in what the network between client and server
/// lets through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// Server-Sent Events: `GET {base}/{topic}/sse`.
    #[default]
    Sse,
    /// WebSocket: `GET {base}/{topic}/ws` with an upgrade.
    WebSocket,
    /// Short polling: `GET {base}/{topic}/poll?after=…`, repeated.
    ///
    /// Each answer is a batch; the next poll follows at once when the server
    /// cut the batch short (`"more":true`), otherwise after
    /// [`ClientConfig::poll_interval`]. The previous answer's `ETag` is sent
    /// as `If-None-Match`, so an unchanged topic costs a `304` without a body.
    /// The first successful answer of each connection yields
    /// [`Update::Ready`].
    ShortPoll,
    /// Long polling: `GET {base}/{topic}/long-poll?after=…&timeout=…`,
    /// repeated at once after each answer.
    ///
    /// The server holds a request until something is new or
    /// [`ClientConfig::long_poll_timeout`] expires. Without a starting
    /// position, the first request asks with `timeout=0`, to learn the
    /// topic's position at once. The first successful answer of each
    /// connection yields [`Update::Ready`].
    LongPoll,
    /// Forever frame: `GET {base}/{topic}/iframe`, an HTML document whose
    /// `<script>` elements each carry one item, read incrementally.
    ///
    /// When the server ends the document (`push.end`, after a size or time
    /// limit), the client reconnects at once from the cursor it names: not an
    /// error, no backoff, but a new [`Update::Ready`].
    Iframe,
    /// Pick the first transport that works, in the order WebSocket → SSE →
    /// long polling → short polling.
    ///
    /// Before a transport has ever delivered [`Update::Ready`]:
    /// - an answer saying its route is not there (`404`, `405`, `426`, a `2xx`
    ///   or `3xx` in place of a WebSocket upgrade, or a response of the wrong
    ///   content type, [`ClientError::UnexpectedResponse`]) rules it out for
    ///   this subscription, and the next one is tried at once;
    /// - [`ClientConfig::fallback_after`] transient failures in a row on it
    ///   (connection refused or reset, timeout, `5xx`, a stream that ends
    ///   before its first item…) move on to the next one, after the usual
    ///   reconnection delay. After short polling the order starts over at the
    ///   first transport not ruled out, so a server that was down at start is
    ///   still reached over WebSocket when it comes back;
    /// - any other error is permanent and ends the stream, as on a fixed
    ///   transport: a `400` (invalid topic, cursor or filter) is about the
    ///   request, which every transport would refuse alike.
    ///
    /// Each move is yielded as [`Update::Fallback`]. Once a transport has
    /// delivered [`Update::Ready`] the subscription stays on it, reconnections
    /// included; [`Subscription::transport`] tells which one it is.
    Auto,
}

impl Transport {
    /// The route's last path segment. [`Transport::Auto`] starts as WebSocket.
    fn segment(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::WebSocket | Transport::Auto => "ws",
            Transport::ShortPoll => "poll",
            Transport::LongPoll => "long-poll",
            Transport::Iframe => "iframe",
        }
    }
}

/// One item of a [`Subscription`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Update<C> {
    /// A connection is live (the server's `push.ready`): events after `cursor`
    /// follow. Yielded once per connection, so also after each reconnection;
    /// a test or a UI can wait for it instead of sleeping.
    Ready {
        /// The position the stream continues from.
        cursor: Cursor,
    },
    /// One of the channel's events.
    Event {
        /// The event's position; resuming after it skips exactly this event.
        cursor: Cursor,
        /// The event.
        event: C,
    },
    /// Events that will never be delivered: the resume point was older than
    /// the server's history, from another epoch, or the subscriber fell
    /// behind. Delivery continues after [`Gap::to`].
    Gap(Gap),
    /// The connection failed or dropped with a transient error; the client
    /// reconnects after `delay`, resuming from
    /// [`Subscription::position`]. Informational: nothing to do.
    Reconnecting {
        /// Which attempt this will be since the last successful connection (from 1).
        attempt: u32,
        /// How long the client waits first.
        delay: Duration,
        /// What went wrong.
        cause: ClientError,
    },
    /// The server refused the subscription (`401`/`403`) or its
    /// authorization expired, and the
    /// [`CredentialsProvider`] gave fresh credentials: the client connects
    /// again with them after `delay`, resuming from
    /// [`Subscription::position`], so nothing is lost or repeated.
    /// Informational: the application sees that a re-authorization
    /// happened.
    ///
    /// After an expiry on a live connection `delay` is zero, unless that
    /// connection brought no event or gap since an expiry before it (a
    /// provider handing out credentials that expire at once): then it is
    /// the initial reconnection delay (with jitter). After a refusal, or an
    /// expiry answered to a connection attempt, it is the reconnection
    /// delay, which grows with each failure in a row, so a refused retry
    /// loop never spins.
    Reauthorized {
        /// Why the provider was asked.
        reason: CredentialsReason,
        /// How long the client waits before connecting.
        delay: Duration,
    },
    /// [`Transport::Auto`] leaves a transport that never worked for the next
    /// one (see there for when); the next attempt, on `to`, follows after
    /// `delay` and resumes from [`Subscription::position`]. Informational.
    Fallback {
        /// The transport given up.
        from: Transport,
        /// The transport tried next.
        to: Transport,
        /// How long the client waits first: zero when `from` was ruled out
        /// by its answer, the reconnection delay after transient failures.
        delay: Duration,
        /// The failure that decided it.
        cause: ClientError,
    },
}

impl<C: Channel> Client<C> {
    /// A client of the server at `base_url` (scheme `http`, or `https` with
    /// the `rustls` feature; host and port, optionally a path prefix under
    /// which the channel is mounted), with default settings. Channel routes
    /// are found at `{base_url}{C::PATH}`; WebSocket uses `ws://`, or
    /// `wss://` for an `https` base URL.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_config(base_url, ClientConfig::default())
    }

    /// A client with the given settings.
    ///
    /// An `https` base URL without the `rustls` feature is refused with
    /// [`ClientError::InvalidBaseUrl`], as are other schemes, a query or a
    /// fragment.
    pub fn with_config(base_url: &str, config: ClientConfig) -> Result<Self, ClientError> {
        let invalid = |reason| ClientError::InvalidBaseUrl {
            url: error::quote(base_url, 256),
            reason,
        };
        let mut root = Url::parse(base_url).map_err(|_| invalid("not an absolute url"))?;
        match root.scheme() {
            "http" => {}
            #[cfg(feature = "rustls")]
            "https" => {}
            #[cfg(not(feature = "rustls"))]
            "https" => {
                return Err(invalid(
                    "https needs the `rustls` feature of push-runtime, off in this build",
                ));
            }
            _ => return Err(invalid("the scheme must be http or https")),
        }
        if root.query().is_some() || root.fragment().is_some() {
            return Err(invalid("a base url takes no query or fragment"));
        }
        {
            let mut segments = root
                .path_segments_mut()
                .map_err(|()| invalid("not a base url"))?;
            segments.pop_if_empty();
            segments.extend(C::PATH.split('/').filter(|part| !part.is_empty()));
        }
        // Like the WebSocket transport, the pool connects directly: no proxy
        // from the environment.
        #[cfg(feature = "rustls")]
        let tls = tls::client_config(&config.roots, config.built_in_roots)?;
        let http = http::HttpClient::new(
            config.connect_timeout,
            #[cfg(feature = "rustls")]
            (*tls).clone(),
        );
        Ok(Self {
            root,
            http,
            #[cfg(feature = "rustls")]
            tls,
            config,
            channel: PhantomData,
        })
    }

    /// The WebSocket transport's TLS connector: the client's rustls
    /// configuration for `wss://`, plain for `ws://`.
    pub(crate) fn ws_connector(&self) -> Option<ws::Connector> {
        #[cfg(feature = "rustls")]
        if self.root.scheme() == "https" {
            return Some(ws::Connector::Rustls(self.tls.clone()));
        }
        None
    }

    /// The settings in use.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Starts describing a subscription to `topic`; finish with
    /// [`Subscribe::stream`].
    ///
    /// The topic is percent-encoded into the URL as is; the server validates
    /// it (an invalid name ends the stream with [`ClientError::Rejected`]).
    pub fn subscribe(&self, topic: impl Into<String>) -> Subscribe<C> {
        Subscribe {
            client: self.clone(),
            topic: topic.into(),
            transport: Transport::default(),
            after: None,
            kinds: None,
        }
    }

    /// The URL of a subscription, for one connection attempt.
    pub(crate) fn endpoint(
        &self,
        topic: &str,
        transport: Transport,
        after: Option<Cursor>,
        events: Option<&str>,
    ) -> Result<Url, ClientError> {
        self.endpoint_with(topic, transport, after, events, None)
    }

    /// [`Client::endpoint`] with a long-poll `timeout` in whole seconds.
    pub(crate) fn endpoint_with(
        &self,
        topic: &str,
        transport: Transport,
        after: Option<Cursor>,
        events: Option<&str>,
        timeout: Option<u64>,
    ) -> Result<Url, ClientError> {
        let mut url = self.root.clone();
        if matches!(transport, Transport::WebSocket | Transport::Auto) {
            let scheme = if self.root.scheme() == "https" {
                "wss"
            } else {
                "ws"
            };
            url.set_scheme(scheme)
                .map_err(|()| ClientError::InvalidBaseUrl {
                    url: self.root.to_string(),
                    reason: "no websocket url for it",
                })?;
        }
        {
            let mut segments =
                url.path_segments_mut()
                    .map_err(|()| ClientError::InvalidBaseUrl {
                        url: self.root.to_string(),
                        reason: "not a base url",
                    })?;
            // URLs resolve these as relative segments, even percent-encoded.
            if matches!(topic, "." | "..") {
                return Err(ClientError::InvalidTopic {
                    topic: topic.to_owned(),
                    reason: "a dot segment cannot be sent in a url path",
                });
            }
            segments.push(topic).push(transport.segment());
        }
        let mut query = Vec::new();
        if let Some(after) = after {
            query.push(format!("after={after}"));
        }
        if let Some(events) = events {
            query.push(format!("events={events}"));
        }
        if let Some(timeout) = timeout {
            query.push(format!("timeout={timeout}"));
        }
        if !query.is_empty() {
            url.set_query(Some(&query.join("&")));
        }
        Ok(url)
    }
}

/// A subscription being described: transport, resume point, filter.
/// Made by [`Client::subscribe`].
#[must_use = "a subscription does nothing until `.stream()` is called and polled"]
pub struct Subscribe<C: Channel> {
    client: Client<C>,
    topic: String,
    transport: Transport,
    after: Option<Cursor>,
    kinds: Option<Vec<C::Kind>>,
}

impl<C: Channel> fmt::Debug for Subscribe<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscribe")
            .field("topic", &self.topic)
            .field("transport", &self.transport)
            .field("after", &self.after)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl<C: Channel> Subscribe<C> {
    /// The transport ([`Transport::Sse`] by default).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Start with the first event after `cursor` (a cursor received earlier,
    /// e.g. a stored [`Subscription::position`]). Without it the stream starts
    /// from now: with the next event published.
    pub fn after(mut self, cursor: Cursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// Deliver only events of these kinds (`?events=…`). Control items
    /// (ready, gaps) are always delivered. An empty set is sent as is, and the
    /// server rejects it.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = C::Kind>) -> Self {
        let mut unique = Vec::new();
        for kind in kinds {
            if !unique.contains(&kind) {
                unique.push(kind);
            }
        }
        self.kinds = Some(unique);
        self
    }

    /// The stream of updates. Nothing is sent until it is first polled.
    pub fn stream(self) -> Subscription<C> {
        let events = self.kinds.map(|kinds| {
            kinds
                .iter()
                .map(|kind| {
                    url::form_urlencoded::byte_serialize(kind.name().as_bytes()).collect::<String>()
                })
                .collect::<Vec<_>>()
                .join(",")
        });
        Subscription::start(
            subscription::Target {
                client: self.client,
                topic: self.topic,
                transport: self.transport,
                events,
            },
            self.after,
        )
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
#[cfg(test)]
pub(crate) mod tests;

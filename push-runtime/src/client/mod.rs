//! The typed Rust client: subscribe to a channel's topic over SSE or
//! WebSocket and receive the channel's own enum, with automatic reconnection
//! that resumes where it left off.
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
//! # Delivery
//!
//! A [`Subscription`] yields the topic's events in cursor order. When the
//! connection drops (refused, reset, server error, idle for too long, SSE body
//! ended, WebSocket closed with `1001`/`1011`…) the client waits
//! (exponential backoff with jitter, see [`ClientConfig`]) and reconnects with
//! `?after=<last position>`, so nothing is lost or repeated; events the server
//! no longer holds arrive as an [`Update::Gap`]. Permanent errors (a `4xx`
//! answer, WebSocket close `1002`/`1008`/`1009`…) end the stream after being
//! yielded as `Err`. See [`ClientError`] for the full classification.
//!
//! The wire format is `docs/protocol.md` in the repository.

mod config;
mod error;
mod frame;
mod reconnect;
mod sse;
mod subscription;
mod ws;

pub use config::ClientConfig;
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
    http: reqwest::Client,
    config: ClientConfig,
    channel: PhantomData<fn() -> C>,
}

impl<C> Clone for Client<C> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            http: self.http.clone(),
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
/// proxies; both carry exactly the same items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// Server-Sent Events: `GET {base}/{topic}/sse`.
    #[default]
    Sse,
    /// WebSocket: `GET {base}/{topic}/ws` with an upgrade.
    WebSocket,
}

impl Transport {
    fn segment(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::WebSocket => "ws",
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
}

impl<C: Channel> Client<C> {
    /// A client of the server at `base_url` (scheme `http`, host and port,
    /// optionally a path prefix under which the channel is mounted), with
    /// default settings. Channel routes are found at `{base_url}{C::PATH}`.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_config(base_url, ClientConfig::default())
    }

    /// A client with the given settings.
    pub fn with_config(base_url: &str, config: ClientConfig) -> Result<Self, ClientError> {
        let invalid = |reason| ClientError::InvalidBaseUrl {
            url: error::quote(base_url, 256),
            reason,
        };
        let mut root = Url::parse(base_url).map_err(|_| invalid("not an absolute url"))?;
        match root.scheme() {
            "http" => {}
            "https" => return Err(invalid("https is not supported (no tls in this build)")),
            _ => return Err(invalid("the scheme must be http")),
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
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // Like the WebSocket transport, connect directly: no proxy from the environment.
            .no_proxy()
            .build()
            .map_err(|_| invalid("the http client could not be built"))?;
        Ok(Self {
            root,
            http,
            config,
            channel: PhantomData,
        })
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
        let mut url = self.root.clone();
        if transport == Transport::WebSocket {
            url.set_scheme("ws")
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

#[cfg(test)]
pub(crate) mod tests;

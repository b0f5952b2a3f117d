//! The hub: the one place with state. Transports only frame what it hands them.

use crate::broker::{Broker, BrokerError, BrokerSubscribeError, MemoryBroker, TopicKey};
use crate::channel::{Channel, EventKind};
use crate::cursor::Cursor;
use crate::history::{
    DeliveryCounts, HistoryBudget, KindFilter, Outgoing, Start, StartError, Subscription,
};
use crate::meter::{Meter, Stats};
use crate::shutdown::Shutdown;
use crate::topic::{DEFAULT_MAX_TOPIC_LEN, Topic, TopicError};
use bytes::Bytes;
use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use crate::history::{
    DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_HISTORY_BYTES, DEFAULT_MAX_TOTAL_HISTORY_BYTES,
};

/// Events kept per topic by default.
pub const DEFAULT_HISTORY_LEN: usize = 1024;

/// Settings of a [`Hub`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HubConfig {
    /// Events kept per topic for replay (default [`DEFAULT_HISTORY_LEN`]).
    ///
    /// A subscriber that resumes from further back, or falls this far behind,
    /// receives a gap notice.
    pub history_len: usize,
    /// The longest topic name accepted, in bytes (default 128).
    pub max_topic_len: usize,
    /// Topics kept alive at once by the in-memory broker (default
    /// [`DEFAULT_MAX_TOPICS`]). A new topic past it evicts a topic that
    /// nobody reads and nobody used lately, found by a bounded clock sweep
    /// (constant work, whatever the number of topics): one without events
    /// first; one with events, history and all, only for a publish (a client
    /// resuming it later gets a gap: the recreated topic has a new epoch). A
    /// subscription to a new topic never evicts a history, so readers of
    /// random names cost none. Without a topic to evict, publishing to or
    /// subscribing to a new topic fails (`503` over HTTP). The Redis broker
    /// has its own limit on the topics a node mirrors (`RedisConfig::max_topics`).
    pub max_topics: usize,
    /// The largest event accepted, in bytes of its JSON payload (default
    /// [`DEFAULT_MAX_EVENT_SIZE`], 1 MiB, the Redis broker's default
    /// `RedisConfig::max_event_size`). [`Hub::publish`] refuses a larger
    /// event with [`PublishError::TooLarge`] (`413` on the publish route).
    ///
    /// Every transport delivers every event up to this size: the WebSocket
    /// write buffer is sized from it, and the Rust client's default
    /// `ClientConfig::max_item_size` holds such an event with its framing.
    /// Raise a client's `max_item_size` with it. With the Redis broker, keep
    /// `RedisConfig::max_event_size` at least this large.
    pub max_event_size: usize,
    /// The most bytes one topic's history holds (default
    /// [`DEFAULT_MAX_HISTORY_BYTES`], 64 MiB): its events' JSON payloads
    /// plus every framed copy kept for a transport (up to four per event:
    /// SSE block, JSON message, WebSocket text, forever-frame script).
    ///
    /// A publish drops the topic's oldest events until the new one fits
    /// (subscribers behind get a gap, as with [`HubConfig::history_len`]);
    /// the newest event is always kept, so a topic holds at most the larger
    /// of this and one event. A framed copy is kept only while there is
    /// room; otherwise it is built for each delivery (same bytes on the
    /// wire, more CPU). With 1 KiB events, 1024 events and all their frames
    /// take about 5.5 MiB, well within the default. Per-connection buffers
    /// are not counted (`Limits::max_buffered_per_connection` bounds them).
    /// See [`HistoryBudget`](crate::history::HistoryBudget) for what is counted exactly.
    pub max_history_bytes: usize,
    /// The most bytes all topics' histories hold together, counted as for
    /// [`HubConfig::max_history_bytes`] (default
    /// [`DEFAULT_MAX_TOTAL_HISTORY_BYTES`], 1 GiB).
    ///
    /// A publish that finds the total full drops its own topic's oldest
    /// events to make room; if that cannot make room, the in-memory broker
    /// evicts idle topics with events (nobody reads them, nobody used them
    /// lately: as for [`HubConfig::max_topics`]) and, failing that, refuses
    /// the event with a [`BrokerErrorKind::Capacity`](crate::broker::BrokerErrorKind::Capacity)
    /// error (`503` with `Retry-After` on the publish route). The Redis
    /// broker has its own settings (`RedisConfig::max_history_bytes`,
    /// `RedisConfig::max_total_history_bytes`).
    pub max_total_history_bytes: usize,
    /// Back-pressure for publishers (default `None`: [`Hub::publish`]
    /// returns once the event is in the topic's history, before any
    /// subscriber has it). See [`Backpressure`].
    pub backpressure: Option<Backpressure>,
}

/// How long a paced publish waits at most by default ([`Backpressure::max_wait`]).
pub const DEFAULT_BACKPRESSURE_MAX_WAIT: Duration = Duration::from_millis(250);

/// Back-pressure for publishers ([`HubConfig::backpressure`]): with it,
/// [`Hub::publish`] (and so the publish route, `POST {base}/{topic}`)
/// completes only once the event `ahead` events before this one has been
/// handed to every local subscriber that was waiting for it, so a
/// publisher that publishes in a loop runs at the rate of the fan-out, at
/// most `ahead` events in front of the subscribers that keep up, instead of
/// queueing events in the history faster than they are written.
///
/// Who is waited for: the subscribers of this node that were up to date
/// and waiting when that event was appended, until each has taken it into
/// its connection's batch (for the streaming transports, written to its
/// socket in the same step) or gone away. A subscriber that is behind,
/// busy, or stalled (its socket full, its client not reading) is never
/// waited for: it catches up from the history or gets a gap as usual. No
/// publish waits longer than [`Backpressure::max_wait`]; the subscribers
/// not back by then are not waited for again for those events, so a
/// subscriber that stops reading costs a publisher at most one `max_wait`.
///
/// With the in-memory broker, and with the Redis broker for the
/// subscribers of the publishing node (those of other nodes are not waited
/// for); a broker that does not expose its local histories
/// ([`Broker::local_log`]) publishes without waiting. A failed publish
/// never waits.
///
/// ```
/// use push_runtime::{Backpressure, HubConfig};
/// use std::time::Duration;
///
/// let mut config = HubConfig::default();
/// config.backpressure = Some(Backpressure::new().ahead(1).max_wait(Duration::from_millis(100)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backpressure {
    ahead: u64,
    max_wait: Duration,
}

impl Default for Backpressure {
    fn default() -> Self {
        Self::new()
    }
}

impl Backpressure {
    /// Publishing completes once this very event has been handed to every
    /// subscriber waiting for it (`ahead` 0), waiting at most
    /// [`DEFAULT_BACKPRESSURE_MAX_WAIT`].
    pub const fn new() -> Self {
        Self {
            ahead: 0,
            max_wait: DEFAULT_BACKPRESSURE_MAX_WAIT,
        }
    }

    /// How many events a publisher may run ahead of the subscribers that
    /// keep up: a publish of the event at sequence `n` completes once the
    /// event at `n - ahead` was taken (0, the default: this event itself).
    /// Concurrent publishers of one topic share the distance.
    pub const fn ahead(mut self, events: u64) -> Self {
        self.ahead = events;
        self
    }

    /// The longest one publish waits (default
    /// [`DEFAULT_BACKPRESSURE_MAX_WAIT`], 250 ms); the publish then
    /// succeeds as usual. `Duration::ZERO` waits not at all.
    pub const fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The distance set by [`Backpressure::ahead`].
    pub const fn events_ahead(&self) -> u64 {
        self.ahead
    }

    /// The bound set by [`Backpressure::max_wait`].
    pub const fn wait_bound(&self) -> Duration {
        self.max_wait
    }
}

/// Topics alive at once by default.
pub const DEFAULT_MAX_TOPICS: usize = 10_000;

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            history_len: DEFAULT_HISTORY_LEN,
            max_topic_len: DEFAULT_MAX_TOPIC_LEN,
            max_topics: DEFAULT_MAX_TOPICS,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            max_history_bytes: DEFAULT_MAX_HISTORY_BYTES,
            max_total_history_bytes: DEFAULT_MAX_TOTAL_HISTORY_BYTES,
            backpressure: None,
        }
    }
}

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic name is not valid.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The event could not be serialized to JSON.
    #[error("could not serialize the event: {0}")]
    Encode(#[source] serde_json::Error),
    /// The event's JSON is larger than [`HubConfig::max_event_size`]; it
    /// was not published.
    #[error("the event is {size} bytes, over the hub's limit of {max}")]
    TooLarge {
        /// The size of the event's JSON, in bytes.
        size: usize,
        /// The hub's [`HubConfig::max_event_size`].
        max: usize,
    },
    /// The broker failed; the event was not published.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a subscription could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The topic name is not valid.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The starting cursor makes no sense for this topic.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl From<BrokerSubscribeError> for SubscribeError {
    fn from(error: BrokerSubscribeError) -> Self {
        match error {
            BrokerSubscribeError::Start(e) => Self::Start(e),
            BrokerSubscribeError::Broker(e) => Self::Broker(e),
        }
    }
}

/// Publishes events of channel `C` and hands subscriptions to transports.
///
/// Cheap to clone: clones share the same topics.
///
/// ```
/// # #[push_runtime::push_channel(path = "/chat")]
/// # #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// # enum ChatEvent { Joined(String) }
/// # async fn run() -> Result<(), push_runtime::PublishError> {
/// use push_runtime::Hub;
///
/// let hub = Hub::<ChatEvent>::new();
/// let cursor = hub.publish("lobby", ChatEvent::Joined("ann".into())).await?;
/// assert_eq!(cursor.seq(), 1);
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(run()).unwrap();
/// ```
pub struct Hub<C> {
    shared: Arc<HubShared>,
    channel: PhantomData<fn() -> C>,
}

struct HubShared {
    broker: Arc<dyn Broker>,
    config: HubConfig,
    meter: Arc<Meter>,
    /// What the hub's subscriptions took: events, gaps by cause.
    deliveries: Arc<DeliveryCounts>,
    shutdown: Shutdown,
}

impl<C> Clone for Hub<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            channel: PhantomData,
        }
    }
}

impl<C> fmt::Debug for Hub<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<C: Channel> Default for Hub<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Channel> Hub<C> {
    /// An in-memory hub with the default settings.
    pub fn new() -> Self {
        Self::with_config(HubConfig::default())
    }

    /// An in-memory hub with these settings.
    pub fn with_config(config: HubConfig) -> Self {
        let broker = Arc::new(
            MemoryBroker::with_max_topics(config.history_len, config.max_topics).history_budget(
                HistoryBudget::new(config.max_history_bytes, config.max_total_history_bytes),
            ),
        );
        Self::with_broker(broker, config)
    }

    /// A hub over another broker (several hubs may share one broker).
    pub fn with_broker(broker: Arc<dyn Broker>, config: HubConfig) -> Self {
        broker.register_channel(C::PATH, <C::Kind as EventKind>::NAMES);
        Self {
            shared: Arc::new(HubShared {
                broker,
                config,
                meter: Arc::default(),
                deliveries: Arc::default(),
                shutdown: Shutdown::default(),
            }),
            channel: PhantomData,
        }
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// The hub's accounting: open connections and bytes buffered for them.
    pub fn stats(&self) -> Stats {
        self.shared.meter.stats()
    }

    /// Ends every stream served from this hub, telling clients to reconnect
    /// and resume (SSE and forever frame: a last `push.end` with the resume
    /// cursor; WebSocket: close `1001`; held long polls are answered), and
    /// refuses new subscriptions with `503`. Call it from the shutdown
    /// future given to `axum::serve(…).with_graceful_shutdown`, so the server
    /// stops accepting, the streams end and the server can exit.
    pub fn shutdown(&self) {
        tracing::info!("shutting down the hub's streams");
        self.shared.shutdown.trigger();
    }

    pub(crate) fn shutdown_signal(&self) -> &Shutdown {
        &self.shared.shutdown
    }

    pub(crate) fn meter(&self) -> &Arc<Meter> {
        &self.shared.meter
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn deliveries(&self) -> &Arc<DeliveryCounts> {
        &self.shared.deliveries
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn broker(&self) -> &Arc<dyn Broker> {
        &self.shared.broker
    }

    /// Validates a topic name against this hub's limits.
    pub fn topic(&self, name: &str) -> Result<Topic, TopicError> {
        Topic::with_max_len(name, self.shared.config.max_topic_len)
    }

    /// Publishes `event` to `topic` and returns its cursor.
    ///
    /// The event is serialized once; every subscriber on every transport
    /// shares those bytes. An event whose JSON is larger than
    /// [`HubConfig::max_event_size`] is refused with
    /// [`PublishError::TooLarge`]. With [`HubConfig::backpressure`], it
    /// completes only once the subscribers that keep up have the event
    /// (see [`Backpressure`]).
    pub async fn publish(
        &self,
        topic: &str,
        event: impl Borrow<C>,
    ) -> Result<Cursor, PublishError> {
        let topic = self.topic(topic)?;
        let event = event.borrow();
        let data = serde_json::to_vec(event).map_err(PublishError::Encode)?;
        let max = self.shared.config.max_event_size;
        if data.len() > max {
            return Err(PublishError::TooLarge {
                size: data.len(),
                max,
            });
        }
        let kind = event.kind();
        let outgoing = Outgoing {
            name: kind.name(),
            kind_index: kind.index(),
            data: Bytes::from(data),
        };
        self.publish_encoded(&topic, outgoing).await
    }

    pub(crate) async fn publish_encoded(
        &self,
        topic: &Topic,
        outgoing: Outgoing,
    ) -> Result<Cursor, PublishError> {
        let key = TopicKey {
            channel: C::PATH,
            topic: topic.clone(),
        };
        let broker = &self.shared.broker;
        let paced = self.shared.config.backpressure.and_then(|pacing| {
            // Counting starts before the append, so its own round is counted.
            let log = broker.local_log(&key)?;
            log.pace();
            Some((pacing, log))
        });
        let started = Instant::now();
        let published = broker.publish(&key, outgoing).await;
        let counters = &self.shared.meter.counters;
        match published {
            Ok(cursor) => {
                counters.publish_latency.observe(started.elapsed());
                counters.published.fetch_add(1, Ordering::Relaxed);
                if let Some((pacing, log)) = paced
                    && log.epoch() == cursor.epoch()
                    && let Some(bound) = cursor.seq().checked_sub(pacing.ahead)
                    && !pacing.max_wait.is_zero()
                    && !log.wait_taken(bound, pacing.max_wait).await
                {
                    counters.publish_waits_cut.fetch_add(1, Ordering::Relaxed);
                }
                Ok(cursor)
            }
            Err(error) => {
                counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                Err(error.into())
            }
        }
    }

    /// Starts reading `topic` at `start`, optionally only events of the given kinds.
    pub async fn subscribe(
        &self,
        topic: &str,
        start: Start,
        kinds: Option<&[C::Kind]>,
    ) -> Result<Subscription, SubscribeError> {
        let topic = self.topic(topic)?;
        let filter = kinds.map(|kinds| KindFilter::from_indices(kinds.iter().map(|k| k.index())));
        self.subscribe_topic(&topic, start, filter).await
    }

    pub(crate) async fn subscribe_topic(
        &self,
        topic: &Topic,
        start: Start,
        filter: Option<KindFilter>,
    ) -> Result<Subscription, SubscribeError> {
        let key = TopicKey {
            channel: C::PATH,
            topic: topic.clone(),
        };
        let mut subscription = self.shared.broker.subscribe(&key, start).await?;
        if self.shared.config.backpressure.is_some()
            && let Some(log) = self.shared.broker.local_log(&key)
        {
            // Counted from the start: the topic may be new.
            log.pace();
            subscription.join_round();
        }
        subscription.set_filter(filter);
        subscription.count_into(Arc::clone(&self.shared.deliveries));
        Ok(subscription)
    }
}

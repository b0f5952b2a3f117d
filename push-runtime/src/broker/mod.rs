//! Brokers: where topics' histories live and cursors are assigned.
//!
//! The [`Hub`](crate::Hub) talks only to this trait, so a multi-node backend
//! can replace the in-memory one without touching any transport: with the
//! `redis` feature, `RedisBroker` shares histories and cursors between nodes.

use crate::cursor::Cursor;
use crate::history::{
    HistoryBudget, HistoryFull, Outgoing, Start, StartError, Subscription, TopicLog, fresh_epoch,
};
use crate::topic::Topic;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use self::redis::{RedisBroker, RedisBrokerError, RedisConfig};

/// A boxed future, as returned by [`Broker`] methods.
pub type BrokerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A topic within a channel: brokers may be shared by several channels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicKey {
    /// The channel's base path (its [`Channel::PATH`](crate::Channel::PATH)).
    pub channel: &'static str,
    /// The topic.
    pub topic: Topic,
}

/// A failure inside a broker, with its [kind](BrokerErrorKind): what the
/// routes answer depends on the kind, never on the broker's own error type.
#[derive(Debug, thiserror::Error)]
#[error("broker error: {source}")]
pub struct BrokerError {
    kind: BrokerErrorKind,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// What kind of failure a [`BrokerError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerErrorKind {
    /// The broker is full (e.g. every topic it may keep alive is being
    /// read): a later attempt may pass. Routes answer `503` with `Retry-After`.
    Capacity,
    /// The broker's backing store cannot be reached now: a later attempt
    /// may pass. Routes answer `503` with `Retry-After`.
    Unavailable,
    /// Anything else (e.g. the store answered something unexpected).
    /// Routes answer `500`.
    Other,
}

impl BrokerError {
    /// A failure of this kind, caused by `source`.
    pub fn new(
        kind: BrokerErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> BrokerErrorKind {
        self.kind
    }

    /// Whether a later attempt may pass ([`Capacity`](BrokerErrorKind::Capacity)
    /// or [`Unavailable`](BrokerErrorKind::Unavailable)).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            BrokerErrorKind::Capacity | BrokerErrorKind::Unavailable
        )
    }
}

/// Why a broker could not start a subscription.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerSubscribeError {
    /// The starting cursor makes no sense for this topic.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Stores topics' histories, assigns cursors and wakes local subscribers.
pub trait Broker: Send + Sync + 'static {
    /// Appends an encoded event to a topic, returning the cursor it was given.
    fn publish<'a>(
        &'a self,
        key: &'a TopicKey,
        event: Outgoing,
    ) -> BrokerFuture<'a, Result<Cursor, BrokerError>>;

    /// Starts reading a topic at `start`.
    fn subscribe<'a>(
        &'a self,
        key: &'a TopicKey,
        start: Start,
    ) -> BrokerFuture<'a, Result<Subscription, BrokerSubscribeError>>;

    /// Tells the broker the wire names of a channel whose topics it holds,
    /// in declaration order (`names[kind_index]` is each event's name).
    /// [`Hub::with_broker`](crate::Hub::with_broker) calls it. A broker that
    /// reads events back from a shared store checks what it reads against
    /// them; the default does nothing.
    fn register_channel(&self, channel: &'static str, names: &'static [&'static str]) {
        let _ = (channel, names);
    }

    /// The health of the broker's link to a shared store, for an operator
    /// (the `metrics` feature renders it); `None`, the default, for a
    /// broker without one, such as [`MemoryBroker`].
    fn health(&self) -> Option<BrokerHealth> {
        None
    }

    /// This node's history of `key`, if it holds one now (never creates
    /// it): what [`Backpressure`](crate::Backpressure) counts deliveries
    /// on. The default, `None`, makes paced publishes complete without
    /// waiting.
    fn local_log(&self, key: &TopicKey) -> Option<Arc<TopicLog>> {
        let _ = key;
        None
    }
}

/// The health of a broker's link to the store its nodes share, from
/// [`Broker::health`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerHealth {
    /// Whether the node's reader is connected to the store now.
    pub connected: bool,
    /// How many times the reader reconnected after losing the store.
    pub reconnects: u64,
    /// How many events the store held that the node had not mirrored yet,
    /// at its last check (the largest figure of any one topic): how far the
    /// reader is behind.
    pub reader_lag: u64,
    /// How many topics the node mirrors now.
    pub mirrored_topics: usize,
}

impl BrokerHealth {
    /// A figure of these values (brokers outside this crate build theirs
    /// with it: the struct may grow).
    pub fn new(connected: bool, reconnects: u64, reader_lag: u64, mirrored_topics: usize) -> Self {
        Self {
            connected,
            reconnects,
            reader_lag,
            mirrored_topics,
        }
    }
}

/// The single-process broker: each topic is a bounded ring in memory.
///
/// Each topic gets a fresh epoch when it is created, so cursors from before a
/// restart (or an eviction) are recognised as belonging to a lost history.
/// At most `max_topics` topics are alive. A new topic takes the place of a
/// topic nobody reads and nobody used lately, found by a clock sweep of at
/// most [`EVICTION_SCAN`] places (constant work under the lock, whatever
/// the number of topics); a topic created by a read (a subscription to a
/// topic without events) may only take the place of another topic without
/// events, so anonymous readers of random names can never evict a history.
/// Without such a place the new topic is refused with [`TooManyTopics`].
///
/// Histories are bounded in bytes too, per topic and in total (a
/// [`HistoryBudget`], by default [`HistoryBudget::default`]). A publish that
/// finds the total full evicts an idle topic with events, found by the
/// clock sweep, before its topic drops its own oldest events; if that
/// cannot make room either, it evicts more (at most [`PRESSURE_EVICTIONS`]
/// in all) and is refused with [`HistoryFull`] if that does not make room.
#[derive(Debug)]
pub struct MemoryBroker {
    history_len: usize,
    max_topics: usize,
    budget: HistoryBudget,
    topics: RwLock<Topics>,
}

/// How many idle topics one publish may evict to make room in the total
/// byte budget of the histories, at most.
pub const PRESSURE_EVICTIONS: usize = 8;

/// How many places one creation looks at, at most, for a topic to evict.
pub const EVICTION_SCAN: usize = 64;

#[derive(Debug, Default)]
struct Topics {
    map: HashMap<TopicKey, Slot>,
    /// Every topic, in the order the clock hand visits them.
    hand: VecDeque<TopicKey>,
}

#[derive(Debug)]
struct Slot {
    log: Arc<TopicLog>,
    /// Used (published to or subscribed to) since the hand last passed: a
    /// second chance before eviction.
    used: AtomicBool,
}

/// Why a new topic could not be created: the broker holds `max_topics`
/// topics and found none to evict (every one near the clock hand is read,
/// recently used, or, for a topic created by a read, has events).
#[derive(Debug, thiserror::Error)]
#[error("too many topics alive ({0}), and none is idle")]
pub struct TooManyTopics(pub usize);

/// Why the clock hand looks for a topic to evict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Creation {
    /// A publish creates a topic.
    Publish,
    /// A read creates a topic.
    Read,
    /// A publish needs room in the histories' total byte budget: only a
    /// topic with events frees some.
    Bytes,
}

impl MemoryBroker {
    /// A broker keeping up to `history_len` events per topic (at least 1),
    /// with no practical limit on topics, within the default
    /// [`HistoryBudget`].
    pub fn new(history_len: usize) -> Self {
        Self::with_max_topics(history_len, usize::MAX)
    }

    /// A broker keeping up to `history_len` events per topic and at most
    /// `max_topics` topics (both at least 1), within the default
    /// [`HistoryBudget`].
    pub fn with_max_topics(history_len: usize, max_topics: usize) -> Self {
        Self {
            history_len: history_len.max(1),
            max_topics: max_topics.max(1),
            budget: HistoryBudget::default(),
            topics: RwLock::default(),
        }
    }

    /// The same broker with histories bounded in bytes by `budget`.
    pub fn history_budget(mut self, budget: HistoryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// The bytes the histories count now (see [`HistoryBudget`]).
    pub fn history_bytes(&self) -> usize {
        self.budget.used()
    }

    /// How many topics are alive.
    pub fn topic_count(&self) -> usize {
        self.topics
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .map
            .len()
    }

    /// The history of `key`, created empty on first use as a publish
    /// creates it (taking the place of an idle topic when `max_topics` are
    /// alive).
    pub fn log(&self, key: &TopicKey) -> Result<Arc<TopicLog>, TooManyTopics> {
        self.topic(key, Creation::Publish)
    }

    fn topic(&self, key: &TopicKey, creation: Creation) -> Result<Arc<TopicLog>, TooManyTopics> {
        let existing = self
            .topics
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .map
            .get(key)
            .map(|slot| {
                slot.used.store(true, Ordering::Relaxed);
                Arc::clone(&slot.log)
            });
        if let Some(log) = existing {
            return Ok(log);
        }
        let mut topics = self
            .topics
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(slot) = topics.map.get(key) {
            return Ok(Arc::clone(&slot.log));
        }
        if topics.map.len() >= self.max_topics {
            match topics.sweep(creation) {
                Some(evicted) => tracing::debug!(topic = %evicted.topic, "evicting an idle topic"),
                None => return Err(TooManyTopics(self.max_topics)),
            }
        }
        let log = Arc::new(TopicLog::with_budget(
            fresh_epoch(),
            self.history_len,
            &self.budget,
        ));
        let slot = Slot {
            log: Arc::clone(&log),
            used: AtomicBool::new(true),
        };
        topics.map.insert(key.clone(), slot);
        topics.hand.push_back(key.clone());
        Ok(log)
    }
}

impl Topics {
    /// Moves the clock hand over at most [`EVICTION_SCAN`] places and evicts
    /// a topic that may go: nobody reads it (only the map holds its log) and
    /// it was not used since the hand last passed. A topic without events
    /// goes first; one with events only for a creation by a publish, and
    /// only if the hand found no topic without events. To make room in the
    /// byte budget ([`Creation::Bytes`]), only a topic with events goes.
    fn sweep(&mut self, creation: Creation) -> Option<TopicKey> {
        let mut with_events = None;
        // Twice round a small broker: the first pass may only clear the
        // second chances.
        for _ in 0..EVICTION_SCAN.min(2 * self.hand.len()) {
            let key = self.hand.pop_front()?;
            // A key evicted earlier, still on the hand's way: dropped now.
            let Some(slot) = self.map.get(&key) else {
                continue;
            };
            let read = Arc::strong_count(&slot.log) > 1;
            let recent = slot.used.swap(false, Ordering::Relaxed);
            let empty = slot.log.newest().seq() == 0;
            if !read && !recent && empty && creation != Creation::Bytes {
                self.map.remove(&key);
                return Some(key);
            }
            if !read && !recent && !empty && creation != Creation::Read && with_events.is_none() {
                with_events = Some(key.clone());
            }
            self.hand.push_back(key);
            if creation == Creation::Bytes && with_events.is_some() {
                break;
            }
        }
        // Its key stays on the hand's way, and is dropped when reached.
        let key = with_events?;
        self.map.remove(&key);
        Some(key)
    }
}

fn too_many(error: TooManyTopics) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Capacity, error)
}

impl MemoryBroker {
    /// Appends `event` to `log`. When the histories' total has no room for
    /// it, an idle topic with events is evicted first (the topics being read
    /// keep their histories); then the log drops its own oldest events if
    /// it must; if even that cannot make room, more idle topics are evicted
    /// (at most [`PRESSURE_EVICTIONS`] in all) before the event is refused.
    fn append(&self, log: &TopicLog, event: Outgoing) -> Result<Cursor, HistoryFull> {
        let mut evictions = 0;
        if self.budget.used().saturating_add(event.data.len()) > self.budget.total() {
            evictions += 1;
            self.evict_for_bytes();
        }
        loop {
            match log.try_append(event.clone()) {
                Ok(cursor) => return Ok(cursor),
                Err(full) if evictions >= PRESSURE_EVICTIONS || !self.evict_for_bytes() => {
                    return Err(full);
                }
                Err(_) => evictions += 1,
            }
        }
    }

    /// Evicts one idle topic with events, if the clock hand finds one.
    fn evict_for_bytes(&self) -> bool {
        let evicted = self
            .topics
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .sweep(Creation::Bytes);
        if let Some(key) = &evicted {
            tracing::debug!(topic = %key.topic, "evicting an idle topic: the histories hold their total byte budget");
        }
        evicted.is_some()
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        key: &'a TopicKey,
        event: Outgoing,
    ) -> BrokerFuture<'a, Result<Cursor, BrokerError>> {
        let result = self
            .topic(key, Creation::Publish)
            .map_err(too_many)
            .and_then(|log| {
                self.append(&log, event)
                    .map_err(|full| BrokerError::new(BrokerErrorKind::Capacity, full))
            });
        Box::pin(std::future::ready(result))
    }

    fn subscribe<'a>(
        &'a self,
        key: &'a TopicKey,
        start: Start,
    ) -> BrokerFuture<'a, Result<Subscription, BrokerSubscribeError>> {
        let result = match self.topic(key, Creation::Read) {
            Ok(log) => log.subscribe(start).map_err(BrokerSubscribeError::from),
            Err(error) => Err(BrokerSubscribeError::Broker(too_many(error))),
        };
        Box::pin(std::future::ready(result))
    }

    fn local_log(&self, key: &TopicKey) -> Option<Arc<TopicLog>> {
        self.topics
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .map
            .get(key)
            .map(|slot| Arc::clone(&slot.log))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outgoing;

    fn key(name: &str) -> TopicKey {
        TopicKey {
            channel: "/t",
            topic: Topic::new(name).unwrap(),
        }
    }

    fn event() -> Outgoing {
        Outgoing {
            name: "e",
            kind_index: 0,
            data: bytes::Bytes::from_static(b"1"),
        }
    }

    #[tokio::test]
    async fn evicts_the_least_recently_used_idle_topic_and_refuses_when_none_is_idle() {
        let broker = MemoryBroker::with_max_topics(8, 2);
        let a = broker.publish(&key("a"), event()).await.unwrap();
        broker.publish(&key("b"), event()).await.unwrap();
        let reader = broker.subscribe(&key("b"), Start::Now).await.unwrap();
        // `a` is idle and older: `c` takes its place.
        broker.publish(&key("c"), event()).await.unwrap();
        assert_eq!(broker.topic_count(), 2);
        // `a` comes back with a new epoch: its old cursors get a gap.
        let again = broker.publish(&key("a"), event()).await.unwrap();
        assert_ne!(again.epoch(), a.epoch());
        // Now `b` (read) and `a` are alive; `c` was evicted. Read `a` too:
        let _reader_a = broker.subscribe(&key("a"), Start::Now).await.unwrap();
        let refused = broker.publish(&key("d"), event()).await;
        let refused = refused.expect_err("every topic is read: no room");
        assert_eq!(refused.kind(), BrokerErrorKind::Capacity);
        assert!(refused.is_transient());
        drop(reader);
        assert!(broker.publish(&key("d"), event()).await.is_ok());
    }

    #[tokio::test]
    async fn readers_of_new_topics_never_evict_a_history() {
        let broker = MemoryBroker::with_max_topics(8, 2);
        let kept = broker.publish(&key("kept"), event()).await.unwrap();
        // Anonymous readers of random names, one after another: each one's
        // empty topic makes room for the next, never the topic with events.
        for n in 0..100 {
            let reader = broker
                .subscribe(&key(&format!("random-{n}")), Start::Now)
                .await
                .unwrap();
            drop(reader);
        }
        let again = broker.publish(&key("kept"), event()).await.unwrap();
        assert_eq!(again, Cursor::new(kept.epoch(), 2), "its history survived");
        // Only topics with events are left, idle: a reader cannot take the
        // place of one, a publisher can.
        broker.publish(&key("other"), event()).await.unwrap();
        let refused = broker
            .subscribe(&key("random-x"), Start::Now)
            .await
            .expect_err("a read may not evict a history");
        assert!(
            matches!(refused, BrokerSubscribeError::Broker(e) if e.kind() == BrokerErrorKind::Capacity)
        );
        broker.publish(&key("new"), event()).await.unwrap();
        assert_eq!(broker.topic_count(), 2);
    }

    fn sized(size: usize) -> Outgoing {
        Outgoing {
            name: "e",
            kind_index: 0,
            data: bytes::Bytes::from(vec![b'1'; size]),
        }
    }

    #[tokio::test]
    async fn a_publish_evicts_idle_histories_when_the_total_is_full_else_is_refused() {
        const E: usize = 1000;
        let broker = MemoryBroker::new(64).history_budget(HistoryBudget::new(4 * E, 3 * E));
        let idle = broker.publish(&key("idle"), sized(E)).await.unwrap();
        broker.publish(&key("idle"), sized(E)).await.unwrap();
        let reader = broker.subscribe(&key("read"), Start::Now).await.unwrap();
        broker.publish(&key("read"), sized(E)).await.unwrap();
        assert_eq!(broker.history_bytes(), 3 * E);
        // No room in the total: the idle history is evicted, not the read one.
        broker.publish(&key("read"), sized(E)).await.unwrap();
        broker.publish(&key("read"), sized(E)).await.unwrap();
        assert_eq!(broker.history_bytes(), 3 * E);
        assert_eq!(broker.topic_count(), 1);
        let again = broker.publish(&key("idle"), sized(E)).await;
        let refused = again.expect_err("only a read history holds the total");
        assert_eq!(refused.kind(), BrokerErrorKind::Capacity);
        assert!(
            refused
                .to_string()
                .contains("no room for an event of 1000 bytes")
        );
        assert_eq!(broker.history_bytes(), 3 * E);
        // Once nobody reads it, it may go in turn; `idle` is a new epoch.
        drop(reader);
        let again = broker.publish(&key("idle"), sized(E)).await.unwrap();
        assert_ne!(again.epoch(), idle.epoch());
        assert!(broker.history_bytes() <= 3 * E);
    }

    #[test]
    fn a_creation_looks_at_a_bounded_number_of_places() {
        let broker = MemoryBroker::with_max_topics(1, 1000);
        let mut readers = Vec::new();
        for n in 0..1000 {
            let log = broker.log(&key(&format!("t{n}"))).unwrap();
            readers.push(log.subscribe(Start::Now).unwrap());
        }
        // Every topic is read: the sweep gives up after EVICTION_SCAN places.
        let topics = broker.topics.read().unwrap();
        assert_eq!(topics.hand.len(), 1000);
        drop(topics);
        assert!(broker.log(&key("more")).is_err());
        let topics = broker.topics.read().unwrap();
        let visited: Vec<_> = topics.hand.iter().rev().take(EVICTION_SCAN).collect();
        assert_eq!(visited.last().map(|k| k.topic.as_str()), Some("t0"));
        assert_eq!(visited[0].topic.as_str(), format!("t{}", EVICTION_SCAN - 1));
    }
}

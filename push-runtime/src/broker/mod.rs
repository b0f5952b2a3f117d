//! Brokers: where topics' histories live and cursors are assigned.
//!
//! The [`Hub`](crate::Hub) talks only to this trait, so a multi-node backend
//! can replace the in-memory one without touching any transport: with the
//! `redis` feature, `RedisBroker` shares histories and cursors between nodes.

use crate::cursor::Cursor;
use crate::history::{Outgoing, Start, StartError, Subscription, TopicLog, fresh_epoch};
use crate::topic::Topic;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// The single-process broker: each topic is a bounded ring in memory.
///
/// Each topic gets a fresh epoch when it is created, so cursors from before a
/// restart (or an eviction) are recognised as belonging to a lost history.
/// At most `max_topics` topics are alive: a new one evicts the least recently
/// used topic nobody reads, or is refused with [`TooManyTopics`].
#[derive(Debug)]
pub struct MemoryBroker {
    history_len: usize,
    max_topics: usize,
    clock: AtomicU64,
    topics: RwLock<HashMap<TopicKey, Slot>>,
}

#[derive(Debug)]
struct Slot {
    log: Arc<TopicLog>,
    /// The broker's clock at the last publish or subscribe.
    used: AtomicU64,
}

/// Every topic alive is being read: no new topic can be created now.
#[derive(Debug, thiserror::Error)]
#[error("too many topics alive ({0}), and none is idle")]
pub struct TooManyTopics(pub usize);

impl MemoryBroker {
    /// A broker keeping up to `history_len` events per topic (at least 1),
    /// with no practical limit on topics.
    pub fn new(history_len: usize) -> Self {
        Self::with_max_topics(history_len, usize::MAX)
    }

    /// A broker keeping up to `history_len` events per topic and at most
    /// `max_topics` topics (both at least 1).
    pub fn with_max_topics(history_len: usize, max_topics: usize) -> Self {
        Self {
            history_len: history_len.max(1),
            max_topics: max_topics.max(1),
            clock: AtomicU64::new(0),
            topics: RwLock::default(),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// How many topics are alive.
    pub fn topic_count(&self) -> usize {
        self.topics
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .len()
    }

    /// The history of `key`, created empty on first use (evicting an idle
    /// topic when `max_topics` are alive).
    pub fn log(&self, key: &TopicKey) -> Result<Arc<TopicLog>, TooManyTopics> {
        let existing = self
            .topics
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(key)
            .map(|slot| {
                slot.used.store(self.tick(), Ordering::Relaxed);
                Arc::clone(&slot.log)
            });
        if let Some(log) = existing {
            return Ok(log);
        }
        let mut topics = self
            .topics
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if !topics.contains_key(key) && topics.len() >= self.max_topics {
            // Idle: only the map holds the log, so no subscription reads it.
            let idle = topics
                .iter()
                .filter(|(_, slot)| Arc::strong_count(&slot.log) == 1)
                .min_by_key(|(_, slot)| slot.used.load(Ordering::Relaxed))
                .map(|(key, _)| key.clone());
            match idle {
                Some(evicted) => {
                    tracing::debug!(topic = %evicted.topic, "evicting an idle topic");
                    topics.remove(&evicted);
                }
                None => return Err(TooManyTopics(self.max_topics)),
            }
        }
        let used = self.tick();
        let slot = topics.entry(key.clone()).or_insert_with(|| Slot {
            log: Arc::new(TopicLog::new(fresh_epoch(), self.history_len)),
            used: AtomicU64::new(used),
        });
        Ok(Arc::clone(&slot.log))
    }
}

fn too_many(error: TooManyTopics) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Capacity, error)
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        key: &'a TopicKey,
        event: Outgoing,
    ) -> BrokerFuture<'a, Result<Cursor, BrokerError>> {
        let result = self.log(key).map(|log| log.append(event)).map_err(too_many);
        Box::pin(std::future::ready(result))
    }

    fn subscribe<'a>(
        &'a self,
        key: &'a TopicKey,
        start: Start,
    ) -> BrokerFuture<'a, Result<Subscription, BrokerSubscribeError>> {
        let result = match self.log(key) {
            Ok(log) => log.subscribe(start).map_err(BrokerSubscribeError::from),
            Err(error) => Err(BrokerSubscribeError::Broker(too_many(error))),
        };
        Box::pin(std::future::ready(result))
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
}

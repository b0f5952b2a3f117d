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

/// A failure inside a broker (e.g. its backing store is unreachable).
#[derive(Debug, thiserror::Error)]
#[error("broker error: {0}")]
pub struct BrokerError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

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
}

/// The single-process broker: each topic is a bounded ring in memory.
///
/// Each topic gets a fresh epoch when it is created, so cursors from before a
/// restart are recognised as belonging to a lost history.
#[derive(Debug)]
pub struct MemoryBroker {
    history_len: usize,
    topics: RwLock<HashMap<TopicKey, Arc<TopicLog>>>,
}

impl MemoryBroker {
    /// A broker keeping up to `history_len` events per topic (at least 1).
    pub fn new(history_len: usize) -> Self {
        Self {
            history_len: history_len.max(1),
            topics: RwLock::default(),
        }
    }

    /// The history of `key`, created empty on first use.
    pub fn log(&self, key: &TopicKey) -> Arc<TopicLog> {
        let existing = self
            .topics
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(key)
            .cloned();
        if let Some(log) = existing {
            return log;
        }
        let mut topics = self
            .topics
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        Arc::clone(
            topics
                .entry(key.clone())
                .or_insert_with(|| Arc::new(TopicLog::new(fresh_epoch(), self.history_len))),
        )
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        key: &'a TopicKey,
        event: Outgoing,
    ) -> BrokerFuture<'a, Result<Cursor, BrokerError>> {
        let cursor = self.log(key).append(event);
        Box::pin(std::future::ready(Ok(cursor)))
    }

    fn subscribe<'a>(
        &'a self,
        key: &'a TopicKey,
        start: Start,
    ) -> BrokerFuture<'a, Result<Subscription, BrokerSubscribeError>> {
        let result = self
            .log(key)
            .subscribe(start)
            .map_err(BrokerSubscribeError::from);
        Box::pin(std::future::ready(result))
    }
}

//! The broker conformance suite: every check here is written once, generic
//! over a [`Deployment`] (a broker and the nodes sharing it), and runs
//! against every broker: the in-memory broker (several nodes are several
//! `Hub`s sharing one `MemoryBroker`), the Redis broker (each node is its
//! own `RedisBroker` on the same Redis and key prefix), and the Redis broker
//! on a Redis Cluster (the same, every node given the cluster's seeds). The checks work at
//! the `Hub`/`Subscription` level; the transports have their own suite
//! (`tests/conformance.rs`).
//!
//! Adding a broker is one more `impl Deployment` and one more
//! `generate!(…)` line at the end, naming the checks it runs.
//!
//! The Redis deployment needs a Redis at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`); without one its tests print why and pass,
//! except under CI (`CI` set), where they fail. The outage check runs its own
//! `redis-server` (from `PATH`). The cluster deployment starts its own
//! cluster (3 primaries, 3 replicas: `redis-server` and `redis-cli` from
//! `PATH`; without them its tests print why and pass, except under CI).

mod support;

use push_runtime::broker::{
    BrokerError, BrokerErrorKind, MemoryBroker, RedisBroker, RedisConfig, TopicKey,
};
use push_runtime::history::{StartError, Subscription};
use push_runtime::{
    Channel, Cursor, DEFAULT_MAX_TOPICS, Delivery, Gap, Hub, HubConfig, PublishError, Start,
    SubscribeError, Topic,
};
use std::sync::{Arc, Weak};
use std::time::Duration;
use support::PATIENCE;
use support::channel::{TestEvent, note};
use support::redis_setup::{OwnCluster, OwnRedis, admin, shared_redis, unique_prefix};
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// Deployments
// ---------------------------------------------------------------------------

/// What a check asks of the deployment it runs on.
#[derive(Clone, Copy, Debug)]
struct Settings {
    /// Events kept per topic.
    history_len: usize,
    /// Topics alive at once (`HubConfig::max_topics`).
    max_topics: usize,
    /// The deployment's store must be its own, so that it can be stopped
    /// and restarted ([`Deployment::stop_store`]).
    own_store: bool,
}

impl Settings {
    const fn history(history_len: usize) -> Self {
        Self {
            history_len,
            max_topics: DEFAULT_MAX_TOPICS,
            own_store: false,
        }
    }

    const fn max_topics(self, max_topics: usize) -> Self {
        Self { max_topics, ..self }
    }

    const fn own_store(self) -> Self {
        Self {
            own_store: true,
            ..self
        }
    }

    fn hub_config(self) -> HubConfig {
        let mut config = HubConfig::default();
        config.history_len = self.history_len;
        config.max_topics = self.max_topics;
        config
    }
}

/// One broker and the nodes that share it: what every check runs on.
///
/// A deployment is created per test, so checks never see each other's
/// topics, and is cleaned up when dropped (after the nodes, which the checks
/// declare after it).
trait Deployment: Sized {
    /// The deployment's name, in assertion messages.
    fn name() -> &'static str;

    /// Whether a topic evicted to make room for another loses its history
    /// (the memory broker: it comes back in a new epoch) or keeps it (Redis:
    /// only the node's mirror goes, the history stays in Redis).
    const EVICTION_LOSES_HISTORY: bool;

    /// Whether publishing to a new topic needs room among the topics a node
    /// keeps (memory: the topic lives in the node; Redis: a publish costs
    /// the node nothing, only a mirror of a topic its clients read does).
    const PUBLISH_NEEDS_ROOM: bool;

    /// A new deployment with nothing in it, for the test `test`; `None`
    /// (after saying why) when the test cannot run here, never under CI.
    async fn start(test: &str, settings: Settings) -> Option<Self>;

    /// A new node: a hub over a broker sharing this deployment's histories.
    async fn node(&self) -> Hub<TestEvent>;

    /// Makes the broker lose `topic`'s history, as a store that lost its
    /// data or evicted the topic would; `false` if this deployment cannot
    /// (a check then fails: it must not be generated for this deployment).
    async fn lose_history(&self, topic: &str) -> bool;

    /// Stops the store every node uses; `false` if this deployment has no
    /// store of its own to stop.
    async fn stop_store(&self) -> bool {
        false
    }

    /// Starts the stopped store again, empty; `false` if unsupported.
    async fn restart_store(&self) -> bool {
        false
    }
}

/// The in-memory broker: the nodes are hubs sharing one `MemoryBroker`.
struct Memory {
    broker: Arc<MemoryBroker>,
    settings: Settings,
}

impl Deployment for Memory {
    fn name() -> &'static str {
        "memory"
    }

    const EVICTION_LOSES_HISTORY: bool = true;
    const PUBLISH_NEEDS_ROOM: bool = true;

    async fn start(_test: &str, settings: Settings) -> Option<Self> {
        let broker = MemoryBroker::with_max_topics(settings.history_len, settings.max_topics);
        Some(Self {
            broker: Arc::new(broker),
            settings,
        })
    }

    async fn node(&self) -> Hub<TestEvent> {
        Hub::with_broker(
            Arc::clone(&self.broker) as Arc<_>,
            self.settings.hub_config(),
        )
    }

    /// Evicts the topic: `max_topics` new topics take every place. Only a
    /// topic nobody reads can be evicted, and only with a small `max_topics`.
    async fn lose_history(&self, topic: &str) -> bool {
        const MOST_TOPICS: usize = 16;
        if self.settings.max_topics > MOST_TOPICS {
            return false;
        }
        let key = TopicKey {
            channel: TestEvent::PATH,
            topic: Topic::new(topic).expect("a valid topic"),
        };
        let Ok(before) = self.broker.log(&key).map(|log| log.epoch()) else {
            return false;
        };
        let hub = self.node().await;
        for n in 0..self.settings.max_topics {
            if hub
                .publish(&format!("evict-{n}-{topic}"), note(n))
                .await
                .is_err()
            {
                return false;
            }
        }
        // Evicted: the topic is back, empty, in another epoch.
        self.broker.log(&key).is_ok_and(|log| log.epoch() != before)
    }
}

/// The Redis broker: each node is its own `RedisBroker` on the same Redis
/// and key prefix (a prefix of the test's own, whose keys go when dropped).
struct Redis {
    url: String,
    prefix: String,
    settings: Settings,
    /// A `redis-server` of the deployment's own (`Settings::own_store`).
    own: Option<tokio::sync::Mutex<OwnRedis>>,
}

impl Deployment for Redis {
    fn name() -> &'static str {
        "redis"
    }

    const EVICTION_LOSES_HISTORY: bool = false;
    const PUBLISH_NEEDS_ROOM: bool = false;

    async fn start(test: &str, settings: Settings) -> Option<Self> {
        let (url, own) = if settings.own_store {
            let own = OwnRedis::start(test).await?;
            (own.url(), Some(tokio::sync::Mutex::new(own)))
        } else {
            (shared_redis(test).await?, None)
        };
        Some(Self {
            url,
            prefix: unique_prefix(),
            settings,
            own,
        })
    }

    async fn node(&self) -> Hub<TestEvent> {
        redis_node(RedisConfig::new(&self.url), &self.prefix, self.settings).await
    }

    /// Deletes the topic's keys (`DEL`), as a Redis that lost its data.
    async fn lose_history(&self, topic: &str) -> bool {
        let pattern = format!("{}:{{{}/{topic}}}:*", self.prefix, TestEvent::PATH);
        let delete = async {
            let mut conn = admin(&self.url).await;
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut conn)
                .await
                .expect("KEYS");
            if keys.is_empty() {
                return 0;
            }
            ::redis::cmd("DEL")
                .arg(&keys)
                .query_async::<u64>(&mut conn)
                .await
                .expect("DEL")
        };
        let deleted = tokio::time::timeout(PATIENCE, delete)
            .await
            .expect("redis deletes the topic's keys in time");
        deleted > 0
    }

    async fn stop_store(&self) -> bool {
        match &self.own {
            Some(own) => {
                own.lock().await.kill();
                true
            }
            None => false,
        }
    }

    async fn restart_store(&self) -> bool {
        match &self.own {
            Some(own) => {
                own.lock().await.restart().await;
                true
            }
            None => false,
        }
    }
}

/// A hub over a `RedisBroker` of `config`, tuned for tests: quick epoch
/// checks and reconnections, short command timeouts.
async fn redis_node(config: RedisConfig, prefix: &str, settings: Settings) -> Hub<TestEvent> {
    let config = config
        .key_prefix(prefix)
        .max_topics(settings.max_topics)
        .history_len(settings.history_len)
        .epoch_check_interval(Duration::from_millis(150))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .command_timeout(Duration::from_secs(1));
    let broker = RedisBroker::connect(config)
        .await
        .expect("connect to redis");
    Hub::with_broker(Arc::new(broker), settings.hub_config())
}

impl Drop for Redis {
    /// Deletes the deployment's keys (best effort, also when a check
    /// failed). The nodes are gone by now: their readers would otherwise
    /// give deleted topics a new epoch.
    fn drop(&mut self) {
        if self.own.is_some() {
            return; // Its server stops, its data with it.
        }
        let Ok(client) = ::redis::Client::open(self.url.as_str()) else {
            return;
        };
        let wait = Duration::from_secs(2);
        let Ok(mut conn) = client.get_connection_with_timeout(wait) else {
            return;
        };
        let wait = Some(wait);
        if conn.set_read_timeout(wait).is_err() || conn.set_write_timeout(wait).is_err() {
            return;
        }
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<u64, _> = ::redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// The Redis broker on a Redis Cluster (3 primaries, 3 replicas) of the
/// tests' own: each node is its own `RedisBroker` given every node of the
/// cluster as seeds, all on one key prefix of the test's own.
///
/// Checks that need no store of their own share one cluster while they
/// overlap in time (their prefixes keep them apart), as the Redis
/// deployment shares one Redis; it stops with the last of them, and its
/// keys with it. A check with `Settings::own_store` gets a cluster of its
/// own, so that it can kill it.
struct Cluster {
    cluster: Arc<OwnCluster>,
    prefix: String,
    settings: Settings,
}

/// The cluster the checks running now share, started if none runs.
async fn shared_cluster(test: &str) -> Option<Arc<OwnCluster>> {
    static SHARED: tokio::sync::Mutex<Weak<OwnCluster>> =
        tokio::sync::Mutex::const_new(Weak::new());
    let mut shared = SHARED.lock().await;
    if let Some(cluster) = shared.upgrade() {
        return Some(cluster);
    }
    let cluster = Arc::new(OwnCluster::start(test).await?);
    *shared = Arc::downgrade(&cluster);
    Some(cluster)
}

impl Deployment for Cluster {
    fn name() -> &'static str {
        "redis cluster"
    }

    const EVICTION_LOSES_HISTORY: bool = false;
    const PUBLISH_NEEDS_ROOM: bool = false;

    async fn start(test: &str, settings: Settings) -> Option<Self> {
        let cluster = if settings.own_store {
            Arc::new(OwnCluster::start(test).await?)
        } else {
            shared_cluster(test).await?
        };
        Some(Self {
            cluster,
            prefix: unique_prefix(),
            settings,
        })
    }

    async fn node(&self) -> Hub<TestEvent> {
        let config = RedisConfig::cluster(self.cluster.urls());
        redis_node(config, &self.prefix, self.settings).await
    }

    /// Deletes the topic's keys on the primary that owns their slot.
    async fn lose_history(&self, topic: &str) -> bool {
        let pattern = format!("{}:{{{}/{topic}}}:*", self.prefix, TestEvent::PATH);
        let deleted = tokio::time::timeout(PATIENCE, self.cluster.delete_keys(&pattern))
            .await
            .expect("the cluster deletes the topic's keys in time");
        deleted > 0
    }

    /// Kills every process of the cluster.
    async fn stop_store(&self) -> bool {
        if !self.settings.own_store {
            return false;
        }
        self.cluster.kill_all();
        true
    }

    /// Starts every process again, each with its `nodes.conf`: the same
    /// cluster, empty.
    async fn restart_store(&self) -> bool {
        if !self.settings.own_store {
            return false;
        }
        self.cluster.restart_all().await;
        true
    }
}

// ---------------------------------------------------------------------------
// What the checks read
// ---------------------------------------------------------------------------

/// One delivery, comparable: an event (cursor, wire name, decoded payload)
/// or a gap.
#[derive(Debug, PartialEq)]
enum Seen {
    Event(Cursor, &'static str, TestEvent),
    Gap(Gap),
}

fn seen(delivery: &Delivery) -> Seen {
    match delivery {
        Delivery::Event(event) => Seen::Event(
            event.cursor(),
            event.name(),
            serde_json::from_slice(event.data()).expect("the payload decodes into the channel"),
        ),
        Delivery::Gap(gap) => Seen::Gap(*gap),
    }
}

/// The event `note(n)` at `cursor`, as a subscriber sees it.
fn event(cursor: Cursor, n: usize) -> Seen {
    Seen::Event(cursor, "note", note(n))
}

/// The events `note(first)`, `note(first + 1)`… at `cursors`.
fn events(cursors: &[Cursor], first: usize) -> Vec<Seen> {
    cursors
        .iter()
        .enumerate()
        .map(|(i, cursor)| event(*cursor, first + i))
        .collect()
}

fn gap(from: Cursor, to: Cursor, missed: Option<u64>) -> Seen {
    Seen::Gap(Gap { from, to, missed })
}

/// Waits (bounded) for exactly `n` items, as they arrive.
async fn take(subscription: &mut Subscription, n: usize) -> Vec<Seen> {
    let mut out = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while out.len() < n {
        let want = n - out.len();
        let waited = tokio::time::timeout_at(deadline, subscription.next_batch(&mut out, want));
        if waited.await.is_err() {
            let got: Vec<Seen> = out.iter().map(seen).collect();
            panic!(
                "waited {PATIENCE:?} for {n} items, got {}: {got:?}",
                got.len()
            );
        }
    }
    out.iter().map(seen).collect()
}

/// Asserts that nothing is available now.
fn nothing_more(subscription: &mut Subscription, what: &str) {
    let mut out = Vec::new();
    subscription.fill(&mut out, 64);
    let got: Vec<Seen> = out.iter().map(seen).collect();
    assert!(got.is_empty(), "{what}: nothing more expected, got {got:?}");
}

async fn subscribe(hub: &Hub<TestEvent>, topic: &str, start: Start) -> Subscription {
    hub.subscribe(topic, start, None)
        .await
        .unwrap_or_else(|error| panic!("subscribe to {topic} at {start:?}: {error}"))
}

async fn publish(hub: &Hub<TestEvent>, topic: &str, n: usize) -> Cursor {
    hub.publish(topic, note(n))
        .await
        .unwrap_or_else(|error| panic!("publish note {n} to {topic}: {error}"))
}

/// Publishes `note(n)` for every `n` of `range`, returning the cursors.
async fn publish_range(
    hub: &Hub<TestEvent>,
    topic: &str,
    range: std::ops::Range<usize>,
) -> Vec<Cursor> {
    let mut cursors = Vec::new();
    for n in range {
        cursors.push(publish(hub, topic, n).await);
    }
    cursors
}

/// Publishes until the broker accepts it again (bounded), returning the cursor.
async fn publish_when_back(hub: &Hub<TestEvent>, topic: &str, n: usize) -> Cursor {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match hub.publish(topic, note(n)).await {
            Ok(cursor) => return cursor,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("the broker did not come back: {error}"),
        }
    }
}

/// Asserts consecutive sequence numbers from `first`, all in one epoch.
fn assert_consecutive(cursors: &[Cursor], first: u64, what: &str) {
    let epoch = cursors[0].epoch();
    let expected: Vec<Cursor> = (first..)
        .take(cursors.len())
        .map(|seq| Cursor::new(epoch, seq))
        .collect();
    assert_eq!(cursors, expected, "{what}: one epoch, seq +1 each");
}

/// A client resuming `room` after `after` on each node gets `expected`
/// (its resume point announced first), then nothing more.
async fn resume_on_every_node(
    hubs: &[&Hub<TestEvent>],
    after: Cursor,
    expected: &[Seen],
    name: &str,
) {
    for (node, hub) in hubs.iter().enumerate() {
        let mut resumed = subscribe(hub, "room", Start::After(after)).await;
        assert_eq!(resumed.resume_point(), after, "{name}: node {node}");
        assert_eq!(
            take(&mut resumed, expected.len()).await,
            expected,
            "{name}: node {node}"
        );
        nothing_more(&mut resumed, name);
    }
}

fn capacity_refusal(error: &BrokerError, what: &str) {
    assert_eq!(error.kind(), BrokerErrorKind::Capacity, "{what}: {error}");
    assert!(error.is_transient(), "{what}: {error}");
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

/// 1. Events published, then read from the start: in order, cursors in one
///    epoch from seq 1, +1 each; a subscriber from now gets only what follows.
async fn publish_then_subscribe<D: Deployment>() {
    let name = D::name();
    let Some(deployment) = D::start("publish_then_subscribe", Settings::history(16)).await else {
        return;
    };
    let a = deployment.node().await;
    let cursors = publish_range(&a, "room", 0..5).await;
    assert_consecutive(&cursors, 1, name);

    let start = Cursor::new(cursors[0].epoch(), 0);
    let mut replay = subscribe(&a, "room", Start::After(start)).await;
    assert_eq!(take(&mut replay, 5).await, events(&cursors, 0), "{name}");
    nothing_more(&mut replay, name);

    let mut live = subscribe(&a, "room", Start::Now).await;
    nothing_more(&mut live, name);
    let next = publish(&a, "room", 5).await;
    assert_eq!(next, Cursor::new(cursors[0].epoch(), 6), "{name}");
    assert_eq!(take(&mut live, 1).await, [event(next, 5)], "{name}");
    assert_eq!(take(&mut replay, 1).await, [event(next, 5)], "{name}");
}

/// 2. Events published on node A (then B) reach subscribers on A and B,
///    started before, with the same cursors and payloads, in order.
async fn cursors_agree_on_every_node<D: Deployment>() {
    let name = D::name();
    let Some(deployment) = D::start("cursors_agree_on_every_node", Settings::history(32)).await
    else {
        return;
    };
    let a = deployment.node().await;
    let b = deployment.node().await;
    let mut on_a = subscribe(&a, "room", Start::Now).await;
    let mut on_b = subscribe(&b, "room", Start::Now).await;
    assert_eq!(on_a.position(), on_b.position(), "{name}: the same start");

    let mut cursors = publish_range(&a, "room", 0..8).await;
    cursors.extend(publish_range(&b, "room", 8..10).await);
    assert_consecutive(&cursors, 1, name);
    let expected = events(&cursors, 0);
    assert_eq!(take(&mut on_a, 10).await, expected, "{name}: node A");
    assert_eq!(take(&mut on_b, 10).await, expected, "{name}: node B");
    nothing_more(&mut on_a, name);
    nothing_more(&mut on_b, name);
}

/// 3. A client reads 3 events on node A, then resumes on node B (which
///    never read the topic) with the last cursor: it gets exactly the rest,
///    then what follows.
async fn resume_on_another_node<D: Deployment>() {
    let name = D::name();
    let Some(deployment) = D::start("resume_on_another_node", Settings::history(32)).await else {
        return;
    };
    let a = deployment.node().await;
    let b = deployment.node().await;
    let mut first = subscribe(&a, "room", Start::Now).await;
    let cursors = publish_range(&a, "room", 0..6).await;
    let read = take(&mut first, 3).await;
    assert_eq!(read, events(&cursors[..3], 0), "{name}");
    drop(first);

    let mut again = subscribe(&b, "room", Start::After(cursors[2])).await;
    assert_eq!(again.resume_point(), cursors[2], "{name}");
    assert_eq!(
        take(&mut again, 3).await,
        events(&cursors[3..], 3),
        "{name}"
    );
    nothing_more(&mut again, name);
    let later = publish_range(&b, "room", 6..8).await;
    assert_eq!(take(&mut again, 2).await, events(&later, 6), "{name}");
}

/// 4. A client resuming from before the retained history gets a gap that
///    counts exactly what it missed, then every retained event, on any node.
async fn trimmed_history_is_a_counted_gap<D: Deployment>() {
    const HISTORY: usize = 4;
    let name = D::name();
    let Some(deployment) = D::start(
        "trimmed_history_is_a_counted_gap",
        Settings::history(HISTORY),
    )
    .await
    else {
        return;
    };
    let a = deployment.node().await;
    let b = deployment.node().await;
    let cursors = publish_range(&a, "room", 0..10).await;
    // Retained: the last 4 (seq 7..=10); missed after seq 1: 2..=6.
    let mut expected = vec![gap(cursors[0], cursors[5], Some(5))];
    expected.extend(events(&cursors[6..], 6));
    for (node, hub) in [("A", &a), ("B", &b)] {
        let mut resumed = subscribe(hub, "room", Start::After(cursors[0])).await;
        assert_eq!(resumed.resume_point(), cursors[0], "{name}: node {node}");
        assert_eq!(take(&mut resumed, 5).await, expected, "{name}: node {node}");
        nothing_more(&mut resumed, name);
    }
}

/// 5a. The broker loses a topic's history (nobody reads it): the next
///     event starts a new epoch at seq 1, and a client resuming with a
///     cursor of the old epoch gets a gap of unknown size into the new one,
///     then the new events, on every node.
async fn lost_history_is_a_gap_on_resume<D: Deployment>() {
    let name = D::name();
    // Few topics: the memory broker loses a topic by evicting it.
    let settings = Settings::history(16).max_topics(2);
    let Some(deployment) = D::start("lost_history_is_a_gap_on_resume", settings).await else {
        return;
    };
    let a = deployment.node().await;
    let b = deployment.node().await;
    let old = publish_range(&a, "room", 0..3).await;
    assert!(
        deployment.lose_history("room").await,
        "{name}: this deployment cannot lose a topic's history"
    );
    let new = publish(&a, "room", 3).await;
    assert_ne!(
        new.epoch(),
        old[0].epoch(),
        "{name}: a lost history gets a new epoch"
    );
    assert_eq!(new.seq(), 1, "{name}: the new epoch starts over");

    let c = deployment.node().await;
    let expected = [
        gap(old[1], Cursor::new(new.epoch(), 0), None),
        event(new, 3),
    ];
    resume_on_every_node(&[&a, &b, &c], old[1], &expected, name).await;
}

/// 5b. The broker loses the history of a topic being read: live
///     subscribers on both nodes get a gap of unknown size into the new
///     epoch, then the new events; a client resuming with an old cursor
///     gets a gap too.
async fn lost_history_hands_live_subscribers_over<D: Deployment>() {
    let name = D::name();
    let settings = Settings::history(16);
    let Some(deployment) = D::start("lost_history_hands_live_subscribers_over", settings).await
    else {
        return;
    };
    let a = deployment.node().await;
    let b = deployment.node().await;
    let mut on_a = subscribe(&a, "room", Start::Now).await;
    let mut on_b = subscribe(&b, "room", Start::Now).await;
    let old = publish_range(&a, "room", 0..3).await;
    assert_eq!(take(&mut on_a, 3).await, events(&old, 0), "{name}: node A");
    assert_eq!(take(&mut on_b, 3).await, events(&old, 0), "{name}: node B");

    assert!(
        deployment.lose_history("room").await,
        "{name}: this deployment cannot lose the history of a topic being read"
    );
    let new = publish(&a, "room", 3).await;
    assert_ne!(
        new.epoch(),
        old[0].epoch(),
        "{name}: a lost history gets a new epoch"
    );
    assert_eq!(new.seq(), 1, "{name}: the new epoch starts over");
    let start = Cursor::new(new.epoch(), 0);
    let handed_over = [gap(old[2], start, None), event(new, 3)];
    assert_eq!(take(&mut on_a, 2).await, handed_over, "{name}: node A");
    assert_eq!(take(&mut on_b, 2).await, handed_over, "{name}: node B");

    let next = publish(&b, "room", 4).await;
    assert_eq!(next, Cursor::new(new.epoch(), 2), "{name}");
    assert_eq!(take(&mut on_a, 1).await, [event(next, 4)], "{name}: node A");
    assert_eq!(take(&mut on_b, 1).await, [event(next, 4)], "{name}: node B");

    let c = deployment.node().await;
    let expected = [gap(old[1], start, None), event(new, 3), event(next, 4)];
    resume_on_every_node(&[&a, &b, &c], old[1], &expected, name).await;
}

/// 6. A cursor of the topic's epoch beyond its newest event is refused
///    (`StartError::Ahead`) on every node; the newest cursor itself is not.
async fn cursor_ahead_is_refused<D: Deployment>() {
    let name = D::name();
    let Some(deployment) = D::start("cursor_ahead_is_refused", Settings::history(16)).await else {
        return;
    };
    let a = deployment.node().await;
    let b = deployment.node().await;
    let cursors = publish_range(&a, "room", 0..3).await;
    let newest = cursors[2];
    for (node, hub) in [("A", &a), ("B", &b)] {
        for ahead in [1, 1000] {
            let requested = Cursor::new(newest.epoch(), newest.seq() + ahead);
            match hub.subscribe("room", Start::After(requested), None).await {
                Err(SubscribeError::Start(StartError::Ahead {
                    requested: r,
                    newest: n,
                })) => {
                    assert_eq!((r, n), (requested, newest), "{name}: node {node}");
                }
                other => panic!("{name}: node {node}: {requested} must be refused: {other:?}"),
            }
        }
        let mut at_newest = subscribe(hub, "room", Start::After(newest)).await;
        nothing_more(&mut at_newest, name);
    }
    let next = publish(&b, "room", 3).await;
    let mut at_newest = subscribe(&a, "room", Start::After(newest)).await;
    assert_eq!(take(&mut at_newest, 1).await, [event(next, 3)], "{name}");
}

/// 7. The store goes away: publishing fails as `Unavailable`; it comes back
///    empty (no persistence): live subscribers on both nodes get a gap into
///    the new epoch, then the new events.
async fn outage_then_catch_up<D: Deployment>() {
    let name = D::name();
    let settings = Settings::history(16).own_store();
    let Some(deployment) = D::start("outage_then_catch_up", settings).await else {
        return;
    };
    let a = deployment.node().await;
    let b = deployment.node().await;
    let mut on_a = subscribe(&a, "live", Start::Now).await;
    let mut on_b = subscribe(&b, "live", Start::Now).await;
    let old = publish(&a, "live", 0).await;
    assert_eq!(take(&mut on_a, 1).await, [event(old, 0)], "{name}: node A");
    assert_eq!(take(&mut on_b, 1).await, [event(old, 0)], "{name}: node B");

    assert!(
        deployment.stop_store().await,
        "{name}: this deployment has no store of its own to stop"
    );
    for (node, hub) in [("A", &a), ("B", &b)] {
        match hub.publish("live", note(99)).await {
            Err(PublishError::Broker(error)) => {
                assert_eq!(
                    error.kind(),
                    BrokerErrorKind::Unavailable,
                    "{name}: node {node}: {error}"
                );
                assert!(error.is_transient(), "{name}: node {node}: {error}");
            }
            other => panic!("{name}: node {node}: publishing without the store: {other:?}"),
        }
    }
    nothing_more(&mut on_a, name);
    nothing_more(&mut on_b, name);

    assert!(
        deployment.restart_store().await,
        "{name}: restart the store"
    );
    let new = publish_when_back(&a, "live", 1).await;
    assert_ne!(new.epoch(), old.epoch(), "{name}: the store lost its data");
    assert_eq!(new.seq(), 1, "{name}: the new epoch starts over");
    let handed_over = [gap(old, Cursor::new(new.epoch(), 0), None), event(new, 1)];
    assert_eq!(take(&mut on_a, 2).await, handed_over, "{name}: node A");
    assert_eq!(take(&mut on_b, 2).await, handed_over, "{name}: node B");
    let next = publish(&b, "live", 2).await;
    assert_eq!(next, Cursor::new(new.epoch(), 2), "{name}");
    assert_eq!(take(&mut on_a, 1).await, [event(next, 2)], "{name}: node A");
    assert_eq!(take(&mut on_b, 1).await, [event(next, 2)], "{name}: node B");
}

/// 8. With `max_topics` = 2 and both topics read, a third topic is refused
///    (subscribe, and publish where it needs room) as `Capacity`; once one is idle, it makes
///    room. The evicted topic comes back in a new epoch (a gap) where
///    eviction loses history, or continues where the history is kept.
async fn topic_limits<D: Deployment>() {
    let name = D::name();
    let settings = Settings::history(16).max_topics(2);
    let Some(deployment) = D::start("topic_limits", settings).await else {
        return;
    };
    let a = deployment.node().await;
    let mut one = subscribe(&a, "one", Start::Now).await;
    let mut two = subscribe(&a, "two", Start::Now).await;
    let last_two = publish(&a, "two", 0).await;
    assert_eq!(take(&mut two, 1).await, [event(last_two, 0)], "{name}");

    if D::PUBLISH_NEEDS_ROOM {
        match a.publish("three", note(1)).await {
            Err(PublishError::Broker(error)) => capacity_refusal(&error, name),
            other => panic!("{name}: publishing to a third topic while two are read: {other:?}"),
        }
    }
    match a.subscribe("three", Start::Now, None).await {
        Err(SubscribeError::Broker(error)) => capacity_refusal(&error, name),
        other => panic!("{name}: subscribing to a third topic while two are read: {other:?}"),
    }
    // The topics alive still work.
    let on_one = publish(&a, "one", 2).await;
    assert_eq!(take(&mut one, 1).await, [event(on_one, 2)], "{name}");

    // `two` is idle now: it makes room for `three`.
    drop(two);
    let three = publish(&a, "three", 3).await;
    let mut reading = subscribe(&a, "three", Start::After(Cursor::new(three.epoch(), 0))).await;
    assert_eq!(take(&mut reading, 1).await, [event(three, 3)], "{name}");
    drop(reading);

    // `two` comes back (in place of the now idle `three`), by a publish: a
    // read may not take the place of a topic with events.
    let next = publish(&a, "two", 4).await;
    let mut two = subscribe(&a, "two", Start::After(last_two)).await;
    if D::EVICTION_LOSES_HISTORY {
        assert_ne!(
            next.epoch(),
            last_two.epoch(),
            "{name}: evicted with its history"
        );
        assert_eq!(
            take(&mut two, 2).await,
            [
                gap(last_two, Cursor::new(next.epoch(), 0), None),
                event(next, 4)
            ],
            "{name}"
        );
    } else {
        assert_eq!(
            next,
            Cursor::new(last_two.epoch(), 2),
            "{name}: history kept"
        );
        assert_eq!(take(&mut two, 1).await, [event(next, 4)], "{name}");
    }
    nothing_more(&mut two, name);
    nothing_more(&mut one, name);
}

// ---------------------------------------------------------------------------
// The tests: every check on every deployment that supports it
// ---------------------------------------------------------------------------

/// Bound on a whole check, on top of the bound of each of its waits.
const CHECK_PATIENCE: Duration = Duration::from_secs(90);

/// `generate!(module, Deployment, [check, …])`: one test `module::check` per
/// check, running `check::<Deployment>()`.
macro_rules! generate {
    ($module:ident, $deployment:ty, [$($check:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let check = super::$check::<$deployment>();
                    if tokio::time::timeout(CHECK_PATIENCE, check).await.is_err() {
                        panic!("{} took over {CHECK_PATIENCE:?}", stringify!($check));
                    }
                }
            )*
        }
    };
}

// Not generated for memory:
// - `lost_history_hands_live_subscribers_over`: the memory broker loses a
//   topic only by evicting it, and never evicts a topic being read;
// - `outage_then_catch_up`: there is no store to stop.
generate!(
    memory,
    Memory,
    [
        publish_then_subscribe,
        cursors_agree_on_every_node,
        resume_on_another_node,
        trimmed_history_is_a_counted_gap,
        lost_history_is_a_gap_on_resume,
        cursor_ahead_is_refused,
        topic_limits,
    ]
);

generate!(
    redis,
    Redis,
    [
        publish_then_subscribe,
        cursors_agree_on_every_node,
        resume_on_another_node,
        trimmed_history_is_a_counted_gap,
        lost_history_is_a_gap_on_resume,
        lost_history_hands_live_subscribers_over,
        cursor_ahead_is_refused,
        outage_then_catch_up,
        topic_limits,
    ]
);

generate!(
    redis_cluster,
    Cluster,
    [
        publish_then_subscribe,
        cursors_agree_on_every_node,
        resume_on_another_node,
        trimmed_history_is_a_counted_gap,
        lost_history_is_a_gap_on_resume,
        lost_history_hands_live_subscribers_over,
        cursor_ahead_is_refused,
        outage_then_catch_up,
        topic_limits,
    ]
);

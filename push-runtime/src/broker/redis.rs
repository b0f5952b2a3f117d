//! The Redis broker: many nodes, one history, no sticky sessions.
//!
//! Each topic is a Redis Stream of bounded length plus a small hash holding
//! its epoch and its last sequence number. A Lua script assigns cursors
//! atomically, so every node sees the same cursors and any node can resume
//! any client.
//!
//! Each node mirrors the tail of the streams its own clients read into local
//! [`TopicLog`]s, fed by one reader task (one `XREAD BLOCK` over all of them,
//! on one dedicated connection), so subscriptions stay local reads of a
//! shared ring, exactly as with the [`MemoryBroker`](super::MemoryBroker).
//!
//! The epoch lives in Redis next to the data, with the `run_id` of the Redis
//! process that answers for it: a Redis that lost its data, or whose data
//! outlived a restart or a failover (and so may have gone back in time),
//! hands out a new epoch, and clients get a gap instead of reused cursors.
//!
//! The server is one address ([`RedisConfig::new`]), the primary Redis
//! Sentinel names ([`RedisConfig::sentinel`]), asked again for every
//! connection, so the broker follows a failover, or a Redis Cluster
//! ([`RedisConfig::cluster`]; see the `cluster` module), whose shards each
//! hold some topics.

mod cluster;
mod slots;

use super::{
    Broker, BrokerError, BrokerErrorKind, BrokerFuture, BrokerHealth, BrokerSubscribeError,
    TopicKey,
};
use crate::cursor::Cursor;
use crate::history::{
    AppendAt, HistoryBudget, Outgoing, Start, Subscription, TopicLog, fresh_epoch,
};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The start of every script that touches a topic: `vouch(meta, events,
/// fresh)` makes sure the topic has an epoch this Redis process answers for.
/// A missing topic is created with the epoch `fresh` (returns true). A
/// topic whose data outlived a restart or a failover of Redis (another
/// process wrote it: its `run` is not this process's `run_id`) moves to the
/// epoch `fresh`, its stream emptied: Redis may have gone back in time (an
/// older snapshot, a replica that lagged), and only a new epoch guarantees
/// that no cursor names two events. Subscribers get a gap.
///
/// `run` is that process's `run_id`, passed by the node (the argument named
/// in the macro's call): the node reads it with `INFO server` on the very
/// connection the script runs on, once, when it opens it ([`Link`]). A
/// connection ends with the process at its other end, so no script runs
/// with another process's `run_id`; and Redis does not build its `INFO`
/// text on every publish.
macro_rules! vouch_lua {
    ($run:literal) => {
        concat!(
            "local run = ",
            $run,
            r"
if not string.match(run, '^%x+$') then return redis.error_reply('ERR no run_id given') end
local function vouch(meta, events, fresh)
  if redis.call('HSETNX', meta, 'epoch', fresh) == 1 then
    redis.call('DEL', events)
    redis.call('HSET', meta, 'run', run)
    return true
  end
  if redis.call('HGET', meta, 'run') ~= run then
    redis.call('DEL', events)
    redis.call('HSET', meta, 'epoch', fresh, 'seq', 0, 'run', run)
  end
  return false
end
"
        )
    };
}

/// Assigns the next cursor and appends the event (see `vouch_lua!` for the
/// epoch). A topic with an event is kept for good (`PERSIST`: a read may
/// have created its epoch with an expiry).
///
/// A node that mirrors the topic passes how far it knows the topic went
/// (ARGV[7] in epoch ARGV[6]): a lower sequence number in that epoch means
/// Redis went back in time without a restart this broker can see, and the
/// topic starts a new epoch before the event is appended. ARGV[8]: the
/// `run_id` of the Redis process (see `vouch_lua!`).
///
/// On a cluster, KEYS[3] is the topic's live channel: the event is
/// announced there (`SPUBLISH <epoch> <seq> <kind> <name> <data>`) in the
/// same atomic step, for the nodes' readers (see the `cluster` module).
const PUBLISH_LUA: &str = concat!(
    vouch_lua!("ARGV[8]"),
    r"
vouch(KEYS[1], KEYS[2], ARGV[1])
redis.call('PERSIST', KEYS[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch == ARGV[6] and (tonumber(redis.call('HGET', KEYS[1], 'seq')) or 0) < tonumber(ARGV[7]) then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], string.format('%d-1', seq),
  'e', epoch, 'n', ARGV[3], 'k', ARGV[4], 'd', ARGV[5])
if KEYS[3] then
  redis.call('SPUBLISH', KEYS[3], string.format('%s %d %s %s ', epoch, seq, ARGV[4], ARGV[3]) .. ARGV[5])
end
return {epoch, seq}
"
);

/// Returns the topic's epoch, last sequence number and newest events (newest
/// first), only those after ARGV[4] when the epoch is still ARGV[3]. An
/// epoch created by a read expires after ARGV[5] ms unless an event is
/// published (or a node that mirrors the topic renews it): reading random
/// topic names leaves nothing durable in Redis. ARGV[6]: the `run_id`.
const LOAD_LUA: &str = concat!(
    vouch_lua!("ARGV[6]"),
    r"
if vouch(KEYS[1], KEYS[2], ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq')) or 0
local after = 0
if epoch == ARGV[3] then after = tonumber(ARGV[4]) end
local entries = redis.call('XREVRANGE', KEYS[2], '+', string.format('%d-0', after + 1), 'COUNT', ARGV[2])
return {epoch, seq, entries}
"
);

/// The epochs and sequence numbers of the topics a node mirrors (KEYS:
/// each one's meta hash, then its stream), each vouched for (a topic that
/// outlived a restart of Redis moves to the epoch ARGV[2]; a missing one is
/// left for the node to load); and a new expiry (ARGV[1] ms) for those only
/// read so far (they have one), so they stay while a node mirrors them.
/// ARGV[3]: the `run_id`.
const CHECK_LUA: &str = concat!(
    vouch_lua!("ARGV[3]"),
    r"
local topics = {}
for i = 1, #KEYS, 2 do
  local meta = KEYS[i]
  if redis.call('EXISTS', meta) == 1 then vouch(meta, KEYS[i + 1], ARGV[2]) end
  topics[#topics + 1] = redis.call('HMGET', meta, 'epoch', 'seq')
  if redis.call('PTTL', meta) > 0 then redis.call('PEXPIRE', meta, ARGV[1]) end
end
return topics
"
);

/// Starts a new epoch (ARGV[3]) for a topic whose sequence number went back
/// below ARGV[2] in epoch ARGV[1] (see [`PUBLISH_LUA`]); returns 1 if it did.
const REBASE_LUA: &str = r"
local now = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if now[1] == ARGV[1] and (tonumber(now[2]) or 0) < tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[3], 'seq', 0)
  return 1
end
return 0
";

/// Most entries one `XREAD` returns per stream.
const READ_BATCH: usize = 1024;
/// Default for [`RedisConfig::max_event_size`]: the hub's default limit.
const DEFAULT_MAX_EVENT_SIZE: usize = crate::history::DEFAULT_MAX_EVENT_SIZE;
/// Most distinct event names accepted from Redis (they are interned for good).
const MAX_NAMES: usize = 4096;

/// Settings of a [`RedisBroker`], built from the server's URL.
///
/// ```
/// use push_runtime::broker::RedisConfig;
/// use std::time::Duration;
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379")
///     .history_len(1000)
///     .key_prefix("myapp:push")
///     .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(5));
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct RedisConfig {
    endpoint: Endpoint,
    history_len: usize,
    key_prefix: String,
    backoff_min: Duration,
    backoff_max: Duration,
    command_timeout: Duration,
    epoch_check: Duration,
    mirror_idle: Duration,
    unused_topic_ttl: Duration,
    max_topics: usize,
    max_event_size: usize,
    max_history_bytes: usize,
    max_total_history_bytes: usize,
}

impl RedisConfig {
    /// Defaults for the Redis server at `url` (e.g. `redis://127.0.0.1:6379`).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_endpoint(Endpoint::Server(url.into()))
    }

    /// Defaults for the primary that Redis Sentinel names `master_name`,
    /// asked of the sentinels at `sentinels` (URLs such as
    /// `redis://127.0.0.1:26379`, tried in order until one answers).
    ///
    /// Every connection the broker opens (its commands' and its reader's)
    /// first asks a sentinel for the primary's address
    /// (`SENTINEL get-master-addr-by-name`), then checks with `ROLE` that
    /// the server there is a primary; after a failure it asks again, so the
    /// broker follows a failover. The primary is reached over plain TCP,
    /// database 0, without credentials; a sentinel's URL may carry its own
    /// password (`redis://:secret@10.0.0.1:26379`).
    ///
    /// A failover is a restart for the epoch rules: the promoted replica has
    /// another `run_id`, so each topic moves to a new epoch when first
    /// touched after it, and subscribers get a gap. Events the old primary
    /// acknowledged but had not replicated are lost (replication is
    /// asynchronous); the gap is how clients learn it.
    ///
    /// ```
    /// use push_runtime::broker::RedisConfig;
    ///
    /// let config = RedisConfig::sentinel(
    ///     "mymaster",
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"],
    /// );
    /// # let _ = config;
    /// ```
    pub fn sentinel(
        master_name: impl Into<String>,
        sentinels: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self::with_endpoint(Endpoint::Sentinel {
            master: master_name.into(),
            sentinels: sentinels.into_iter().map(Into::into).collect(),
        })
    }

    /// Defaults for a Redis Cluster (Redis 7 or later), reached through any
    /// of its nodes at `nodes` (URLs such as `redis://10.0.0.1:7000`, tried
    /// in order until one answers with the slot map; their credentials, if
    /// any, are used for every node of the cluster).
    ///
    /// Topics spread over the cluster's shards: both keys of a topic share
    /// a hash tag, so each topic lives in one slot and is written
    /// atomically. A node keeps one command connection and one reader per
    /// primary, whatever the number of topics and clients; `MOVED`, `ASK`
    /// and `TRYAGAIN` are followed, and the slot map is read again after
    /// each sign of change and at every epoch check.
    ///
    /// The epoch rules are those of one server: a topic whose keys were
    /// written by another Redis process moves to a new epoch, and its
    /// subscribers get a gap. That happens after a shard's failover (the
    /// promoted replica may lack what the old primary acknowledged) and
    /// after a slot migrates to another primary (its topics start again in
    /// a new epoch, their history dropped). Publishing to a shard that has
    /// lost its primary fails ([`BrokerErrorKind::Unavailable`]: `503`)
    /// until the cluster has promoted a replica.
    ///
    /// The key prefix must not contain `{` or `}` (they would make every
    /// topic share one slot): connecting fails with
    /// [`RedisBrokerError::Config`].
    ///
    /// ```
    /// use push_runtime::broker::RedisConfig;
    ///
    /// let config = RedisConfig::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
    /// # let _ = config;
    /// ```
    pub fn cluster(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self::with_endpoint(Endpoint::Cluster(
            nodes.into_iter().map(Into::into).collect(),
        ))
    }

    fn with_endpoint(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            history_len: crate::DEFAULT_HISTORY_LEN,
            key_prefix: "push".to_owned(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            epoch_check: Duration::from_secs(1),
            mirror_idle: Duration::from_secs(60),
            unused_topic_ttl: Duration::from_secs(60),
            max_topics: crate::DEFAULT_MAX_TOPICS,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            max_history_bytes: crate::history::DEFAULT_MAX_HISTORY_BYTES,
            max_total_history_bytes: crate::history::DEFAULT_MAX_TOTAL_HISTORY_BYTES,
        }
    }

    /// Events kept per topic, in Redis and in each node's mirror (default
    /// [`DEFAULT_HISTORY_LEN`](crate::DEFAULT_HISTORY_LEN), at least 1).
    pub fn history_len(mut self, len: usize) -> Self {
        self.history_len = len.max(1);
        self
    }

    /// The prefix of every key the broker writes (default `push`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The first and the longest wait between reconnection attempts
    /// (defaults 100 ms and 5 s); the wait doubles after each failure.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// How long a publish or a subscription's catch-up waits for Redis
    /// before failing (default 2 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How often each node checks that Redis still holds the epochs of the
    /// topics it mirrors, to notice a Redis that lost its data (default 1 s).
    /// Its reader's blocking reads last at most this long.
    pub fn epoch_check_interval(mut self, interval: Duration) -> Self {
        self.epoch_check = interval;
        self
    }

    /// How long a mirror without subscribers is kept before the node stops
    /// following its topic (default 60 s).
    pub fn mirror_idle(mut self, idle: Duration) -> Self {
        self.mirror_idle = idle;
        self
    }

    /// How long Redis keeps a topic that was only read, never published to
    /// (default 60 s, at least 1 ms): a subscription to a new topic creates
    /// its epoch with this expiry, renewed at every epoch check while a
    /// node mirrors the topic, and made permanent by the first publish. So
    /// random topic names cost nothing durable. Keep it longer than
    /// [`epoch_check_interval`](Self::epoch_check_interval).
    pub fn unused_topic_ttl(mut self, ttl: Duration) -> Self {
        self.unused_topic_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// The most topics a node mirrors at once (default
    /// [`DEFAULT_MAX_TOPICS`](crate::DEFAULT_MAX_TOPICS), at least 1), so a
    /// node holds at most `max_topics × history_len` events (and at most
    /// [`max_total_history_bytes`](Self::max_total_history_bytes) bytes of them). A new topic
    /// past it replaces the least recently used mirror nobody reads; when
    /// every mirror is being read, subscribing to a new topic fails with a
    /// [`BrokerErrorKind::Capacity`] error (`503` with `Retry-After` over HTTP).
    pub fn max_topics(mut self, topics: usize) -> Self {
        self.max_topics = topics.max(1);
        self
    }

    /// The largest event payload the broker writes or accepts when reading
    /// Redis back, in bytes (default 1 MiB).
    /// A larger publish fails; a larger entry read from Redis becomes a gap.
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes;
        self
    }

    /// The most bytes one topic's mirror holds on a node (default
    /// [`DEFAULT_MAX_HISTORY_BYTES`](crate::DEFAULT_MAX_HISTORY_BYTES),
    /// 64 MiB): its events' payloads and the framed copies kept for
    /// transports, counted as [`HistoryBudget`] says. An event mirrored past
    /// it drops the mirror's oldest events (local subscribers behind get a
    /// gap; Redis keeps its `history_len`); the newest event is always kept.
    pub fn max_history_bytes(mut self, bytes: usize) -> Self {
        self.max_history_bytes = bytes;
        self
    }

    /// The most bytes all mirrors of a node hold together, counted as for
    /// [`RedisConfig::max_history_bytes`] (default
    /// [`DEFAULT_MAX_TOTAL_HISTORY_BYTES`](crate::DEFAULT_MAX_TOTAL_HISTORY_BYTES),
    /// 1 GiB). An event mirrored when the total is full drops its own
    /// mirror's oldest events to make room; if that cannot make room (other
    /// mirrors hold the total), the node's subscribers get it as a gap of
    /// one. Publishing is never refused for it: Redis holds the event.
    pub fn max_total_history_bytes(mut self, bytes: usize) -> Self {
        self.max_total_history_bytes = bytes;
        self
    }
}

/// Where the broker finds its Redis server.
#[derive(Clone, Debug)]
enum Endpoint {
    /// One server, at this URL.
    Server(String),
    /// The primary Sentinel names `master`, asked of these sentinels' URLs.
    Sentinel {
        master: String,
        sentinels: Vec<String>,
    },
    /// A Redis Cluster, reached through any of these nodes' URLs.
    Cluster(Vec<String>),
}

/// Why the Redis broker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisBrokerError {
    /// Redis could not be reached, or refused the command.
    #[error("redis command failed: {0}")]
    Command(#[source] redis::RedisError),
    /// Redis answered something the broker did not write.
    #[error("unexpected reply from redis: {0}")]
    Reply(&'static str),
    /// The node mirrors [`RedisConfig::max_topics`] topics, all being read.
    #[error("too many topics mirrored on this node ({0}), and none is idle")]
    TooManyTopics(usize),
    /// The event is larger than [`RedisConfig::max_event_size`].
    #[error("the event is {size} bytes, over the broker's limit of {max}")]
    TooLarge {
        /// The event's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No sentinel named a reachable primary (see [`RedisConfig::sentinel`]):
    /// none answered, none knows the master's name, or the server named is
    /// not (or no longer) a primary; or no node of a cluster answered with
    /// a slot map that serves every slot ([`RedisConfig::cluster`]). The
    /// message says what each one said.
    #[error("no primary found through redis sentinel or cluster: {0}")]
    NoPrimary(String),
    /// The configuration cannot work (the message says why), e.g. a key
    /// prefix with a brace on a cluster ([`RedisConfig::cluster`]).
    #[error("unusable redis broker configuration: {0}")]
    Config(String),
}

impl From<redis::RedisError> for RedisBrokerError {
    fn from(error: redis::RedisError) -> Self {
        Self::Command(error)
    }
}

impl From<RedisBrokerError> for BrokerError {
    fn from(error: RedisBrokerError) -> Self {
        let kind = match &error {
            RedisBrokerError::Command(e)
                if e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout() =>
            {
                BrokerErrorKind::Unavailable
            }
            // The server's "not now": a cluster without a primary for a
            // slot, a slot moving (or redirections that did not settle), a
            // replica promoting or a dump loading, still so after the
            // retries.
            RedisBrokerError::Command(e)
                if matches!(
                    e.kind(),
                    redis::ErrorKind::Server(
                        redis::ServerErrorKind::ClusterDown
                            | redis::ServerErrorKind::TryAgain
                            | redis::ServerErrorKind::MasterDown
                            | redis::ServerErrorKind::BusyLoading
                            | redis::ServerErrorKind::Moved
                            | redis::ServerErrorKind::Ask
                    )
                ) =>
            {
                BrokerErrorKind::Unavailable
            }
            RedisBrokerError::NoPrimary(_) => BrokerErrorKind::Unavailable,
            RedisBrokerError::TooManyTopics(_) => BrokerErrorKind::Capacity,
            _ => BrokerErrorKind::Other,
        };
        BrokerError::new(kind, error)
    }
}

/// A broker whose histories live in Redis, shared by every node using the
/// same server and key prefix.
///
/// Needs a Tokio runtime: it spawns one reader task, stopped when the broker
/// is dropped. See the crate's README, "Running several nodes".
pub struct RedisBroker {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A node's local copy of one topic's recent history.
struct Mirror {
    log: Arc<TopicLog>,
    /// Milliseconds since the broker started, at the last subscription.
    used: AtomicU64,
    /// This node's events to the topic that came back ahead of one before.
    early: Arc<Early>,
}

/// Events a node published to a topic it mirrors whose cursors came back
/// ahead of an earlier publish's (concurrent publishes finish in any
/// order), by sequence number: held until the events before them are in the
/// mirror, so that the reader need not bring them back from Redis. At most
/// [`MAX_EARLY`]; past that, or if the one before never comes (its publisher
/// gave up waiting), the reader brings them as any other event.
type Early = Mutex<std::collections::BTreeMap<u64, Outgoing>>;

/// Most events held per mirror in its [`Early`].
const MAX_EARLY: usize = 1024;

/// Appends this node's own event `seq` to `log` now, or holds it in
/// `early` until the events before it are there.
fn append_own(log: &TopicLog, early: &Early, seq: u64, event: Outgoing) {
    if seq > log.newest().seq() + 1 {
        let mut held = early.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() < MAX_EARLY {
            held.insert(seq, event);
        }
    } else {
        let _ = log.append_at(seq, event);
    }
    append_early(log, early);
}

/// Appends the events of `early` that are next in `log`, and forgets those
/// it already has.
fn append_early(log: &TopicLog, early: &Early) {
    loop {
        let next = log.newest().seq() + 1;
        let event = {
            let mut held = early.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(first) = held.first_entry() {
                if *first.key() >= next {
                    break;
                }
                first.remove();
            }
            match held.first_entry() {
                Some(first) if *first.key() == next => first.remove(),
                _ => return,
            }
        };
        if log.append_at(next, event) != AppendAt::Appended {
            return;
        }
    }
}

struct Shared {
    config: RedisConfig,
    routes: Routes,
    publish: Lua,
    load: Lua,
    check: Lua,
    rebase: Lua,
    mirrors: RwLock<HashMap<TopicKey, Mirror>>,
    /// The byte budget every mirror is made with.
    budget: HistoryBudget,
    started: Instant,
    /// Bumped whenever a mirror is added.
    generation: AtomicU64,
    /// The generation of the topic set the reader is waiting on.
    reading_generation: AtomicU64,
    /// The reader connection's `CLIENT ID` (0: not connected).
    reader_id: AtomicU64,
    interest: Notify,
    /// The wire names of each registered channel, in declaration order.
    channels: RwLock<HashMap<&'static str, &'static [&'static str]>>,
    /// Entries read back from Redis that failed validation.
    invalid_entries: AtomicU64,
    /// Times the reader reconnected after an outage.
    reconnects: AtomicU64,
    /// Entries Redis held that the mirrors lacked, at the last epoch check.
    reader_lag: AtomicU64,
}

/// Where the commands of a topic go.
enum Routes {
    /// One server (or the primary Sentinel names): one connection for
    /// commands, and the reader's `XREAD` over every mirrored stream.
    Single {
        target: Arc<Target>,
        commands: Box<Commands>,
    },
    /// A Redis Cluster: each topic to the primary serving its slot.
    Cluster(Arc<cluster::Cluster>),
}

/// A topic the reader follows, as of one read.
struct Followed {
    key: TopicKey,
    stream: String,
    /// The newest sequence number mirrored when the read was sent.
    after: u64,
    log: std::sync::Weak<TopicLog>,
}

/// One stream entry, as read: its position and epoch, and its event as
/// Redis holds it, not yet validated.
struct Entry {
    seq: u64,
    epoch: u64,
    name: Vec<u8>,
    kind: Option<usize>,
    data: Bytes,
}

/// What [`LOAD_LUA`] returns.
struct Tail {
    epoch: u64,
    seq: u64,
    /// Oldest first.
    entries: Vec<Entry>,
}

/// A connection to Redis with the `run_id` of the server process at its
/// other end, read on that connection when it was opened: every script run
/// on it vouches with that `run_id` (see `vouch_lua!`). Commands sent on
/// one connection are pipelined (several in flight at once).
#[derive(Clone)]
struct Link {
    conn: MultiplexedConnection,
    run: Arc<str>,
    /// Which connection this is, among those [`Commands`] opened.
    number: u64,
}

impl Link {
    /// Opens a connection to the target's server (its primary, asked of
    /// Sentinel) and reads that server's `run_id` on it.
    async fn open(
        target: &Target,
        config: &AsyncConnectionConfig,
        number: u64,
    ) -> Result<Self, RedisBrokerError> {
        let mut conn = match target {
            Target::Server(client) => {
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?
            }
            Target::Sentinel { master, sentinels } => {
                primary_connection(master, sentinels, config).await?
            }
        };
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        let run = run_id(&info).ok_or(RedisBrokerError::Reply("no run_id in INFO server"))?;
        Ok(Self {
            conn,
            run: Arc::from(run),
            number,
        })
    }
}

impl Link {
    /// Runs a script call here, with this server's `run_id` last; sends
    /// the script's text if the server lacks it.
    async fn eval<T: redis::FromRedisValue>(&mut self, call: &Call<'_>) -> redis::RedisResult<T> {
        let result = call
            .command(&self.run, false)
            .query_async(&mut self.conn)
            .await;
        match result {
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                call.command(&self.run, true)
                    .query_async(&mut self.conn)
                    .await
            }
            result => result,
        }
    }
}

/// What a [`Link`] connects to: [`Endpoint`], parsed.
enum Target {
    Server(redis::Client),
    Sentinel {
        master: String,
        sentinels: Vec<(String, redis::Client)>,
    },
}

impl Target {
    fn new(endpoint: &Endpoint) -> Result<Self, RedisBrokerError> {
        Ok(match endpoint {
            Endpoint::Server(url) => Self::Server(client(url.as_str())?),
            Endpoint::Cluster(_) => {
                return Err(RedisBrokerError::Config(
                    "a cluster is reached through its slot map, not one target".to_owned(),
                ));
            }
            Endpoint::Sentinel { master, sentinels } => {
                if sentinels.is_empty() {
                    return Err(RedisBrokerError::NoPrimary(format!(
                        "no sentinel address given for master '{master}'"
                    )));
                }
                let sentinels = sentinels
                    .iter()
                    .map(|url| Ok((url.clone(), client(url.as_str())?)))
                    .collect::<Result<_, RedisBrokerError>>()?;
                Self::Sentinel {
                    master: master.clone(),
                    sentinels,
                }
            }
        })
    }
}

/// A client for `info`, with `TCP_NODELAY` (without it, pipelined
/// publishes wait on Nagle's algorithm).
fn client(info: impl redis::IntoConnectionInfo) -> Result<redis::Client, RedisBrokerError> {
    Ok(redis::Client::open(client_info(info)?)?)
}

/// `info`, parsed, with `TCP_NODELAY`.
fn client_info(
    info: impl redis::IntoConnectionInfo,
) -> Result<redis::ConnectionInfo, RedisBrokerError> {
    Ok(info
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

/// A connection to the primary that the sentinels name `master`: each
/// sentinel in turn is asked for its address, and the server there must say
/// (`ROLE`) that it is a primary (during a failover, a sentinel may still
/// name the demoted one). The error says what each sentinel answered.
async fn primary_connection(
    master: &str,
    sentinels: &[(String, redis::Client)],
    config: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection, RedisBrokerError> {
    let mut failures = Vec::with_capacity(sentinels.len());
    for (url, sentinel) in sentinels {
        match primary_through(master, sentinel, config).await {
            Ok(conn) => return Ok(conn),
            Err(failure) => failures.push(format!("{url}: {failure}")),
        }
    }
    Err(RedisBrokerError::NoPrimary(failures.join("; ")))
}

/// [`primary_connection`], through one sentinel.
async fn primary_through(
    master: &str,
    sentinel: &redis::Client,
    config: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection, String> {
    let mut conn = sentinel
        .get_multiplexed_async_connection_with_config(config)
        .await
        .map_err(|e| format!("unreachable ({e})"))?;
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("SENTINEL get-master-addr-by-name failed ({e})"))?;
    let (host, port) = addr.ok_or_else(|| format!("knows no master named '{master}'"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("named port '{port}' for master '{master}'"))?;
    let primary = client(redis::ConnectionAddr::Tcp(host.clone(), port))
        .map_err(|e| format!("named {host}:{port}, unusable ({e})"))?;
    let mut conn = primary
        .get_multiplexed_async_connection_with_config(config)
        .await
        .map_err(|e| format!("named {host}:{port}, unreachable ({e})"))?;
    let role: Value = redis::cmd("ROLE")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("named {host}:{port}, whose ROLE failed ({e})"))?;
    match &role {
        Value::Array(parts) if matches!(parts.first(), Some(Value::BulkString(role)) if role == b"master") => {
            Ok(conn)
        }
        _ => Err(format!(
            "named {host}:{port}, which is not a primary (a failover under way?)"
        )),
    }
}

/// The `run_id` in an `INFO server` reply.
fn run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(str::trim)
        .filter(|run| !run.is_empty() && run.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Lua script of the broker: its text and its SHA1 (`EVALSHA`).
struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            hash: Script::new(code).get_hash().to_owned(),
        }
    }

    /// A call of this script, its keys and arguments to be added.
    fn call(&self) -> Call<'_> {
        Call {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Lua`] script. The connection it runs on adds the
/// `run_id` of its server as the last argument (see `vouch_lua!`).
struct Call<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call<'_> {
    fn key(mut self, key: impl redis::ToRedisArgs) -> Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    fn arg(mut self, arg: impl redis::ToRedisArgs) -> Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// `EVALSHA` (or `EVAL`, with the script's text) with `run` last.
    fn command(&self, run: &str, with_text: bool) -> redis::Cmd {
        let mut cmd = if with_text {
            redis::cmd("EVAL")
        } else {
            redis::cmd("EVALSHA")
        };
        cmd.arg(if with_text {
            self.lua.code
        } else {
            self.lua.hash.as_str()
        })
        .arg(self.keys.len())
        .arg(&self.keys)
        .arg(&self.args)
        .arg(run);
        cmd
    }
}

/// The node's connection for publishes and loads: one [`Link`], shared by
/// every caller, replaced when it fails. While Redis is unreachable, one
/// attempt to connect is made at a time (callers that arrive meanwhile
/// share its outcome), and none before the reconnect backoff has passed
/// since the last failed one: those callers fail at once.
struct Commands {
    target: Arc<Target>,
    config: AsyncConnectionConfig,
    backoff_min: Duration,
    backoff_max: Duration,
    state: Mutex<LinkState>,
    /// Held while connecting.
    connecting: tokio::sync::Mutex<()>,
}

struct LinkState {
    link: Option<Link>,
    /// Connections opened or attempted so far.
    attempts: u64,
    /// The last attempt failed: no new one before then.
    retry_at: Option<(Instant, RedisBrokerError)>,
    backoff: Duration,
}

impl Commands {
    fn new(target: Arc<Target>, config: &RedisConfig) -> Self {
        Self {
            target,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.command_timeout))
                .set_response_timeout(Some(config.command_timeout)),
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max,
            state: Mutex::new(LinkState {
                link: None,
                attempts: 0,
                retry_at: None,
                backoff: config.backoff_min,
            }),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current connection, opened if there is none.
    async fn link(&self) -> Result<Link, RedisBrokerError> {
        let seen = {
            let state = self.state();
            if let Some(link) = &state.link {
                return Ok(link.clone());
            }
            state.attempts
        };
        let _connecting = self.connecting.lock().await;
        let number = {
            let state = self.state();
            if let Some(link) = &state.link {
                return Ok(link.clone());
            }
            if let Some((at, error)) = &state.retry_at
                && (state.attempts != seen || Instant::now() < *at)
            {
                return Err(error.again());
            }
            state.attempts + 1
        };
        let opened = Link::open(&self.target, &self.config, number).await;
        let mut state = self.state();
        state.attempts = number;
        match opened {
            Ok(link) => {
                state.link = Some(link.clone());
                state.retry_at = None;
                state.backoff = self.backoff_min;
                Ok(link)
            }
            Err(error) => {
                let wait = state.backoff;
                state.backoff = (wait * 2).min(self.backoff_max);
                state.retry_at = Some((Instant::now() + wait, error.again()));
                Err(error)
            }
        }
    }

    /// Notes that a command on `link` failed: if the connection is lost
    /// (or hangs), the next command opens another one.
    /// A server demoted to a replica (a failover) refuses writes: the
    /// next command asks Sentinel for the new primary.
    fn failed(&self, link: &Link, error: &redis::RedisError) {
        if error.is_unrecoverable_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        {
            let mut state = self.state();
            if state.link.as_ref().is_some_and(|l| l.number == link.number) {
                state.link = None;
            }
        }
    }

    /// Runs a script on the current connection, with its `run_id` as the
    /// last argument (the script is sent again if the server lacks it).
    async fn eval<T: redis::FromRedisValue>(&self, call: &Call<'_>) -> Result<T, RedisBrokerError> {
        let mut link = self.link().await?;
        link.eval(call).await.map_err(|error| {
            self.failed(&link, &error);
            error.into()
        })
    }

    /// [`Commands::eval`] on a cluster node importing the call's slot,
    /// right after `ASKING` (one pipeline, so nothing else comes between).
    async fn eval_asking<T: redis::FromRedisValue>(
        &self,
        call: &Call<'_>,
    ) -> Result<T, RedisBrokerError> {
        let mut link = self.link().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING")
            .ignore()
            .add_command(call.command(&link.run, true));
        let result: Result<(T,), _> = pipe.query_async(&mut link.conn).await;
        result.map(|(value,)| value).map_err(|error| {
            self.failed(&link, &error);
            the_failure(error).into()
        })
    }

    /// Runs a command on the current connection.
    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisBrokerError> {
        let mut link = self.link().await?;
        cmd.query_async(&mut link.conn).await.map_err(|error| {
            self.failed(&link, &error);
            error.into()
        })
    }
}

/// The error of the one command of a pipeline that failed, as if it had
/// been sent alone (so that its kind and its redirection can be read), or
/// `error` itself.
fn the_failure(error: redis::RedisError) -> redis::RedisError {
    if !matches!(error.kind(), redis::ErrorKind::Server(_)) || error.detail().is_some() {
        return error;
    }
    let text = error.to_string();
    match error.into_server_errors() {
        Some(failures) if failures.len() == 1 => failures[0].1.clone().into(),
        _ => redis::RedisError::from((redis::ErrorKind::Extension, "pipeline failed", text)),
    }
}

impl RedisBrokerError {
    /// The same error again, for each caller that shares a failed attempt
    /// to connect (a `redis::RedisError` is not `Clone`).
    fn again(&self) -> Self {
        match self {
            Self::Command(error) => Self::Command(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("redis is unreachable, reconnecting with backoff: {error}"),
            ))),
            Self::Reply(what) => Self::Reply(what),
            Self::TooManyTopics(n) => Self::TooManyTopics(*n),
            Self::NoPrimary(what) => Self::NoPrimary(what.clone()),
            Self::Config(what) => Self::Config(what.clone()),
            Self::TooLarge { size, max } => Self::TooLarge {
                size: *size,
                max: *max,
            },
        }
    }
}

impl RedisBroker {
    /// Connects to Redis and starts the node's reader task.
    ///
    /// Fails if Redis cannot be reached now; once started, the broker
    /// survives outages (see the crate's README).
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisBrokerError> {
        let routes = match &config.endpoint {
            Endpoint::Cluster(nodes) => {
                Routes::Cluster(Arc::new(cluster::Cluster::connect(nodes, &config).await?))
            }
            endpoint => {
                let target = Arc::new(Target::new(endpoint)?);
                let commands = Box::new(Commands::new(Arc::clone(&target), &config));
                commands.link().await?;
                Routes::Single { target, commands }
            }
        };
        let budget = HistoryBudget::new(config.max_history_bytes, config.max_total_history_bytes);
        let shared = Arc::new(Shared {
            budget,
            config,
            routes,
            publish: Lua::new(PUBLISH_LUA),
            load: Lua::new(LOAD_LUA),
            check: Lua::new(CHECK_LUA),
            rebase: Lua::new(REBASE_LUA),
            mirrors: RwLock::default(),
            started: Instant::now(),
            generation: AtomicU64::new(0),
            reading_generation: AtomicU64::new(0),
            reader_id: AtomicU64::new(0),
            interest: Notify::new(),
            channels: RwLock::default(),
            invalid_entries: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            reader_lag: AtomicU64::new(0),
        });
        let reader = match &shared.routes {
            Routes::Cluster(cluster) => {
                tokio::spawn(cluster::run(Arc::clone(&shared), Arc::clone(cluster)))
            }
            Routes::Single { .. } => tokio::spawn(read_loop(Arc::clone(&shared))),
        };
        Ok(Self { shared, reader })
    }

    /// The Lua script every publish runs (`EVALSHA`), so that a benchmark
    /// can run the very same script without the broker, as a raw baseline
    /// (`cargo run --release --example redis_bench -- publish`).
    ///
    /// KEYS: the topic's meta hash and its stream
    /// (`{prefix}:{{{channel}/{topic}}}:meta` and `…:events`). ARGV: a fresh
    /// epoch (used if the topic has none Redis answers for), the history
    /// length, the event's name, its kind index, its data, the epoch and
    /// sequence number the node last saw for the topic (empty and 0 if it
    /// does not mirror it), and the `run_id` of the Redis server (from
    /// `INFO server`, read on the connection the script runs on). Returns
    /// the event's epoch and sequence number.
    pub fn publish_script() -> &'static str {
        PUBLISH_LUA
    }

    /// How many topics this node mirrors now.
    pub fn mirrored_topics(&self) -> usize {
        self.shared
            .mirrors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The bytes this node's mirrors count now against their byte budget
    /// ([`RedisConfig::max_total_history_bytes`]).
    pub fn history_bytes(&self) -> usize {
        self.shared.budget.used()
    }

    /// How many entries read back from Redis failed validation (each one
    /// reached subscribers as a gap, never as bytes on their wire).
    pub fn invalid_entries(&self) -> u64 {
        self.shared.invalid_entries.load(Ordering::Relaxed)
    }
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        key: &'a TopicKey,
        event: Outgoing,
    ) -> BrokerFuture<'a, Result<Cursor, BrokerError>> {
        Box::pin(async move { Ok(self.shared.publish(key, event).await?) })
    }

    fn subscribe<'a>(
        &'a self,
        key: &'a TopicKey,
        start: Start,
    ) -> BrokerFuture<'a, Result<Subscription, BrokerSubscribeError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut log = shared.mirror(key).await.map_err(BrokerError::from)?;
            if let Start::After(cursor) = start {
                // The client may come from a node that is ahead of this one,
                // or from before Redis lost its data: ask Redis, not the mirror.
                if cursor.epoch() != log.epoch() || cursor.seq() > log.newest().seq() {
                    shared.refresh(key).await.map_err(BrokerError::from)?;
                    log = shared.current(key).unwrap_or(log);
                }
            }
            Ok(log.subscribe(start)?)
        })
    }

    fn health(&self) -> Option<BrokerHealth> {
        let shared = &self.shared;
        let (connected, lag) = match &shared.routes {
            Routes::Single { .. } => (
                shared.reader_id.load(Ordering::SeqCst) != 0,
                shared.reader_lag.load(Ordering::Relaxed),
            ),
            Routes::Cluster(cluster) => (cluster.readers_connected(), cluster.lag()),
        };
        Some(BrokerHealth::new(
            connected,
            shared.reconnects.load(Ordering::Relaxed),
            lag,
            self.mirrored_topics(),
        ))
    }

    /// The node's mirror of `key`, if it has one: a paced publish
    /// ([`Backpressure`](crate::Backpressure)) waits for this node's
    /// subscribers, not for other nodes'.
    fn local_log(&self, key: &TopicKey) -> Option<Arc<TopicLog>> {
        self.shared.peek(key)
    }

    fn register_channel(&self, channel: &'static str, names: &'static [&'static str]) {
        self.shared
            .channels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel, names);
    }
}

impl Shared {
    fn keys(&self, key: &TopicKey) -> (String, String) {
        // The braces are a hash tag: both keys of a topic share a cluster slot.
        let base = format!(
            "{}:{{{}/{}}}",
            self.config.key_prefix,
            key.channel,
            key.topic.as_str()
        );
        (format!("{base}:meta"), format!("{base}:events"))
    }

    /// The topic's live channel on a cluster (see [`PUBLISH_LUA`]).
    fn live(&self, key: &TopicKey) -> String {
        format!(
            "{}:{{{}/{}}}:live",
            self.config.key_prefix,
            key.channel,
            key.topic.as_str()
        )
    }

    /// Runs a script call about the topic whose meta key is `meta`: on the
    /// server, or on the cluster's primary serving its slot.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        meta: &str,
        call: &Call<'_>,
    ) -> Result<T, RedisBrokerError> {
        match &self.routes {
            Routes::Single { commands, .. } => commands.eval(call).await,
            Routes::Cluster(cluster) => cluster.invoke(cluster::slot(meta), call).await,
        }
    }

    /// Every mirrored topic.
    fn mirrored(&self) -> Vec<TopicKey> {
        let mirrors = self.mirrors.read().unwrap_or_else(|p| p.into_inner());
        mirrors.keys().cloned().collect()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn publish(&self, key: &TopicKey, event: Outgoing) -> Result<Cursor, RedisBrokerError> {
        if event.data.len() > self.config.max_event_size {
            return Err(RedisBrokerError::TooLarge {
                size: event.data.len(),
                max: self.config.max_event_size,
            });
        }
        let (meta, events) = self.keys(key);
        // How far this node knows the topic went, if it mirrors it.
        let known = self.peek(key).map(|log| log.newest());
        let mut call = self.publish.call().key(&meta).key(&events);
        if let Routes::Cluster(_) = &self.routes {
            call = call.key(self.live(key));
        }
        let call = call
            .arg(fresh_epoch())
            .arg(self.config.history_len)
            .arg(event.name)
            .arg(event.kind_index)
            .arg(event.data.as_ref())
            .arg(known.map_or(String::new(), |c| c.epoch().to_string()))
            .arg(known.map_or(0, Cursor::seq));
        let (epoch, seq): (String, u64) = self.invoke(&meta, &call).await?;
        let epoch = epoch
            .parse()
            .map_err(|_| RedisBrokerError::Reply("epoch is not a number"))?;
        // The mirror as it is now (not held across the call: see `make_room`).
        let mirror = self.peek_early(key);
        match mirror {
            // Local subscribers get it now if it is the next event, or once
            // those before it are in (see `Early`).
            Some((log, early)) if log.epoch() == epoch => append_own(&log, &early, seq, event),
            // A new epoch (Redis lost data, or went back in time): the
            // mirror moves to it now, its subscribers after a gap.
            Some(held) => {
                drop(held);
                self.refresh(key).await?;
            }
            None => {}
        }
        Ok(Cursor::new(epoch, seq))
    }

    fn current(&self, key: &TopicKey) -> Option<Arc<TopicLog>> {
        let mirrors = self.mirrors.read().unwrap_or_else(|p| p.into_inner());
        mirrors.get(key).map(|mirror| {
            mirror.used.store(self.now_ms(), Ordering::Relaxed);
            Arc::clone(&mirror.log)
        })
    }

    /// The mirror of `key`, if any, without counting it as used.
    fn peek(&self, key: &TopicKey) -> Option<Arc<TopicLog>> {
        let mirrors = self.mirrors.read().unwrap_or_else(|p| p.into_inner());
        mirrors.get(key).map(|mirror| Arc::clone(&mirror.log))
    }

    /// [`Shared::peek`], with the mirror's early events.
    fn peek_early(&self, key: &TopicKey) -> Option<(Arc<TopicLog>, Arc<Early>)> {
        let mirrors = self.mirrors.read().unwrap_or_else(|p| p.into_inner());
        mirrors
            .get(key)
            .map(|mirror| (Arc::clone(&mirror.log), Arc::clone(&mirror.early)))
    }

    /// The mirror of `key`, loaded from Redis on first use.
    async fn mirror(&self, key: &TopicKey) -> Result<Arc<TopicLog>, RedisBrokerError> {
        if let Some(log) = self.current(key) {
            return Ok(log);
        }
        // Refused before Redis is asked, so a refusal creates nothing there.
        self.make_room(&mut self.mirrors.write().unwrap_or_else(|p| p.into_inner()))?;
        let tail = self.load_tail(key, None).await?;
        let loaded = self.build_log(key, tail);
        let (log, generation) = {
            let mut mirrors = self.mirrors.write().unwrap_or_else(|p| p.into_inner());
            if let Some(existing) = mirrors.get(key) {
                return Ok(Arc::clone(&existing.log));
            }
            self.make_room(&mut mirrors)?;
            mirrors.insert(
                key.clone(),
                Mirror {
                    log: Arc::clone(&loaded),
                    used: AtomicU64::new(self.now_ms()),
                    early: Arc::default(),
                },
            );
            (loaded, self.generation.fetch_add(1, Ordering::SeqCst) + 1)
        };
        self.wake_reader(generation).await;
        Ok(log)
    }

    /// Makes room for one more mirror: past [`RedisConfig::max_topics`],
    /// drops the least recently used mirror nobody reads, or refuses.
    ///
    /// Nobody reads a mirror when the map holds its log's only strong
    /// reference: so the broker's own work (a publish, a refresh, an epoch
    /// check) keeps at most a `Weak` to it across an `.await`, or a topic
    /// nobody reads would look busy for a round trip to Redis.
    fn make_room(&self, mirrors: &mut HashMap<TopicKey, Mirror>) -> Result<(), RedisBrokerError> {
        if mirrors.len() < self.config.max_topics {
            return Ok(());
        }
        let idle = mirrors
            .iter()
            .filter(|(_, mirror)| Arc::strong_count(&mirror.log) == 1)
            .min_by_key(|(_, mirror)| mirror.used.load(Ordering::Relaxed))
            .map(|(key, _)| key.clone());
        match idle {
            Some(key) => {
                tracing::debug!(topic = %key.topic, "no longer mirroring an idle topic: room for another");
                mirrors.remove(&key);
                Ok(())
            }
            None => Err(RedisBrokerError::TooManyTopics(self.config.max_topics)),
        }
    }

    /// Makes the reader include a topic set of at least `generation`.
    async fn wake_reader(&self, generation: u64) {
        let commands = match &self.routes {
            Routes::Single { commands, .. } => commands,
            Routes::Cluster(_) => {
                // Each primary's reader subscribes what it serves.
                self.interest.notify_waiters();
                return;
            }
        };
        self.interest.notify_one();
        for _ in 0..5 {
            if self.reading_generation.load(Ordering::SeqCst) >= generation {
                return;
            }
            let id = self.reader_id.load(Ordering::SeqCst);
            if id != 0 {
                let unblocked: Result<u64, _> = commands
                    .query(redis::cmd("CLIENT").arg("UNBLOCK").arg(id))
                    .await;
                if matches!(unblocked, Ok(1) | Err(_)) {
                    return;
                }
            }
            // The reader is between two reads: it will see the new topic,
            // unless it was just sending the read; look again shortly.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn load_tail(
        &self,
        key: &TopicKey,
        known: Option<Cursor>,
    ) -> Result<Tail, RedisBrokerError> {
        let (meta, events) = self.keys(key);
        let (epoch, after) = known.map_or((0, 0), |c| (c.epoch(), c.seq()));
        let call = self
            .load
            .call()
            .key(&meta)
            .key(&events)
            .arg(fresh_epoch())
            .arg(self.config.history_len)
            .arg(epoch.to_string())
            .arg(after)
            .arg(millis(self.config.unused_topic_ttl));
        let reply: Value = self.invoke(&meta, &call).await?;
        parse_tail(&reply).ok_or(RedisBrokerError::Reply("malformed topic tail"))
    }

    fn build_log(&self, key: &TopicKey, tail: Tail) -> Arc<TopicLog> {
        let log = Arc::new(TopicLog::with_budget(
            tail.epoch,
            self.config.history_len,
            &self.budget,
        ));
        self.apply_entries(key, &log, tail.entries);
        log.skip_to(tail.seq);
        log
    }

    /// Brings the mirror of `key` up to date with Redis, replacing it with a
    /// log of the new epoch if Redis has another one.
    async fn refresh(&self, key: &TopicKey) -> Result<(), RedisBrokerError> {
        // Not held across the read (see `make_room`).
        let (newest, current) = match self.current(key) {
            Some(current) => (current.newest(), Arc::downgrade(&current)),
            None => return Ok(()),
        };
        let tail = self.load_tail(key, Some(newest)).await?;
        let Some(current) = current.upgrade() else {
            return Ok(()); // No longer mirrored.
        };
        if tail.epoch == current.epoch() {
            self.apply_entries(key, &current, tail.entries);
            current.skip_to(tail.seq);
            return Ok(());
        }
        let next = self.build_log(key, tail);
        let mut mirrors = self.mirrors.write().unwrap_or_else(|p| p.into_inner());
        // Another refresh may have replaced it meanwhile: theirs stands.
        if let Some(mirror) = mirrors.get_mut(key)
            && Arc::ptr_eq(&mirror.log, &current)
        {
            tracing::warn!(
                channel = key.channel,
                topic = %key.topic,
                old = current.epoch(),
                new = next.epoch(),
                "redis holds a new epoch for this topic (it lost its data, or restarted or failed over with it): subscribers get a gap"
            );
            current.supersede(Arc::clone(&next));
            mirror.log = next;
            mirror.early = Arc::default();
        }
        Ok(())
    }

    /// Refreshes every mirror whose epoch Redis no longer holds, and drops
    /// mirrors nobody has used for a while (one server: one script for
    /// every topic, on the reader's connection).
    async fn check_epochs(&self, reader: &mut Link) -> Result<(), RedisBrokerError> {
        self.drop_idle_mirrors();
        let keys = self.mirrored();
        let lag = self.check_on(&keys, Some(reader)).await?;
        self.reader_lag.store(lag, Ordering::Relaxed);
        Ok(())
    }

    /// Checks the topics' epochs in one script ([`CHECK_LUA`]), on `reader`
    /// or (`None`: a cluster's topics of one slot, as a script may only
    /// touch one) where their slot lives: a mirror whose epoch Redis no longer
    /// holds moves to Redis's; one whose sequence number went back starts
    /// a new epoch; one behind Redis catches up. Returns the largest lag.
    async fn check_on(
        &self,
        keys: &[TopicKey],
        reader: Option<&mut Link>,
    ) -> Result<u64, RedisBrokerError> {
        // Not held across the call (see `make_room`).
        let logs: Vec<(&TopicKey, Weak<TopicLog>)> = keys
            .iter()
            .filter_map(|key| Some((key, Arc::downgrade(&self.peek(key)?))))
            .collect();
        let Some((first, _)) = logs.first() else {
            return Ok(0);
        };
        let mut call = self.check.call();
        for (key, _) in &logs {
            let (meta, events) = self.keys(key);
            call = call.key(meta).key(events);
        }
        let call = call
            .arg(millis(self.config.unused_topic_ttl))
            .arg(fresh_epoch());
        let topics: Vec<(Option<u64>, Option<u64>)> = match reader {
            Some(link) => link.eval(&call).await?,
            None => self.invoke(&self.keys(first).0, &call).await?,
        };
        let mut lag = 0;
        for ((key, log), (epoch, seq)) in logs.iter().zip(topics) {
            let Some((mirror_epoch, newest)) = log.upgrade().map(|log| (log.epoch(), log.newest()))
            else {
                continue; // No longer mirrored.
            };
            let seq = seq.unwrap_or(0);
            if epoch != Some(mirror_epoch) {
                self.refresh(key).await?;
                continue;
            }
            lag = seq.saturating_sub(newest.seq()).max(lag);
            if seq < newest.seq() {
                self.rebase(key, newest).await?;
                self.refresh(key).await?;
            } else if seq > newest.seq() {
                // Missed by the reader (or still on its way): the stream has it.
                self.refresh(key).await?;
            }
        }
        Ok(lag)
    }

    /// Starts a new epoch for a topic whose sequence number in Redis went
    /// back below `known` (an older snapshot, a replica that lagged), so
    /// that no cursor names two events; subscribers get a gap.
    async fn rebase(&self, key: &TopicKey, known: Cursor) -> Result<(), RedisBrokerError> {
        let (meta, events) = self.keys(key);
        let call = self
            .rebase
            .call()
            .key(&meta)
            .key(&events)
            .arg(known.epoch().to_string())
            .arg(known.seq())
            .arg(fresh_epoch());
        let rebased: u64 = self.invoke(&meta, &call).await?;
        if rebased == 1 {
            tracing::warn!(
                channel = key.channel,
                topic = %key.topic,
                known = %known,
                "redis went back in time for this topic (an older snapshot, or a replica that lagged): it starts a new epoch, subscribers get a gap"
            );
        }
        Ok(())
    }

    fn drop_idle_mirrors(&self) {
        let now = self.now_ms();
        let idle = u64::try_from(self.config.mirror_idle.as_millis()).unwrap_or(u64::MAX);
        let mut mirrors = self.mirrors.write().unwrap_or_else(|p| p.into_inner());
        // Only the map holds the log: no subscription reads it.
        mirrors.retain(|_, m| {
            Arc::strong_count(&m.log) > 1
                || now.saturating_sub(m.used.load(Ordering::Relaxed)) < idle
        });
    }

    /// The topics to read: each one's key, stream and log. The log is held
    /// weakly, so that a blocking read does not make every mirror look busy
    /// to the idle checks.
    fn snapshot(&self) -> (u64, Vec<Followed>) {
        let mirrors = self.mirrors.read().unwrap_or_else(|p| p.into_inner());
        let generation = self.generation.load(Ordering::SeqCst);
        let topics = mirrors
            .iter()
            .map(|(key, mirror)| Followed {
                key: key.clone(),
                stream: self.keys(key).1,
                after: mirror.log.newest().seq(),
                log: Arc::downgrade(&mirror.log),
            })
            .collect();
        (generation, topics)
    }

    async fn connect_reader(&self) -> Result<Link, RedisBrokerError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.command_timeout))
            .set_response_timeout(Some(self.config.epoch_check + self.config.command_timeout));
        let Routes::Single { target, .. } = &self.routes else {
            return Err(RedisBrokerError::Config(
                "a cluster has a reader per primary, not one".to_owned(),
            ));
        };
        let mut link = Link::open(target, &config, 0).await?;
        let id: u64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut link.conn)
            .await?;
        self.reader_id.store(id, Ordering::SeqCst);
        Ok(link)
    }

    /// Reads the streams of every mirrored topic until Redis fails.
    async fn read_until_error(&self, reader: &mut Link) -> Result<(), RedisBrokerError> {
        self.check_epochs(reader).await?;
        let mut last_check = Instant::now();
        loop {
            let interest = self.interest.notified();
            tokio::pin!(interest);
            interest.as_mut().enable();
            let (generation, topics) = self.snapshot();
            self.reading_generation.store(generation, Ordering::SeqCst);
            if topics.is_empty() {
                let _ = tokio::time::timeout(self.config.epoch_check, interest).await;
            } else {
                let mut cmd = redis::cmd("XREAD");
                cmd.arg("COUNT")
                    .arg(READ_BATCH)
                    .arg("BLOCK")
                    .arg(
                        u64::try_from(self.config.epoch_check.as_millis())
                            .unwrap_or(u64::MAX)
                            .max(1),
                    )
                    .arg("STREAMS");
                for topic in &topics {
                    cmd.arg(&topic.stream);
                }
                for topic in &topics {
                    cmd.arg(format!("{}-1", topic.after));
                }
                let reply: Value = cmd.query_async(&mut reader.conn).await?;
                self.apply_read(&topics, &reply).await?;
            }
            if last_check.elapsed() >= self.config.epoch_check {
                self.check_epochs(reader).await?;
                last_check = Instant::now();
            }
        }
    }

    async fn apply_read(&self, topics: &[Followed], reply: &Value) -> Result<(), RedisBrokerError> {
        for (stream, entries) in parse_read(reply) {
            let Some(topic) = topics.iter().find(|topic| topic.stream == stream) else {
                continue;
            };
            // Dropped meanwhile: nobody reads it any more.
            let Some(log) = topic.log.upgrade() else {
                continue;
            };
            let (key, log) = (&topic.key, &log);
            if entries.iter().any(|entry| entry.epoch != log.epoch()) {
                self.refresh(key).await?;
                continue;
            }
            self.apply_entries(key, log, entries);
        }
        Ok(())
    }

    /// Appends entries to `log` ([`apply_entries`]), logging and counting
    /// the invalid ones.
    fn apply_entries(&self, key: &TopicKey, log: &TopicLog, entries: Vec<Entry>) {
        let rules = Rules {
            names: self
                .channels
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(key.channel)
                .copied(),
            max_event_size: self.config.max_event_size,
            epoch: log.epoch(),
        };
        for (seq, reason) in apply_entries(log, entries, &rules) {
            self.invalid_entries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                channel = key.channel,
                topic = %key.topic,
                seq,
                reason,
                "an entry read back from redis is invalid: subscribers get a gap for it"
            );
        }
        // This node's own events held for those just read.
        if let Some((current, early)) = self.peek_early(key)
            && std::ptr::eq(Arc::as_ptr(&current), log)
        {
            append_early(log, &early);
        }
    }
}

/// What an entry read back from one topic's stream must be.
struct Rules {
    /// The channel's wire names, if a hub registered them.
    names: Option<&'static [&'static str]>,
    max_event_size: usize,
    /// The epoch of the log the entries go to.
    epoch: u64,
}

/// Appends entries (oldest first) to `log`. Entries missing before one
/// (trimmed from Redis before this node read them), and entries that fail
/// [`validate`], become a gap for local subscribers: never bytes on their
/// wire. Returns the invalid entries not seen before, with why.
fn apply_entries(log: &TopicLog, entries: Vec<Entry>, rules: &Rules) -> Vec<(u64, &'static str)> {
    let mut invalid = Vec::new();
    // Those the log has already (this node published them, or two reads
    // overlap) are neither validated nor appended again.
    let mut newest = log.newest().seq();
    for entry in entries {
        let seq = entry.seq;
        if seq <= newest {
            continue;
        }
        newest = seq;
        match validate(rules, entry) {
            Ok(event) => {
                if log.append_at(seq, event.clone()) == AppendAt::NotNext {
                    log.skip_to(seq - 1);
                    let _ = log.append_at(seq, event);
                }
            }
            // Read again (two reads overlap): already counted.
            Err(_) if seq <= log.newest().seq() => {}
            Err(reason) => {
                invalid.push((seq, reason));
                if log.lose_at(seq) == AppendAt::NotNext {
                    log.skip_to(seq - 1);
                    let _ = log.lose_at(seq);
                }
            }
        }
    }
    invalid
}

/// Checks an entry as if it came from the network: the log's epoch, a name
/// the channel declares (or, for a channel no hub registered, one that
/// follows the wire-name rules), a kind that agrees, JSON data within the
/// size limit.
fn validate(rules: &Rules, entry: Entry) -> Result<Outgoing, &'static str> {
    if entry.epoch != rules.epoch {
        return Err("an entry of another epoch");
    }
    let (name, kind_index) = match rules.names {
        Some(names) => {
            let index = names
                .iter()
                .position(|name| name.as_bytes() == entry.name.as_slice())
                .ok_or("an event name the channel does not declare")?;
            if entry.kind.is_some_and(|kind| kind != index) {
                return Err("a kind that does not match its name");
            }
            (names[index], index)
        }
        None => {
            let name = std::str::from_utf8(&entry.name)
                .ok()
                .filter(|name| is_wire_name(name))
                .ok_or("a name that breaks the wire-name rules")?;
            let kind = entry.kind.ok_or("no kind")?;
            (intern(name).ok_or("too many distinct names")?, kind)
        }
    };
    if entry.data.len() > rules.max_event_size {
        return Err("data over max_event_size");
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&entry.data).is_err() {
        return Err("data that is not JSON");
    }
    Ok(Outgoing {
        name,
        kind_index,
        data: entry.data,
    })
}

/// A duration in whole milliseconds, at least 1.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The wire-name rules of `#[push_channel]`: 1 to 128 ASCII letters,
/// digits, `_`, `-`, `.` or `:`, not starting with `push.`.
fn is_wire_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        && !name.starts_with("push.")
}

/// The node's reader: follows every mirrored topic's stream, reconnecting
/// with backoff, and logs each outage once.
async fn read_loop(shared: Arc<Shared>) {
    let mut backoff = shared.config.backoff_min;
    let mut outage_since: Option<Instant> = None;
    loop {
        let result = match shared.connect_reader().await {
            Ok(mut reader) => {
                if let Some(since) = outage_since.take() {
                    shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        down_ms = since.elapsed().as_millis() as u64,
                        "redis is reachable again: catching up from the streams"
                    );
                }
                backoff = shared.config.backoff_min;
                shared.read_until_error(&mut reader).await
            }
            Err(error) => Err(error),
        };
        shared.reader_id.store(0, Ordering::SeqCst);
        if let Err(error) = result {
            if outage_since.is_none() {
                tracing::warn!(%error, "redis is unreachable: live events pause, reconnecting with backoff");
                outage_since = Some(Instant::now());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(shared.config.backoff_max);
        }
    }
}

fn parse_tail(reply: &Value) -> Option<Tail> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let [epoch, seq, entries] = parts.as_slice() else {
        return None;
    };
    let Value::Array(entries) = entries else {
        return None;
    };
    let mut entries: Vec<Entry> = entries.iter().filter_map(parse_entry).collect();
    entries.reverse();
    Some(Tail {
        epoch: text(epoch)?.parse().ok()?,
        seq: match seq {
            Value::Int(n) => u64::try_from(*n).ok()?,
            other => text(other)?.parse().ok()?,
        },
        entries,
    })
}

/// The entries of an `XREAD` reply, by stream key.
fn parse_read(reply: &Value) -> Vec<(String, Vec<Entry>)> {
    let streams: Vec<(&Value, &Value)> = match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => Some((&pair[0], &pair[1])),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .filter_map(|(key, entries)| {
            let Value::Array(entries) = entries else {
                return None;
            };
            Some((
                text(key)?.to_owned(),
                entries.iter().filter_map(parse_entry).collect(),
            ))
        })
        .collect()
}

/// One `[id, [field, value, …]]` entry; `None` (skipped) if not ours.
fn parse_entry(entry: &Value) -> Option<Entry> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return None;
    };
    let seq = text(id)?.split_once('-')?.0.parse().ok()?;
    let (mut epoch, mut name, mut kind, mut data) = (None, Vec::new(), None, Bytes::new());
    for pair in fields.chunks_exact(2) {
        let Value::BulkString(value) = &pair[1] else {
            continue;
        };
        match text(&pair[0]) {
            Some("e") => epoch = std::str::from_utf8(value).ok()?.parse().ok(),
            Some("n") => name.clone_from(value),
            Some("k") => kind = std::str::from_utf8(value).ok().and_then(|k| k.parse().ok()),
            Some("d") => data = Bytes::copy_from_slice(value),
            _ => {}
        }
    }
    // Without a position or an epoch the entry is not one of ours at all;
    // anything else wrong with it is found by `Shared::validate`.
    Some(Entry {
        seq,
        epoch: epoch?,
        name,
        kind,
        data,
    })
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// Event names read back from Redis, as the `&'static str` events carry.
/// Names come from channel declarations, so the set stays small; it is capped
/// all the same, in case something else writes into the streams.
fn intern(name: &str) -> Option<&'static str> {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(known) = names.get(name) {
        return Some(known);
    }
    if names.len() >= MAX_NAMES {
        tracing::warn!(
            name,
            "too many distinct event names in redis: entry ignored"
        );
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    Some(leaked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Delivery;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(seq: u64, epoch: &str) -> Value {
        Value::Array(vec![
            bulk(&format!("{seq}-1")),
            Value::Array(vec![
                bulk("e"),
                bulk(epoch),
                bulk("n"),
                bulk("note"),
                bulk("k"),
                bulk("1"),
                bulk("d"),
                bulk("\"x\""),
            ]),
        ])
    }

    #[test]
    fn parses_a_tail_oldest_first() {
        let reply = Value::Array(vec![
            bulk("42"),
            Value::Int(3),
            Value::Array(vec![entry(3, "42"), entry(2, "42")]),
        ]);
        let tail = parse_tail(&reply).unwrap();
        assert_eq!((tail.epoch, tail.seq), (42, 3));
        let seqs: Vec<u64> = tail.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(tail.entries[0].name, b"note");
        assert_eq!(tail.entries[0].kind, Some(1));
        assert_eq!(tail.entries[0].data.as_ref(), b"\"x\"");
    }

    #[test]
    fn parses_reads_and_skips_entries_without_an_epoch() {
        let foreign = Value::Array(vec![bulk("9-1"), Value::Array(vec![bulk("x"), bulk("y")])]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("p:{/t/a}:events"),
            Value::Array(vec![entry(1, "7"), foreign, entry(2, "7")]),
        ])]);
        let read = parse_read(&reply);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].0, "p:{/t/a}:events");
        assert_eq!(read[0].1.len(), 2);
        assert!(parse_read(&Value::Nil).is_empty());
    }

    #[test]
    fn the_run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:3f2a9c01bd\r\ntcp_port:6379\r\n";
        assert_eq!(run_id(info), Some("3f2a9c01bd"));
        assert_eq!(run_id("# Server\r\nredis_version:7.0.15\r\n"), None);
        assert_eq!(run_id("run_id:\r\n"), None);
        assert_eq!(run_id("run_id:not hex\r\n"), None);
    }

    #[test]
    fn scripts_take_the_run_id_from_the_node_not_from_info() {
        // Redis builds its whole `INFO server` text for each call: the
        // node reads it once per connection instead (see `vouch_lua!`).
        for script in [PUBLISH_LUA, LOAD_LUA, CHECK_LUA] {
            assert!(!script.contains("'INFO'"), "{script}");
        }
        assert!(PUBLISH_LUA.starts_with("local run = ARGV[8]\n"));
        assert!(LOAD_LUA.starts_with("local run = ARGV[6]\n"));
        assert!(CHECK_LUA.starts_with("local run = ARGV[3]\n"));
    }

    #[test]
    fn callers_sharing_a_failed_connect_get_an_unavailable_error() {
        let refused = RedisBrokerError::Command(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        )));
        let again = refused.again();
        assert!(again.to_string().contains("refused"), "{again}");
        assert_eq!(
            BrokerError::from(again).kind(),
            BrokerErrorKind::Unavailable
        );
        let reply = RedisBrokerError::Reply("no run_id in INFO server").again();
        assert_eq!(BrokerError::from(reply).kind(), BrokerErrorKind::Other);
    }

    #[test]
    fn a_cluster_that_cannot_serve_now_is_unavailable() {
        use redis::{ErrorKind, ServerErrorKind};
        for kind in [
            ServerErrorKind::ClusterDown,
            ServerErrorKind::TryAgain,
            ServerErrorKind::MasterDown,
            ServerErrorKind::BusyLoading,
            ServerErrorKind::Moved,
            ServerErrorKind::Ask,
        ] {
            let error = redis::RedisError::from((ErrorKind::Server(kind), "not now"));
            let error = BrokerError::from(RedisBrokerError::Command(error));
            assert_eq!(error.kind(), BrokerErrorKind::Unavailable, "{error}");
        }
        let other = redis::RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR something",
        ));
        let other = BrokerError::from(RedisBrokerError::Command(other));
        assert_eq!(other.kind(), BrokerErrorKind::Other);
    }

    #[test]
    fn a_failed_pipeline_reads_as_its_failed_command() {
        use redis::{ErrorKind, ServerErrorKind};
        let ask = redis::RedisError::from((
            ErrorKind::Server(ServerErrorKind::Ask),
            "An error was signalled by the server",
            "3999 127.0.0.1:6381".to_owned(),
        ));
        // Not a pipeline error: unchanged.
        let same = the_failure(ask);
        assert_eq!(same.redirect_node(), Some(("127.0.0.1:6381", 3999)));
    }

    const NAMES: &[&str] = &["note", "moved"];

    fn rules(epoch: u64) -> Rules {
        Rules {
            names: Some(NAMES),
            max_event_size: 64,
            epoch,
        }
    }

    fn raw(seq: u64, name: &str, kind: Option<usize>, data: &str) -> Entry {
        Entry {
            seq,
            epoch: 7,
            name: name.as_bytes().to_vec(),
            kind,
            data: Bytes::from(data.to_owned()),
        }
    }

    fn note(seq: u64) -> Entry {
        raw(seq, "note", Some(0), "{}")
    }

    fn own(n: u64) -> Outgoing {
        Outgoing {
            name: "note",
            kind_index: 0,
            data: Bytes::from(format!("{n}")),
        }
    }

    fn newest_data(log: &Arc<TopicLog>) -> Vec<u8> {
        let before = Cursor::new(log.epoch(), log.newest().seq() - 1);
        let mut subscription = log.subscribe(Start::After(before)).expect("subscribe");
        let mut items = Vec::new();
        subscription.fill(&mut items, 64);
        match items.last() {
            Some(crate::history::Delivery::Event(event)) => event.data().to_vec(),
            other => panic!("no event: {other:?}"),
        }
    }

    #[test]
    fn own_events_back_out_of_order_are_held_then_appended_in_order() {
        let log = Arc::new(TopicLog::new(7, 16));
        let early = Early::default();
        append_own(&log, &early, 1, own(1));
        // 3 and 4 come back before 2: held, not appended, not lost.
        append_own(&log, &early, 3, own(3));
        append_own(&log, &early, 4, own(4));
        assert_eq!(log.newest().seq(), 1);
        assert_eq!(early.lock().unwrap().len(), 2);
        append_own(&log, &early, 2, own(2));
        assert_eq!(log.newest().seq(), 4);
        assert_eq!(newest_data(&log), b"4");
        assert!(early.lock().unwrap().is_empty());

        // 6 is held; the reader brings 5 and 6 from Redis first: the held
        // copy is forgotten, never appended twice.
        append_own(&log, &early, 6, own(6));
        let _ = log.append_at(5, own(5));
        let _ = log.append_at(6, own(60));
        append_early(&log, &early);
        assert_eq!(log.newest().seq(), 6);
        assert_eq!(newest_data(&log), b"60");
        assert!(early.lock().unwrap().is_empty());

        // At most MAX_EARLY held; beyond, the reader brings them.
        for seq in 8..8 + MAX_EARLY as u64 + 10 {
            append_own(&log, &early, seq, own(seq));
        }
        assert_eq!(early.lock().unwrap().len(), MAX_EARLY);
        append_own(&log, &early, 7, own(7));
        assert_eq!(log.newest().seq(), 7 + MAX_EARLY as u64);
    }

    #[test]
    fn entries_missing_before_one_become_a_gap() {
        let log = TopicLog::new(7, 8);
        let invalid = apply_entries(
            &log,
            vec![note(1), note(2), note(5), note(5), note(6)],
            &rules(7),
        );
        assert!(invalid.is_empty());
        assert_eq!(log.newest(), Cursor::new(7, 6));
        assert_eq!(log.len(), 2);
    }

    #[test]
    fn invalid_entries_become_counted_gaps_never_bytes() {
        let log = Arc::new(TopicLog::new(7, 16));
        let mut sub = log.subscribe(Start::After(Cursor::new(7, 0))).unwrap();
        let mut other_epoch = note(9);
        other_epoch.epoch = 8;
        let entries = vec![
            note(1),
            // What would inject lines into SSE or script into the frame.
            raw(2, "note\nid: 1-1\ndata: x", Some(0), "{}"),
            raw(3, "note", Some(0), "1)</script><script>alert(1)"),
            raw(4, "unknown", Some(0), "{}"),
            raw(5, "moved", Some(0), "{}"),
            raw(6, "note", Some(0), &format!("\"{}\"", "x".repeat(64))),
            raw(7, "note", None, "{\"ok\":true}"),
            raw(8, "moved", Some(1), "[1,2]"),
            other_epoch,
        ];
        let invalid = apply_entries(&log, entries, &rules(7));
        let seqs: Vec<u64> = invalid.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5, 6, 9], "{invalid:?}");
        let mut out = Vec::new();
        sub.fill(&mut out, 32);
        let items: Vec<String> = out
            .iter()
            .map(|item| match item {
                Delivery::Event(e) => format!("{} {}", e.cursor().seq(), e.name()),
                Delivery::Gap(g) => format!("gap {}..{}", g.from.seq(), g.to.seq()),
            })
            .collect();
        // Every invalid entry is a gap; the valid ones arrive as events.
        assert_eq!(
            items,
            ["1 note", "gap 1..6", "7 note", "8 moved", "gap 8..9"]
        );
        // Read again (overlapping reads): not counted twice.
        assert!(apply_entries(&log, vec![raw(9, "x", None, "")], &rules(7)).is_empty());
    }

    #[test]
    fn without_registered_names_the_wire_name_rules_apply() {
        let rules = Rules {
            names: None,
            max_event_size: 64,
            epoch: 7,
        };
        assert!(validate(&rules, raw(1, "a.b-c_d:e", Some(3), "1")).is_ok());
        for bad in ["", "push.ready", "a b", "a\nb", "é"] {
            assert!(
                validate(&rules, raw(1, bad, Some(0), "1")).is_err(),
                "{bad:?}"
            );
        }
        assert!(validate(&rules, raw(1, "a", None, "1")).is_err(), "no kind");
    }
}

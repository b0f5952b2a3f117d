//! The Redis broker on a Redis Cluster: topics spread over the shards.
//!
//! Both keys of a topic carry the same hash tag (`{channel/topic}`), so each
//! topic lives in one slot and its scripts stay atomic. The node keeps the
//! cluster's slot map (`CLUSTER SLOTS`), one command connection per primary
//! (a [`Commands`], pipelined) and one reader per primary: a RESP3
//! connection subscribed (`SSUBSCRIBE`, sharded pub/sub) to the `…:live`
//! channel of every mirrored topic that the primary serves. The publish
//! script announces each event on that channel in the same atomic step
//! that appends it to the stream, so a reader gets events in order, as
//! they are written; the stream stays the truth: a reader that reconnects,
//! sees a hole, or subscribes a new topic catches up from it.
//!
//! `MOVED` updates the map and retries on the new owner, `ASK` retries once
//! on the importing node (after `ASKING`), `TRYAGAIN` and `CLUSTERDOWN`
//! wait briefly and retry; a lost primary makes the node read the map again
//! (from any node it knows) until the cluster has promoted a replica. The
//! epoch rules are those of one server (see `vouch_lua!`): a topic whose keys
//! were written by another Redis process (a promoted replica, a slot
//! migrated from another primary) moves to a new epoch, and subscribers get
//! a gap.

use super::slots::{SlotMap, key_slot};
use super::{Call, Commands, Entry, RedisBrokerError, RedisConfig, Shared, Target, client_info};
use crate::broker::TopicKey;
use bytes::Bytes;
use redis::{AsyncConnectionConfig, ConnectionInfo, PushKind, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most attempts of one command across redirections and retries (each
/// also bounded in time: [`RedisConfig::command_timeout`] in all).
const MAX_ATTEMPTS: u32 = 32;
/// The longest pause between two attempts after a `TRYAGAIN` (a slot
/// whose keys are moving) or a `CLUSTERDOWN`.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pushes (sharded pub/sub messages) a reader holds before it stops
/// queueing them and catches up from the streams instead.
const PUSH_QUEUE: usize = 8192;

/// The cluster as a node sees it: its slot map and a command connection per
/// primary.
pub(super) struct Cluster {
    config: RedisConfig,
    /// The seed nodes, then any node the map named.
    seeds: Vec<ConnectionInfo>,
    /// How to reach a node: a seed's settings (credentials, TCP) with
    /// another address.
    template: ConnectionInfo,
    map: RwLock<Arc<SlotMap>>,
    shards: Mutex<HashMap<Arc<str>, Arc<Commands>>>,
    /// Held while the map is read again; the time of the last reading.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    /// Bumped when the map changes: readers start or stop.
    topology: AtomicU64,
    topology_changed: tokio::sync::Notify,
    /// Readers connected now.
    connected: AtomicUsize,
    /// Each reader's lag at its last check.
    lags: Mutex<HashMap<Arc<str>, u64>>,
}

impl Cluster {
    /// Reads the slot map from the first seed that answers with a full one.
    pub(super) async fn connect(
        urls: &[String],
        config: &RedisConfig,
    ) -> Result<Self, RedisBrokerError> {
        if config.key_prefix.contains(['{', '}']) {
            return Err(RedisBrokerError::Config(format!(
                "the key prefix {:?} has a brace: on a cluster, braces are the topics' hash tags",
                config.key_prefix
            )));
        }
        let seeds = urls
            .iter()
            .map(|url| client_info(url.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(template) = seeds.first().cloned() else {
            return Err(RedisBrokerError::NoPrimary(
                "no cluster node address given".to_owned(),
            ));
        };
        let cluster = Self {
            config: config.clone(),
            seeds,
            template,
            map: RwLock::new(Arc::new(SlotMap::empty())),
            shards: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(None),
            topology: AtomicU64::new(0),
            topology_changed: tokio::sync::Notify::new(),
            connected: AtomicUsize::new(0),
            lags: Mutex::default(),
        };
        let map = cluster.read_map().await?;
        *cluster.map.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
        Ok(cluster)
    }

    pub(super) fn map(&self) -> Arc<SlotMap> {
        Arc::clone(&self.map.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// How to reach the node at `addr` (`host:port`).
    fn info(&self, addr: &str) -> Result<ConnectionInfo, RedisBrokerError> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or_else(|| RedisBrokerError::NoPrimary(format!("bad node address {addr:?}")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(self
            .template
            .clone()
            .set_addr(redis::ConnectionAddr::Tcp(host.to_owned(), port)))
    }

    /// The command connection of the primary at `addr`.
    fn commands(&self, addr: &Arc<str>) -> Result<Arc<Commands>, RedisBrokerError> {
        let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(commands) = shards.get(addr) {
            return Ok(Arc::clone(commands));
        }
        let client = redis::Client::open(self.info(addr)?)?;
        let commands = Arc::new(Commands::new(
            Arc::new(Target::Server(client)),
            &self.config,
        ));
        shards.insert(Arc::clone(addr), Arc::clone(&commands));
        Ok(commands)
    }

    /// Asks each known node in turn for the slot map.
    async fn read_map(&self) -> Result<SlotMap, RedisBrokerError> {
        let mut asked: Vec<ConnectionInfo> = self
            .map()
            .primaries()
            .iter()
            .filter_map(|addr| self.info(addr).ok())
            .collect();
        asked.extend(self.seeds.iter().cloned());
        let mut failures = Vec::new();
        for info in asked {
            let name = info.addr().to_string();
            match self.slots_of(&info).await {
                Ok(map) => return Ok(map),
                Err(failure) => failures.push(format!("{name}: {failure}")),
            }
        }
        Err(RedisBrokerError::NoPrimary(format!(
            "no cluster node answered with a full slot map ({})",
            failures.join("; ")
        )))
    }

    async fn slots_of(&self, info: &ConnectionInfo) -> Result<SlotMap, String> {
        let host = match info.addr() {
            redis::ConnectionAddr::Tcp(host, _) => host.clone(),
            other => other.to_string(),
        };
        let client = redis::Client::open(info.clone()).map_err(|e| e.to_string())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.command_timeout))
            .set_response_timeout(Some(self.config.command_timeout));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("unreachable ({e})"))?;
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("CLUSTER SLOTS failed ({e})"))?;
        SlotMap::parse(&reply, &host)
    }

    /// Reads the map again, unless that was done less than the minimal
    /// reconnect backoff ago (callers that arrive meanwhile share the
    /// reading under way). Returns whether the map changed.
    pub(super) async fn refresh(&self) -> bool {
        let seen = self.topology.load(Ordering::SeqCst);
        let mut last = self.refreshing.lock().await;
        if self.topology.load(Ordering::SeqCst) != seen {
            return true;
        }
        if last.is_some_and(|at| at.elapsed() < self.config.backoff_min) {
            return false;
        }
        *last = Some(Instant::now());
        match self.read_map().await {
            Ok(map) => self.install(map),
            Err(error) => {
                tracing::debug!(%error, "reading the cluster's slot map failed");
                false
            }
        }
    }

    /// Makes `map` the current map; true if it differs from the last one.
    fn install(&self, map: SlotMap) -> bool {
        {
            let mut current = self.map.write().unwrap_or_else(|p| p.into_inner());
            if **current == map {
                return false;
            }
            *current = Arc::new(map);
        }
        let primaries = self.map();
        self.shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|addr, _| primaries.primaries().contains(addr));
        self.topology.fetch_add(1, Ordering::SeqCst);
        self.topology_changed.notify_waiters();
        true
    }

    /// Records a `MOVED` answer.
    fn moved(&self, slot: u16, addr: &str) {
        let mut map = (*self.map()).clone();
        map.moved(slot, addr);
        self.install(map);
    }

    /// Runs a script on the primary serving `slot`, following the cluster's
    /// redirections.
    pub(super) async fn invoke<T: redis::FromRedisValue>(
        &self,
        slot: u16,
        call: &Call<'_>,
    ) -> Result<T, RedisBrokerError> {
        let mut ask: Option<Arc<str>> = None;
        let mut attempt = 0;
        let deadline = Instant::now() + self.config.command_timeout;
        loop {
            attempt += 1;
            let (addr, asking) = match ask.take() {
                Some(addr) => (addr, true),
                None => match self.map().owner(slot) {
                    Some(addr) => (Arc::clone(addr), false),
                    None => {
                        return Err(RedisBrokerError::NoPrimary(format!(
                            "no primary serves slot {slot}"
                        )));
                    }
                },
            };
            let commands = self.commands(&addr)?;
            let result = if asking {
                commands.eval_asking(call).await
            } else {
                commands.eval(call).await
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if attempt >= MAX_ATTEMPTS || Instant::now() >= deadline {
                return Err(error);
            }
            let RedisBrokerError::Command(redis_error) = &error else {
                // Not connected (a backoff under way): the primary may be
                // gone; if the map names another one, try it.
                if self.refresh().await {
                    continue;
                }
                return Err(error);
            };
            let pause = (Duration::from_millis(10) * attempt)
                .min(MAX_RETRY_PAUSE)
                .min(deadline.saturating_duration_since(Instant::now()));
            if attempt > 3
                && matches!(
                    redis_error.kind(),
                    redis::ErrorKind::Server(
                        redis::ServerErrorKind::Moved | redis::ServerErrorKind::Ask
                    )
                )
            {
                // Redirections that do not settle: a slot that moves
                // (TRYAGAIN on one side, ASK on the other) or nodes that do
                // not agree yet on where it went. Follow them, not at once.
                tokio::time::sleep(pause).await;
            }
            match redis_error.kind() {
                redis::ErrorKind::Server(redis::ServerErrorKind::Moved) => {
                    if let Some((to, moved_slot)) = redis_error.redirect_node() {
                        self.moved(moved_slot, to);
                    }
                }
                redis::ErrorKind::Server(redis::ServerErrorKind::Ask) => {
                    let Some((to, _)) = redis_error.redirect_node() else {
                        return Err(error);
                    };
                    ask = Some(Arc::from(to));
                }
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::MasterDown
                    | redis::ServerErrorKind::BusyLoading,
                ) => {
                    // Until the keys of the slot are together again (a
                    // migration moves them one by one), or the cluster
                    // has promoted a replica.
                    tokio::time::sleep(pause).await;
                }
                _ if redis_error.is_io_error()
                    || redis_error.is_connection_dropped()
                    || redis_error.is_connection_refusal()
                    || redis_error.is_timeout()
                    || redis_error.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly) =>
                {
                    if !self.refresh().await {
                        return Err(error);
                    }
                }
                _ => return Err(error),
            }
        }
    }

    /// Whether every primary has its reader connected.
    pub(super) fn readers_connected(&self) -> bool {
        let primaries = self.map().primaries().len();
        primaries > 0 && self.connected.load(Ordering::SeqCst) >= primaries
    }

    /// The largest lag any reader saw at its last check.
    pub(super) fn lag(&self) -> u64 {
        let lags = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        lags.values().copied().max().unwrap_or(0)
    }
}

/// The slot of a topic: its meta key's.
pub(super) fn slot(meta: &str) -> u16 {
    key_slot(meta.as_bytes())
}

/// The readers of a node, one per primary, stopped when dropped (with the
/// task that holds them).
#[derive(Default)]
struct Readers(HashMap<Arc<str>, JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for reader in self.0.values() {
            reader.abort();
        }
    }
}

/// The node's cluster task: a reader for each primary of the current map,
/// the map read again every epoch check (a migration or a failover shows
/// there first), and idle mirrors dropped.
pub(super) async fn run(shared: Arc<Shared>, cluster: Arc<Cluster>) {
    let mut readers = Readers::default();
    loop {
        let changed = cluster.topology_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let map = cluster.map();
        readers.0.retain(|addr, reader| {
            let keep = map.primaries().contains(addr) && !reader.is_finished();
            if !keep {
                reader.abort();
                cluster
                    .lags
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(addr);
            }
            keep
        });
        for addr in map.primaries() {
            if !readers.0.contains_key(addr) {
                let reader = tokio::spawn(read_shard_loop(
                    Arc::clone(&shared),
                    Arc::clone(&cluster),
                    Arc::clone(addr),
                ));
                readers.0.insert(Arc::clone(addr), reader);
            }
        }
        let check = tokio::time::sleep(shared.config.epoch_check);
        tokio::select! {
            () = &mut changed => {}
            () = check => {
                shared.drop_idle_mirrors();
                cluster.refresh().await;
            }
        }
    }
}

/// One primary's reader: reconnects with backoff while the map names the
/// primary, and ends when it no longer does.
async fn read_shard_loop(shared: Arc<Shared>, cluster: Arc<Cluster>, addr: Arc<str>) {
    let mut backoff = shared.config.backoff_min;
    let mut outage_since: Option<Instant> = None;
    loop {
        if !cluster.map().primaries().contains(&addr) {
            return;
        }
        let mut reader = ShardReader {
            shared: &shared,
            cluster: &cluster,
            addr: &addr,
            subscribed: HashMap::new(),
        };
        let error = reader.read(&mut outage_since, &mut backoff).await;
        if outage_since.is_none() {
            tracing::warn!(%addr, %error, "a redis cluster primary is unreachable: live events of its topics pause, reconnecting with backoff");
            outage_since = Some(Instant::now());
        }
        cluster.refresh().await;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(shared.config.backoff_max);
    }
}

struct ShardReader<'a> {
    shared: &'a Shared,
    cluster: &'a Cluster,
    addr: &'a Arc<str>,
    /// The channels subscribed, with their topics.
    subscribed: HashMap<String, TopicKey>,
}

/// Counts a connected reader while it lives.
struct Connected<'a>(&'a AtomicUsize);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ShardReader<'_> {
    /// Follows the primary's topics until the connection fails.
    async fn read(
        &mut self,
        outage_since: &mut Option<Instant>,
        backoff: &mut Duration,
    ) -> RedisBrokerError {
        let (sender, mut pushes) = mpsc::channel(PUSH_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let overflowed = Arc::clone(&overflow);
        let push_sender = move |info: redis::PushInfo| -> Result<(), std::convert::Infallible> {
            if let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(info) {
                overflowed.store(true, Ordering::SeqCst);
            }
            Ok(())
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.shared.config.command_timeout))
            .set_response_timeout(Some(self.shared.config.command_timeout))
            .set_push_sender(push_sender);
        let info = match self.cluster.info(self.addr) {
            Ok(info) => info,
            Err(error) => return error,
        };
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = match redis::Client::open(info.set_redis_settings(settings)) {
            Ok(client) => client,
            Err(error) => return error.into(),
        };
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => conn,
            Err(error) => return error.into(),
        };
        self.cluster.connected.fetch_add(1, Ordering::SeqCst);
        let _connected = Connected(&self.cluster.connected);
        if let Some(since) = outage_since.take() {
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                addr = %self.addr,
                down_ms = since.elapsed().as_millis() as u64,
                "a redis cluster primary is reachable again: catching up from the streams"
            );
        }
        *backoff = self.shared.config.backoff_min;
        let mut next_check = Instant::now() + self.shared.config.epoch_check;
        // The topic set and the map last followed (`None`: follow now).
        let mut followed: Option<(u64, u64)> = None;
        loop {
            let interest = self.shared.interest.notified();
            tokio::pin!(interest);
            interest.as_mut().enable();
            let now = (
                self.shared.generation.load(Ordering::SeqCst),
                self.cluster.topology.load(Ordering::SeqCst),
            );
            if followed != Some(now) {
                if let Err(error) = self.follow(&mut conn).await {
                    return error;
                }
                followed = Some(now);
            }
            if overflow.swap(false, Ordering::SeqCst) {
                // Pushes were dropped: read every topic from its stream.
                while pushes.try_recv().is_ok() {}
                let keys: Vec<TopicKey> = self.subscribed.values().cloned().collect();
                for key in keys {
                    self.catch_up(&key).await;
                }
            }
            let check = tokio::time::sleep_until(next_check.into());
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else {
                        return RedisBrokerError::Reply("the reader's connection closed");
                    };
                    if let Err(error) = self.handle(push).await {
                        return error;
                    }
                    while let Ok(push) = pushes.try_recv() {
                        if let Err(error) = self.handle(push).await {
                            return error;
                        }
                    }
                }
                () = &mut interest => {}
                () = check => {
                    // Runs on the command connections, not this one: a
                    // failure is the next check's to retry.
                    if let Err(error) = self.check().await {
                        tracing::debug!(addr = %self.addr, %error, "an epoch check failed");
                    }
                    next_check = Instant::now() + self.shared.config.epoch_check;
                    // Mirrors dropped meanwhile are unsubscribed.
                    followed = None;
                }
            }
        }
    }

    /// Subscribes the channels of the mirrored topics this primary serves,
    /// catching each new one up from its stream, and unsubscribes those no
    /// longer mirrored (or moved to another primary).
    async fn follow(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), RedisBrokerError> {
        let map = self.cluster.map();
        let wanted: HashMap<String, TopicKey> = self
            .shared
            .mirrored()
            .into_iter()
            .filter_map(|key| {
                let (meta, _) = self.shared.keys(&key);
                (map.owner(slot(&meta)) == Some(self.addr)).then(|| (self.shared.live(&key), key))
            })
            .collect();
        let gone: Vec<String> = self
            .subscribed
            .keys()
            .filter(|channel| !wanted.contains_key(*channel))
            .cloned()
            .collect();
        for channel in gone {
            self.subscribed.remove(&channel);
            let _: Value = redis::cmd("SUNSUBSCRIBE")
                .arg(&channel)
                .query_async(conn)
                .await?;
        }
        for (channel, key) in wanted {
            if self.subscribed.contains_key(&channel) {
                continue;
            }
            let subscribed: Result<Value, _> = redis::cmd("SSUBSCRIBE")
                .arg(&channel)
                .query_async(conn)
                .await;
            match subscribed {
                Ok(_) => {}
                // The slot moved and the map is behind: the new owner's
                // reader takes the topic once the map is updated.
                Err(error)
                    if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved) =>
                {
                    if let Some((to, moved)) = error.redirect_node() {
                        self.cluster.moved(moved, to);
                    }
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
            self.subscribed.insert(channel, key.clone());
            // What was published before the subscription took effect.
            self.catch_up(&key).await;
        }
        Ok(())
    }

    /// Reads `key`'s stream on from the mirror's newest event. A failure
    /// (on the command connection, not the reader's) is left to the next
    /// epoch check, which catches up any mirror behind Redis.
    async fn catch_up(&self, key: &TopicKey) {
        if let Err(error) = self.shared.refresh(key).await {
            tracing::debug!(addr = %self.addr, topic = %key.topic, %error, "catching a topic up failed: the next epoch check retries");
        }
    }

    async fn handle(&mut self, push: redis::PushInfo) -> Result<(), RedisBrokerError> {
        match push.kind {
            PushKind::SMessage => {
                let (Some(Value::BulkString(channel)), Some(payload)) =
                    (push.data.first(), push.data.get(1))
                else {
                    return Ok(());
                };
                let Some(key) = std::str::from_utf8(channel)
                    .ok()
                    .and_then(|channel| self.subscribed.get(channel))
                    .cloned()
                else {
                    return Ok(());
                };
                {
                    let Some(log) = self.shared.peek(&key) else {
                        return Ok(());
                    };
                    let newest = log.newest().seq();
                    match parse_live(payload) {
                        Some(entry) if entry.seq <= newest => return Ok(()),
                        Some(entry) if entry.epoch == log.epoch() && entry.seq == newest + 1 => {
                            self.shared.apply_entries(&key, &log, vec![entry]);
                            return Ok(());
                        }
                        _ => {}
                    }
                }
                // Another epoch, a hole (messages lost while the
                // subscription moved), or a message that does not parse:
                // the stream says what happened (the log not held meanwhile).
                self.catch_up(&key).await;
                Ok(())
            }
            PushKind::SUnsubscribe => {
                // Unsubscribed by the server: the slot moved to another
                // primary, whose reader takes the topic over once the map
                // says so.
                if let Some(Value::BulkString(channel)) = push.data.first()
                    && let Ok(channel) = std::str::from_utf8(channel)
                    && self.subscribed.remove(channel).is_some()
                {
                    tracing::debug!(addr = %self.addr, channel, "a shard channel moved away");
                    self.cluster.refresh().await;
                }
                Ok(())
            }
            PushKind::Disconnection => {
                Err(RedisBrokerError::Reply("the reader's connection closed"))
            }
            _ => Ok(()),
        }
    }

    /// The epoch check of this primary's topics, one script per slot.
    async fn check(&mut self) -> Result<(), RedisBrokerError> {
        let mut by_slot: HashMap<u16, Vec<TopicKey>> = HashMap::new();
        for key in self.subscribed.values() {
            let (meta, _) = self.shared.keys(key);
            by_slot.entry(slot(&meta)).or_default().push(key.clone());
        }
        let mut lag = 0;
        for keys in by_slot.into_values() {
            lag = lag.max(self.shared.check_on(&keys, None).await?);
        }
        self.cluster
            .lags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Arc::clone(self.addr), lag);
        Ok(())
    }
}

/// Parses what the publish script announces on a topic's live channel:
/// `<epoch> <seq> <kind> <name> <data>`.
fn parse_live(payload: &Value) -> Option<Entry> {
    let Value::BulkString(bytes) = payload else {
        return None;
    };
    let mut parts = bytes.splitn(5, |&b| b == b' ');
    let epoch = number(parts.next())?;
    let seq = number(parts.next())?;
    let kind = usize::try_from(number(parts.next())?).ok()?;
    let name = parts.next()?.to_vec();
    let data = Bytes::copy_from_slice(parts.next()?);
    (seq > 0).then_some(Entry {
        seq,
        epoch,
        name,
        kind: Some(kind),
        data,
    })
}

/// A decimal number, from the text of one field.
fn number(field: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(field?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_messages_parse_or_are_refused() {
        let entry = parse_live(&Value::BulkString(b"17 3 1 said {\"a\": \"b c\"}".to_vec()))
            .expect("a message");
        assert_eq!((entry.epoch, entry.seq, entry.kind), (17, 3, Some(1)));
        assert_eq!(entry.name, b"said");
        assert_eq!(entry.data.as_ref(), b"{\"a\": \"b c\"}");
        for bad in [
            &b""[..],
            b"17",
            b"17 3 1 said",
            b"x 3 1 said {}",
            b"17 0 1 said {}",
            b"17 3 -1 said {}",
        ] {
            assert!(
                parse_live(&Value::BulkString(bad.to_vec())).is_none(),
                "{bad:?}"
            );
        }
        assert!(parse_live(&Value::Nil).is_none());
    }
}

//! `faults run`: a Redis (or with `--cluster` a Redis Cluster), N nodes,
//! proxies, subscribers on every transport, publishers, faults on a seeded
//! schedule; then the checker.

use crate::check::{self, Record};
use crate::cluster::Cluster;
use crate::faults::{Kind, Rng};
use crate::probe::TOPIC;
use crate::procs::{Node, Redis, loopback};
use crate::proxy::Proxy;
use crate::report::{self, Report};
use crate::traffic::{Clock, Published, Publisher, Subscriber, TRANSPORTS};
use push_runtime::Cursor;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub duration: Duration,
    pub nodes: usize,
    pub clients_per_transport: usize,
    pub publishers: u32,
    pub rate: f64,
    pub faults: Vec<Kind>,
    /// An existing Redis to use (e.g. the one of your own deployment)
    /// instead of starting one; the faults that kill Redis are refused then.
    pub redis: Option<SocketAddr>,
    /// Start a Redis Cluster instead of one Redis; one topic per shard.
    pub cluster: bool,
    /// The bounds of the pause between two faults.
    pub pause: (Duration, Duration),
    /// The longest wait for clients to catch up at the end.
    pub catch_up: Duration,
    /// Keep the run's directory (logs, Redis files) even when it passes.
    pub keep: bool,
}

/// Everything a run started; dropping it kills every process.
pub struct World {
    pub dir: PathBuf,
    pub prefix: String,
    pub clock: Clock,
    pub rng: Rng,
    /// The primary, when the harness runs its own (else `--redis`).
    pub redis: Option<Redis>,
    /// With `replica-promote`: a replica of the primary, through `repl_proxy`.
    pub replica: Option<Redis>,
    /// The replica's link to the primary: the harness cuts it to make the replica lag.
    pub repl_proxy: Option<Proxy>,
    /// How many Redis directories were made (each server gets its own).
    pub redis_dirs: usize,
    /// Nodes reach Redis through it: the harness can cut that link (not
    /// with a cluster, whose nodes the broker reaches directly).
    pub redis_proxy: Option<Proxy>,
    /// With `--cluster`: the cluster the nodes use.
    pub cluster: Option<Cluster>,
    /// The probe topics: one against a single Redis, one per shard of a
    /// cluster.
    pub topics: Vec<String>,
    /// Clients and publishers reach the nodes through it.
    pub front: Proxy,
    pub nodes: Vec<Option<Node>>,
    pub subscribers: Vec<Subscriber>,
}

impl World {
    /// The Redis the harness started, for the faults that kill or restart it.
    pub fn own_redis(&mut self) -> Result<&mut Redis, String> {
        self.redis
            .as_mut()
            .ok_or_else(|| "this fault needs a Redis of the harness's own (no --redis)".to_owned())
    }

    /// The proxy between the nodes and the single Redis.
    pub fn redis_proxy(&self) -> Result<&Proxy, String> {
        self.redis_proxy
            .as_ref()
            .ok_or_else(|| "this fault needs a single Redis (not --cluster)".to_owned())
    }

    /// The cluster, for the cluster faults.
    pub fn cluster(&mut self) -> Result<&mut Cluster, String> {
        self.cluster
            .as_mut()
            .ok_or_else(|| "this fault needs a Redis Cluster (--cluster)".to_owned())
    }

    pub fn node_log(&self, index: usize) -> PathBuf {
        self.dir.join(format!("node-{index}.log"))
    }

    /// Starts a replica of the current primary, through the replication
    /// proxy (made on first use), and waits until it has synced.
    pub async fn start_replica(&mut self) -> Result<(), String> {
        let primary = Some(loopback(self.own_redis()?.port));
        let link = match &self.repl_proxy {
            Some(proxy) => {
                proxy.set_target(0, primary);
                proxy.unblock();
                proxy.addr.port()
            }
            None => {
                let proxy = Proxy::start(vec![primary])
                    .await
                    .map_err(|e| e.to_string())?;
                let port = proxy.addr.port();
                self.repl_proxy = Some(proxy);
                port
            }
        };
        self.redis_dirs += 1;
        let dir = self.dir.join(format!("redis-{}", self.redis_dirs));
        let replica = Redis::start(&dir, Some(link)).await?;
        replica.wait_synced().await?;
        self.replica = Some(replica);
        Ok(())
    }

    /// A node's Redis arguments: the single Redis through its proxy, or
    /// the cluster's seed URLs.
    pub fn node_redis_args(&self) -> Vec<String> {
        match (&self.cluster, &self.redis_proxy) {
            (Some(cluster), _) => vec!["--redis-cluster".to_owned(), cluster.urls().join(",")],
            (None, Some(proxy)) => vec!["--redis".to_owned(), format!("redis://{}", proxy.addr)],
            (None, None) => Vec::new(),
        }
    }

    /// Starts node `index` (again) and puts it back in the front proxy's rotation.
    pub async fn start_node(&mut self, index: usize) -> Result<(), String> {
        let node =
            Node::start(&self.node_redis_args(), &self.prefix, &self.node_log(index)).await?;
        self.front.set_target(index, Some(node.addr));
        self.nodes[index] = Some(node);
        Ok(())
    }
}

pub async fn run(o: Options) -> Result<bool, String> {
    if o.redis.is_some()
        && let Some(kind) = o.faults.iter().find(|kind| kind.needs_own_redis())
    {
        return Err(format!(
            "{kind} needs a Redis of the harness's own: drop --redis"
        ));
    }
    if o.cluster
        && let Some(kind) = o.faults.iter().find(|kind| kind.needs_single_redis())
    {
        return Err(format!(
            "{kind} acts on one Redis server, not on a cluster: drop it or --cluster \
             (a cluster's Redis faults: redis-link, cluster-failover, slot-migrate)"
        ));
    }
    if !o.cluster
        && let Some(kind) = o.faults.iter().find(|kind| kind.needs_cluster())
    {
        return Err(format!("{kind} needs a Redis Cluster: add --cluster"));
    }
    let dir = std::env::temp_dir().join(format!("faults-{}-seed{}", std::process::id(), o.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = crate::interruptible(run_in(&o, &dir)).await;
    match &result {
        Ok(true) if !o.keep => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => eprintln!("faults: logs and Redis files kept in {}", dir.display()),
    }
    result
}

async fn run_in(o: &Options, dir: &std::path::Path) -> Result<bool, String> {
    let clock = Clock(Instant::now());
    let mut rng = Rng::new(o.seed);
    let front = Proxy::start(vec![None; o.nodes])
        .await
        .map_err(|e| e.to_string())?;
    // The Redis side: a cluster, or one Redis (ours or `--redis`) behind a proxy.
    let (redis, redis_proxy, cluster, topics, prefix) = if o.cluster {
        // Ports: not from the run's seed (runs side by side would collide).
        let mut ports = Rng::new(u64::from(std::process::id()) ^ clock_nanos() as u64);
        let cluster = Cluster::start(&dir.join("cluster"), 3, 1, &mut ports).await?;
        let topics = cluster.spread_topics().await?;
        eprintln!(
            "faults: a Redis Cluster of {} servers ready after {} ms; topics {}",
            cluster.servers.len(),
            clock.ms(),
            topics.join(", ")
        );
        let prefix = format!("faults:{}", o.seed);
        (None, None, Some(cluster), topics, prefix)
    } else {
        let (redis, redis_addr, prefix) = match o.redis {
            Some(addr) => {
                // Keys of their own in a Redis that others use.
                let prefix = format!("faults:{}:{}:{}", o.seed, std::process::id(), clock_nanos());
                (None, addr, prefix)
            }
            None => {
                let redis = Redis::start(&dir.join("redis-0"), None).await?;
                let addr = loopback(redis.port);
                (Some(redis), addr, format!("faults:{}", o.seed))
            }
        };
        let redis_proxy = Proxy::start(vec![Some(redis_addr)])
            .await
            .map_err(|e| e.to_string())?;
        let topics = vec![TOPIC.to_owned()];
        (redis, Some(redis_proxy), None, topics, prefix)
    };
    let mut world = World {
        dir: dir.to_owned(),
        prefix,
        clock,
        rng: Rng::new(rng.next_u64()),
        redis,
        replica: None,
        repl_proxy: None,
        redis_dirs: 0,
        redis_proxy,
        cluster,
        topics,
        front,
        nodes: (0..o.nodes).map(|_| None).collect(),
        subscribers: Vec::new(),
    };
    if o.faults.contains(&Kind::ReplicaPromote) {
        world.start_replica().await?;
    }
    for index in 0..o.nodes {
        world.start_node(index).await?;
    }
    let base = format!("http://{}", world.front.addr);
    for transport in TRANSPORTS {
        for index in 0..o.clients_per_transport {
            // About one client in three is slow: it sleeps after each item.
            let slow_ms = if rng.range(0, 2) == 0 {
                rng.range(2, 8)
            } else {
                0
            };
            // Clients take the topics in turn: each gets a mix of transports.
            let topic = world.subscribers.len() % world.topics.len();
            world.subscribers.push(Subscriber::start(
                &base,
                &world.topics,
                topic,
                transport,
                index,
                slow_ms,
                clock,
            )?);
        }
    }
    crate::procs::wait_until("every client is ready", Duration::from_secs(30), || {
        let ready = world.subscribers.iter().all(Subscriber::has_started);
        async move { ready }
    })
    .await?;
    eprintln!(
        "faults: {} nodes, {} clients ready after {} ms; publishing for {:?}",
        o.nodes,
        world.subscribers.len(),
        clock.ms(),
        o.duration
    );

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Mutex::new(Published::default()));
    let mut publishers = Vec::new();
    for index in 0..o.publishers {
        publishers.push(Publisher::start(
            &base,
            &world.topics,
            index,
            o.rate,
            clock,
            Arc::clone(&stop),
            Arc::clone(&published),
        )?);
    }
    let publishing_since = Instant::now();
    let end = publishing_since + o.duration;
    let mut injected: BTreeMap<Kind, usize> = BTreeMap::new();
    // Faults stop a little before the end, so the last one settles while
    // events still flow.
    let faults_end = end
        - (o.duration / 10)
            .max(Duration::from_secs(3))
            .min(o.duration);
    if !o.faults.is_empty() {
        tokio::time::sleep(Duration::from_secs(2).min(o.duration / 4)).await;
        while Instant::now() < faults_end {
            let kind = world.rng.pick(&o.faults);
            let started = clock.ms();
            crate::inject::inject(&mut world, kind).await?;
            eprintln!(
                "faults: {kind} at {started} ms, {} ms",
                clock.ms() - started
            );
            *injected.entry(kind).or_default() += 1;
            let (low, high) = o.pause;
            let pause = world.rng.millis(millis(low), millis(high));
            tokio::time::sleep(pause.min(faults_end.saturating_duration_since(Instant::now())))
                .await;
        }
    }
    tokio::time::sleep_until(end).await;
    stop.store(true, Ordering::SeqCst);
    for publisher in publishers {
        publisher.join().await;
    }
    let published = std::mem::take(&mut *published.lock().unwrap_or_else(|p| p.into_inner()));

    // Every client catches up with its topic's newest acknowledged cursor (bounded).
    let targets: Vec<Option<Cursor>> = (0..world.topics.len())
        .map(|topic| newest(&published.acks, topic))
        .collect();
    let caught_up = |world: &World| {
        world.subscribers.iter().all(|s| {
            s.ended.load(Ordering::SeqCst)
                || match (s.position(), targets[s.topic]) {
                    (_, None) => true,
                    (Some(at), Some(target)) => {
                        at.epoch() == target.epoch() && at.seq() >= target.seq()
                    }
                    (None, Some(_)) => false,
                }
        })
    };
    let catch_up_deadline = Instant::now() + o.catch_up;
    while !caught_up(&world) && Instant::now() < catch_up_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_caught_up = caught_up(&world);
    let records: Vec<(usize, Vec<Record>)> = world
        .subscribers
        .iter()
        .map(|s| (s.topic, s.stop()))
        .collect();
    let verdict = check::check_topics(&published.acks, &records);
    let report = Report {
        options: o,
        published: published.acks.len() + published.failed.len(),
        acked: published.acks.len(),
        failed: published.failed.len(),
        failures: published
            .failed
            .iter()
            .fold(BTreeMap::new(), |mut kinds, (_, _, error)| {
                *kinds
                    .entry(crate::traffic::failure_kind(error).to_owned())
                    .or_default() += 1;
                kinds
            }),
        injected,
        verdict: &verdict,
        subscribers: &world.subscribers,
        topics: &world.topics,
        per_topic: (0..world.topics.len())
            .map(|topic| report::TopicCounts {
                acked: published.acks.iter().filter(|a| a.topic == topic).count(),
                failed: published.failed.iter().filter(|f| f.0 == topic).count(),
                gaps: world
                    .subscribers
                    .iter()
                    .zip(&verdict.clients)
                    .filter(|(s, _)| s.topic == topic)
                    .map(|(_, c)| c.gaps)
                    .sum(),
            })
            .collect(),
        newest: &targets,
        all_caught_up,
        elapsed_ms: clock.ms(),
    };
    print!("{}", report::markdown(&report));
    println!("{}", report::json(&report));
    Ok(verdict.passed())
}

/// A topic's newest acknowledged cursor: the highest seq in the epoch of
/// the last acknowledgement to it.
fn newest(acks: &[check::Ack], topic: usize) -> Option<Cursor> {
    let acks = || acks.iter().filter(|ack| ack.topic == topic);
    let last = acks().max_by_key(|ack| ack.at_ms)?;
    acks()
        .filter(|ack| ack.cursor.epoch() == last.cursor.epoch())
        .map(|ack| ack.cursor)
        .max()
}

/// A duration in whole milliseconds.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Nanoseconds since the Unix epoch, to tell runs apart.
fn clock_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

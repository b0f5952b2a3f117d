//! What the Redis tests share: the shared Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`), key prefixes of a test's own, an admin
//! connection, and `redis-server` processes of a test's own (for outages,
//! restarts and snapshots). Without a Redis (or `redis-server` on `PATH`)
//! a test says why and passes, except under CI (`CI` set), where it fails.

use super::PATIENCE;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub async fn ping(url: &str) -> Result<(), String> {
    let attempt = async {
        let client = ::redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("no answer within 2 s".to_owned()),
    }
}

/// Says why a test did not run (the harness shows it with `--nocapture`).
pub fn skip(reason: &str) {
    eprintln!("SKIPPED {reason}");
}

/// The shared Redis's URL, or `None` (after saying why) when the test must skip.
pub async fn shared_redis(test: &str) -> Option<String> {
    let url = redis_url();
    match ping(&url).await {
        Ok(()) => Some(url),
        Err(error) if std::env::var_os("CI").is_some() => {
            panic!("{test}: no Redis at {url} under CI: {error}")
        }
        Err(error) => {
            skip(&format!(
                "{test}: no Redis at {url} ({error}); set REDIS_URL or start redis-server"
            ));
            None
        }
    }
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "push-test:{}:{nanos}:{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// An admin connection, bounded in time.
pub async fn admin(url: &str) -> ::redis::aio::MultiplexedConnection {
    let connect = async {
        ::redis::Client::open(url)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("admin connection to redis")
    };
    tokio::time::timeout(PATIENCE, connect)
        .await
        .expect("admin connection to redis in time")
}

/// Deletes every key under `prefix` (best effort).
pub async fn delete_keys(url: &str, prefix: &str) {
    let Ok(client) = ::redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = ::redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}

/// A `redis-server` of a test's own, on a fixed free port, so it can be
/// killed and restarted; killed when dropped.
pub struct OwnRedis {
    port: u16,
    child: Option<Child>,
    /// Where it keeps its snapshot (`SAVE`), loaded at every restart; none:
    /// no persistence.
    dir: Option<std::path::PathBuf>,
    /// More arguments for `redis-server` (e.g. `--replicaof`).
    extra: Vec<String>,
}

impl OwnRedis {
    /// One without persistence; `None` (after saying why) when the test must skip.
    pub async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, Vec::new()).await
    }

    /// A replica of `primary` (without persistence), once it is in sync.
    pub async fn start_replica_of(test: &str, primary: &OwnRedis) -> Option<Self> {
        let extra = vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            primary.port.to_string(),
        ];
        let replica = Self::start_with(test, extra).await?;
        let mut conn = admin(&replica.url()).await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let info: String = ::redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .expect("INFO replication");
            if info.contains("master_link_status:up") {
                return Some(replica);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replica did not sync: {info}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn start_with(test: &str, extra: Vec<String>) -> Option<Self> {
        if !on_path(test, "redis-server") {
            return None;
        }
        let mut redis = Self {
            port: free_port(),
            child: None,
            dir: None,
            extra,
        };
        redis.restart().await;
        Some(redis)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// One that loads, at every restart, the snapshot it last `SAVE`d.
    pub async fn start_persistent(test: &str) -> Option<Self> {
        let mut redis = Self::start(test).await?;
        redis.kill();
        let dir = std::env::temp_dir().join(unique_prefix().replace(':', "-"));
        std::fs::create_dir_all(&dir).expect("a directory for the snapshot");
        redis.dir = Some(dir);
        redis.restart().await;
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (empty without persistence, else from its last snapshot)
    /// and waits until it answers.
    pub async fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        // Never the test's working directory: a replica's full sync writes
        // its snapshot there even without `--save`.
        let dir = self.dir.clone().unwrap_or_else(|| {
            let dir = std::env::temp_dir().join(format!("push-redis-{}", self.port));
            std::fs::create_dir_all(&dir).expect("a directory for the server");
            dir
        });
        command.arg("--dir").arg(dir);
        command.args(&self.extra);
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while ping(&self.url()).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL: whatever was not saved is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether `program` (`redis-server`, `redis-cli`) is on `PATH` (else,
/// after saying why, the test skips; under CI it fails).
fn on_path(test: &str, program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: {program} is not on PATH under CI");
        }
        skip(&format!("{test}: {program} is not on PATH"));
    }
    found
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Redis Sentinel of a test's own (`redis-server sentinel.conf
/// --sentinel`), monitoring one primary under the name `master`, with a
/// quorum of 1; killed (and its directory removed) when dropped.
pub struct OwnSentinel {
    port: u16,
    master: String,
    child: Child,
    dir: std::path::PathBuf,
}

impl OwnSentinel {
    /// Starts it and waits until it names the primary and knows
    /// `replicas` replicas of it.
    pub async fn start(master: &str, primary: &OwnRedis, replicas: usize) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique_prefix().replace(':', "-"));
        std::fs::create_dir_all(&dir).expect("a directory for sentinel.conf");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {master} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 5000\n\
                 sentinel parallel-syncs {master} 1\n",
                dir = dir.display(),
                primary = primary.port(),
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let sentinel = Self {
            port,
            master: master.to_owned(),
            child,
            dir,
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(mut conn) = sentinel.connection().await {
                let named: Result<Option<(String, String)>, _> = ::redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query_async(&mut conn)
                    .await;
                let known: Result<Vec<::redis::Value>, _> = ::redis::cmd("SENTINEL")
                    .arg("replicas")
                    .arg(master)
                    .query_async(&mut conn)
                    .await;
                if matches!(named, Ok(Some(_))) && known.is_ok_and(|r| r.len() >= replicas) {
                    return sentinel;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sentinel did not come up knowing {replicas} replica(s)"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn connection(&self) -> Result<::redis::aio::MultiplexedConnection, String> {
        let connect = async {
            ::redis::Client::open(self.url())
                .map_err(|e| e.to_string())?
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_secs(2), connect)
            .await
            .map_err(|_| "no answer within 2 s".to_owned())?
    }

    /// The primary's port, as the sentinel names it now.
    pub async fn primary_port(&self) -> u16 {
        let mut conn = self.connection().await.expect("a sentinel connection");
        let (_, port): (String, String) = ::redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut conn)
            .await
            .expect("the sentinel names a primary");
        port.parse().expect("a port")
    }

    /// `SENTINEL failover`: promotes a replica without waiting for the
    /// primary to fail. Retried (bounded) while the sentinel has no replica
    /// it deems good yet.
    pub async fn failover(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let mut conn = self.connection().await.expect("a sentinel connection");
            let answer: Result<String, _> = ::redis::cmd("SENTINEL")
                .arg("failover")
                .arg(&self.master)
                .query_async(&mut conn)
                .await;
            match answer {
                Ok(_) => return,
                Err(error) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the sentinel refused to fail over: {error}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OwnSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cluster bus of a node listens on its port + 10000 (Redis's rule).
const BUS_OFFSET: u16 = 10000;

/// How long a cluster node may be unreachable before it is failed over:
/// small, so a test's failover takes a few seconds.
const NODE_TIMEOUT_MS: u64 = 1000;

/// A Redis Cluster of a test's own: 3 primaries and 3 replicas, each a
/// `redis-server` on its own loopback port (its bus port free too) with its
/// own directory (`nodes.conf`, log); every process killed and the
/// directories removed when dropped.
///
/// Every change (start, a primary killed, a node restarted, a slot
/// migrated) returns once the cluster has settled: every live node says
/// `cluster_state:ok`, all agree on which live primary owns each slot, none
/// sees another live node as failing, and every live replica is in sync.
pub struct OwnCluster {
    nodes: Vec<ClusterNode>,
    dir: std::path::PathBuf,
}

/// One `redis-server` of a cluster; its port and directory survive a
/// restart, so it comes back as the same node (`nodes.conf`).
struct ClusterNode {
    port: u16,
    dir: std::path::PathBuf,
    child: std::sync::Mutex<Option<Child>>,
}

impl ClusterNode {
    fn spawn(&self) -> Child {
        Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(self.dir.join("nodes.conf"))
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // A replica takes over however long ago it last heard from its
            // primary: a loaded machine must not stop a test's failover.
            .args(["--cluster-replica-validity-factor", "0"])
            // A replica syncs at once (the default waits 5 s for others).
            .args(["--repl-diskless-sync-delay", "0"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn redis-server")
    }

    /// Starts it and waits until it answers; `false` if it exited first
    /// (its port or bus port was taken meanwhile).
    async fn start(&self) -> bool {
        let mut child = self.spawn();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while ping(&url_of(self.port)).await.is_err() {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cluster node {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        *self.child.lock().expect("node lock") = Some(child);
        true
    }

    fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("node lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn alive(&self) -> bool {
        self.child.lock().expect("node lock").is_some()
    }
}

impl OwnCluster {
    const PRIMARIES: usize = 3;

    /// Starts 3 primaries with a replica each and waits until the cluster
    /// has settled; `None` (after saying why) when the test must skip.
    pub async fn start(test: &str) -> Option<Self> {
        if !on_path(test, "redis-server") || !on_path(test, "redis-cli") {
            return None;
        }
        let dir = std::env::temp_dir().join(unique_prefix().replace(':', "-"));
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        while cluster.nodes.len() < 2 * Self::PRIMARIES {
            let taken: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
            let port = cluster_port(&taken);
            let node = ClusterNode {
                port,
                dir: cluster.dir.join(port.to_string()),
                child: std::sync::Mutex::new(None),
            };
            std::fs::create_dir_all(&node.dir).expect("a directory for a cluster node");
            if node.start().await {
                cluster.nodes.push(node);
            } else {
                // Someone took the port in between: another one.
                let _ = std::fs::remove_dir_all(&node.dir);
            }
        }
        cluster.create().await;
        cluster.settle("the new cluster", |_| true).await;
        Some(cluster)
    }

    /// `redis-cli --cluster create … --cluster-replicas 1`: assigns the
    /// slots, introduces the nodes, makes half of them replicas.
    async fn create(&self) {
        let log_path = self.dir.join("create.log");
        let log = std::fs::File::create(&log_path).expect("create.log");
        let mut child = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(log.try_clone().expect("create.log"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-cli --cluster create");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("redis-cli --cluster create") {
                break status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-cli --cluster create did not finish: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            status.success(),
            "redis-cli --cluster create failed: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    /// Seed URLs: every node of the cluster.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| url_of(n.port)).collect()
    }

    /// The ports of the primaries, as a live node sees them now.
    pub async fn primaries(&self) -> Vec<u16> {
        let view = self.view_of_any().await;
        let mut ports: Vec<u16> = view
            .iter()
            .filter(|n| n.primary && !n.slots.is_empty())
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`: its hash tag, if any).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_port();
        let mut keyslot = ::redis::cmd("CLUSTER");
        keyslot.arg("KEYSLOT").arg(key);
        query(port, &keyslot).await.expect("CLUSTER KEYSLOT")
    }

    /// The port of the primary that owns `slot`, as a live node sees it now.
    pub async fn owner_of(&self, slot: u16) -> u16 {
        let view = self.view_of_any().await;
        owner(&view, slot).unwrap_or_else(|| panic!("nobody owns slot {slot}: {view:?}"))
    }

    /// The port of the primary that owns `key`'s slot.
    pub async fn primary_of(&self, key: &str) -> u16 {
        self.owner_of(self.slot_of(key).await).await
    }

    /// SIGKILLs the primary at `port`, then waits until one of its replicas
    /// has taken over its slots and the cluster has settled again.
    pub async fn kill_primary(&self, port: u16) {
        let view = self.view_of_any().await;
        let killed = view
            .iter()
            .find(|n| n.port == port && n.primary)
            .unwrap_or_else(|| panic!("{port} is not a primary: {view:?}"))
            .clone();
        assert!(
            view.iter()
                .any(|n| n.replica_of.as_deref() == Some(killed.id.as_str())),
            "{port} has no replica to take over: {view:?}"
        );
        self.node(port).kill();
        self.settle("the failover", |view| {
            !killed.slots.is_empty() && owner(view, killed.slots[0].0).is_some_and(|p| p != port)
        })
        .await;
    }

    /// Starts the killed node at `port` again (from its `nodes.conf`: it
    /// rejoins, a replica of whoever took over), and waits until the
    /// cluster has settled.
    pub async fn restart_node(&self, port: u16) {
        let node = self.node(port);
        assert!(!node.alive(), "{port} is running");
        assert!(node.start().await, "{port}: the port was taken meanwhile");
        self.settle("the node's return", |_| true).await;
    }

    /// SIGKILLs every node: the cluster is gone, and with it every key.
    pub fn kill_all(&self) {
        for node in &self.nodes {
            node.kill();
        }
    }

    /// Starts every killed node again, each from its `nodes.conf`: the same
    /// cluster comes back, empty (no persistence); waits until it settled.
    pub async fn restart_all(&self) {
        for node in self.nodes.iter().filter(|n| !n.alive()) {
            assert!(node.start().await, "{}: the port was taken", node.port);
        }
        self.settle("the cluster's return", |_| true).await;
    }

    /// Moves `slot`, with its keys, to the primary at `to`, as an operator
    /// resharding does: `SETSLOT IMPORTING` on `to`, `MIGRATING` on the
    /// owner, `MIGRATE` of the slot's keys (`GETKEYSINSLOT`) one at a time,
    /// `pause` after each, then `SETSLOT NODE` on both and on every other
    /// primary; waits until the cluster settled with `to` owning it.
    /// Clients in between get `ASK` (a key already moved) or `TRYAGAIN` (a
    /// script's keys on both sides, for `pause` at least).
    pub async fn migrate_slot(&self, slot: u16, to: u16, pause: Duration) {
        let view = self.view_of(to).await;
        let from = owner(&view, slot).unwrap_or_else(|| panic!("nobody owns slot {slot}"));
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let id_of = |port: u16| {
            view.iter()
                .find(|n| n.port == port)
                .map(|n| n.id.clone())
                .unwrap_or_else(|| panic!("{port} is not in the cluster: {view:?}"))
        };
        let (from_id, to_id) = (id_of(from), id_of(to));
        let setslot = |state: &str, id: &str| {
            let mut cmd = ::redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
            cmd
        };
        let ok = |port: u16, cmd: ::redis::Cmd| async move {
            query::<()>(port, &cmd)
                .await
                .unwrap_or_else(|e| panic!("{port}: {cmd:?}: {e}"))
        };
        ok(to, setslot("IMPORTING", &from_id)).await;
        ok(from, setslot("MIGRATING", &to_id)).await;
        loop {
            let mut get = ::redis::cmd("CLUSTER");
            get.arg("GETKEYSINSLOT").arg(slot).arg(1);
            let keys: Vec<String> = query(from, &get).await.expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let mut migrate = ::redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys);
            query::<::redis::Value>(from, &migrate)
                .await
                .unwrap_or_else(|e| panic!("MIGRATE {keys:?} from {from} to {to}: {e}"));
            tokio::time::sleep(pause).await;
        }
        // The new owner first, then the old one, then everyone else.
        ok(to, setslot("NODE", &to_id)).await;
        ok(from, setslot("NODE", &to_id)).await;
        for other in view
            .iter()
            .filter(|n| n.primary && n.port != to && n.port != from)
        {
            if self.node(other.port).alive() {
                ok(other.port, setslot("NODE", &to_id)).await;
            }
        }
        self.settle("the migration", |view| owner(view, slot) == Some(to))
            .await;
    }

    /// Deletes the keys matching `pattern` on the node that owns the
    /// pattern's hash tag (`{…}`, which decides the slot): as a shard that
    /// lost them. Returns how many went.
    pub async fn delete_keys(&self, pattern: &str) -> u64 {
        let port = self.primary_of(pattern).await;
        let mut find = ::redis::cmd("KEYS");
        find.arg(pattern);
        let keys: Vec<String> = query(port, &find).await.expect("KEYS");
        if keys.is_empty() {
            return 0;
        }
        let mut delete = ::redis::cmd("DEL");
        delete.arg(&keys);
        query(port, &delete).await.expect("DEL")
    }

    /// How many `kind` error replies (`MOVED`, `ASK`, `TRYAGAIN`,
    /// `CLUSTERDOWN`…) the live nodes gave so far (`INFO errorstats`).
    pub async fn error_replies(&self, kind: &str) -> u64 {
        let field = format!("errorstat_{kind}:count=");
        let mut total = 0;
        for node in self.nodes.iter().filter(|n| n.alive()) {
            let stats: String = query(node.port, ::redis::cmd("INFO").arg("errorstats"))
                .await
                .expect("INFO errorstats");
            total += stats
                .lines()
                .find_map(|line| line.strip_prefix(&field))
                .and_then(|count| count.split(',').next()?.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        total
    }

    /// Waits until every live node says `cluster_state:ok`, all agree on the
    /// slot map (each slot owned by a live primary), none sees a live node
    /// as failing, every live replica is in sync, and `also` holds of the
    /// agreed map.
    async fn settle(&self, what: &str, also: impl Fn(&[NodeLine]) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let last = match self.settled().await {
                Ok(view) if also(&view) => return,
                Ok(view) => format!("not yet: {view:?}"),
                Err(why) => why,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: the cluster did not settle in {PATIENCE:?}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The agreed view of the cluster, or why there is none yet.
    async fn settled(&self) -> Result<Vec<NodeLine>, String> {
        let live: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.alive())
            .map(|n| n.port)
            .collect();
        let mut agreed: Option<(u16, Vec<NodeLine>, SlotMap)> = None;
        for &port in &live {
            let info: String = query(port, ::redis::cmd("CLUSTER").arg("INFO")).await?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("{port}: not ok"));
            }
            let view =
                parse_nodes(&query::<String>(port, ::redis::cmd("CLUSTER").arg("NODES")).await?);
            let map = slot_map(&view);
            if let Some(unowned) = map.iter().find(|(_, _, owner)| !live.contains(owner)) {
                return Err(format!("{port}: slots of a dead node: {unowned:?}"));
            }
            if let Some(failing) = view.iter().find(|n| live.contains(&n.port) && n.failing) {
                return Err(format!("{port} sees {} failing", failing.port));
            }
            let me = view
                .iter()
                .find(|n| n.port == port)
                .ok_or_else(|| format!("{port} does not list itself"))?;
            if me.replica_of.is_some() {
                let replication: String =
                    query(port, ::redis::cmd("INFO").arg("replication")).await?;
                if !replication.contains("master_link_status:up") {
                    return Err(format!("{port}: a replica out of sync"));
                }
            }
            match &agreed {
                Some((first, _, agreed_map)) if *agreed_map != map => {
                    return Err(format!(
                        "{port} and {first} disagree: {map:?} / {agreed_map:?}"
                    ));
                }
                Some(_) => {}
                None => agreed = Some((port, view, map)),
            }
        }
        agreed
            .map(|(_, view, _)| view)
            .ok_or_else(|| "no node is running".to_owned())
    }

    fn node(&self, port: u16) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("{port} is not a node of the cluster"))
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.alive())
            .map(|n| n.port)
            .expect("a live node")
    }

    async fn view_of(&self, port: u16) -> Vec<NodeLine> {
        let nodes: String = query(port, ::redis::cmd("CLUSTER").arg("NODES"))
            .await
            .expect("CLUSTER NODES");
        parse_nodes(&nodes)
    }

    async fn view_of_any(&self) -> Vec<NodeLine> {
        self.view_of(self.live_port()).await
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn url_of(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// A port for a cluster node: it and its bus port free now, both below
/// Linux's ephemeral range (32768 and up), so that no outgoing connection
/// or `127.0.0.1:0` listener of another test takes either before the node
/// binds them.
fn cluster_port(taken: &[u16]) -> u16 {
    use std::hash::BuildHasher;
    const LOWEST: u16 = 10_000;
    const SPAN: u64 = 32_768 - BUS_OFFSET as u64 - LOWEST as u64;
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0u64..1000 {
        let port = LOWEST + (random.hash_one(attempt) % SPAN) as u16;
        let bus = port + BUS_OFFSET;
        if taken
            .iter()
            .any(|&t| [t, t + BUS_OFFSET].contains(&port) || t == bus)
        {
            continue;
        }
        if StdListener::bind(("127.0.0.1", port)).is_ok()
            && StdListener::bind(("127.0.0.1", bus)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port pair (port, port + {BUS_OFFSET}) below 32768");
}

/// One line of `CLUSTER NODES`: a node as another sees it.
#[derive(Clone, Debug, PartialEq)]
struct NodeLine {
    id: String,
    port: u16,
    primary: bool,
    /// Flagged `fail` or `fail?` (or not yet known: `handshake`, `noaddr`).
    failing: bool,
    /// The id of its primary, for a replica.
    replica_of: Option<String>,
    /// Slot ranges it owns (inclusive); not the `[…]` migration markers.
    slots: Vec<(u16, u16)>,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, address, flags, primary, _, _, _, _, slots @ ..] = fields.as_slice() else {
                return None;
            };
            let port = address
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags: Vec<&str> = flags.split(',').collect();
            let failing = ["fail", "fail?", "handshake", "noaddr"]
                .iter()
                .any(|f| flags.contains(f));
            let slots = slots
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(NodeLine {
                id: (*id).to_owned(),
                port,
                primary: flags.contains(&"master"),
                failing,
                replica_of: (*primary != "-").then(|| (*primary).to_owned()),
                slots,
            })
        })
        .collect()
}

/// Who owns which slots: (first slot, last slot, owner's port), sorted.
type SlotMap = Vec<(u16, u16, u16)>;

/// The slot map of a view.
fn slot_map(view: &[NodeLine]) -> SlotMap {
    let mut map: SlotMap = view
        .iter()
        .flat_map(|n| n.slots.iter().map(|&(a, b)| (a, b, n.port)))
        .collect();
    map.sort_unstable();
    map
}

fn owner(view: &[NodeLine], slot: u16) -> Option<u16> {
    slot_map(view)
        .into_iter()
        .find(|&(a, b, _)| (a..=b).contains(&slot))
        .map(|(_, _, port)| port)
}

/// One command to the node at `port`, on a connection of its own, bounded
/// in time.
async fn query<T: ::redis::FromRedisValue>(port: u16, cmd: &::redis::Cmd) -> Result<T, String> {
    let attempt = async {
        let client = ::redis::Client::open(url_of(port)).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        cmd.query_async::<T>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(answer) => answer.map_err(|e| format!("{port}: {e}")),
        Err(_) => Err(format!("{port}: no answer within 5 s")),
    }
}

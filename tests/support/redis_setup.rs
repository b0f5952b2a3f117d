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
        if !redis_server_found(test) {
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

/// Whether `redis-server` is on `PATH` (else, after saying why, the test
/// skips; under CI it fails).
fn redis_server_found(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: redis-server is not on PATH under CI");
        }
        skip(&format!("{test}: redis-server is not on PATH"));
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

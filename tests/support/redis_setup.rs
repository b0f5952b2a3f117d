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
}

impl OwnRedis {
    /// One without persistence; `None` (after saying why) when the test must skip.
    pub async fn start(test: &str) -> Option<Self> {
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
            return None;
        }
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            port,
            child: None,
            dir: None,
        };
        redis.restart().await;
        Some(redis)
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
        if let Some(dir) = &self.dir {
            command.arg("--dir").arg(dir);
        }
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

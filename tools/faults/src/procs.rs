//! The processes a run starts (redis-server, nodes) and a tiny Redis
//! client for the harness's own commands (PING, SAVE, REPLICAOF, INFO,
//! CLUSTER …, MIGRATE).
//!
//! Every child is held by a [`Guard`] that kills it in `Drop`, so a panic
//! or an early return cleans up; on Linux each child also gets
//! `PR_SET_PDEATHSIG`, so it dies with the harness even if the harness is
//! killed outright.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout};

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Guard {
    child: Option<Child>,
}

impl Guard {
    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
            // Reap it: a zombie would keep its port in some tools' eyes.
            let _ = child.try_wait();
        }
    }
}

/// A command whose child dies with this process.
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
}

/// A free loopback port (bound then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The lowest port of the kernel's ephemeral range (outgoing connections
/// take their local port there); 32768 if unknown.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A free loopback port for a cluster server, whose bus port (`+10000`) is
/// free too, both below the ephemeral range: a server killed by a fault
/// restarts on the same port, which an outgoing connection (the run opens
/// hundreds a second) must not have taken meanwhile.
pub fn free_cluster_port(rng: &mut crate::faults::Rng) -> std::io::Result<u16> {
    let high = ephemeral_low().saturating_sub(10_000);
    if high <= 10_000 {
        return Err(std::io::Error::other(format!(
            "the ephemeral range starts at {}: no room below it for a port and its bus port",
            ephemeral_low()
        )));
    }
    for _ in 0..1000 {
        let port = rng.range(10_000, u64::from(high) - 1) as u16;
        let free = |port: u16| std::net::TcpListener::bind(loopback(port)).is_ok();
        if free(port) && free(port + 10_000) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(format!(
        "no free loopback port in 10000..{high} with a free port 10000 above it in 1000 tries"
    )))
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A Redis reply, as far as the harness's own commands need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, an integer's digits, or a bulk string's contents.
    Text(String),
    /// A nil bulk string or array.
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    /// The reply as text (an array is refused).
    pub fn into_text(self) -> Result<String, String> {
        match self {
            Reply::Text(text) => Ok(text),
            Reply::Nil => Ok(String::new()),
            Reply::Array(_) => Err("an array where text was expected".to_owned()),
        }
    }

    /// The reply as a list of texts (e.g. `CLUSTER GETKEYSINSLOT`).
    pub fn into_list(self) -> Result<Vec<String>, String> {
        match self {
            Reply::Array(items) => items.into_iter().map(Reply::into_text).collect(),
            Reply::Nil => Ok(Vec::new()),
            Reply::Text(text) => Err(format!("{text:?} where an array was expected")),
        }
    }
}

/// The deepest array nesting and the longest array or bulk string the
/// harness accepts: its commands' replies are small.
const MAX_DEPTH: usize = 4;
const MAX_LEN: usize = 64 << 20;

/// Reads one reply; `Err` for an error reply or a broken stream.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    depth: usize,
) -> Result<Reply, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let length = |text: &str| -> Result<Option<usize>, String> {
        match text.parse::<i64>() {
            Ok(-1) => Ok(None),
            Ok(n) if (0..=MAX_LEN as i64).contains(&n) => Ok(Some(n as usize)),
            _ => Err(format!("bad length in reply {line:?}")),
        }
    };
    match line.split_at_checked(1) {
        Some(("+" | ":", rest)) => Ok(Reply::Text(rest.to_owned())),
        Some(("-", rest)) => Err(rest.to_owned()),
        Some(("$", len)) => {
            let Some(len) = length(len)? else {
                return Ok(Reply::Nil);
            };
            let mut body = vec![0; len + 2];
            reader
                .read_exact(&mut body)
                .await
                .map_err(|e| e.to_string())?;
            body.truncate(len);
            String::from_utf8(body)
                .map(Reply::Text)
                .map_err(|e| e.to_string())
        }
        Some(("*", len)) if depth < MAX_DEPTH => {
            let Some(len) = length(len)? else {
                return Ok(Reply::Nil);
            };
            let mut items = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                items.push(Box::pin(read_reply(reader, depth + 1)).await?);
            }
            Ok(Reply::Array(items))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

/// One Redis command over a fresh connection, its whole reply.
pub async fn redis_call(port: u16, args: &[&str]) -> Result<Reply, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(loopback(port))
            .await
            .map_err(|e| e.to_string())?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        read_reply(&mut BufReader::new(stream), 0).await
    };
    timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| format!("{}: no answer within 5 s", args.join(" ")))?
}

/// One Redis command over a fresh connection; the reply as text (`+OK`
/// without its `+`, a bulk string's contents, an integer's digits).
pub async fn redis_cmd(port: u16, args: &[&str]) -> Result<String, String> {
    redis_call(port, args).await?.into_text()
}

/// Waits until `check` succeeds, at most `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{what}: not within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The settings of a Redis Cluster server.
#[derive(Clone, Copy, Debug)]
pub struct ClusterNode {
    /// `--cluster-node-timeout`.
    pub node_timeout_ms: u64,
    /// `--cluster-announce-port`: the port the cluster tells clients.
    pub announce_port: u16,
}

/// A redis-server of the harness's own: its own port and directory.
pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    /// `--replicaof 127.0.0.1 <port>` when started as a replica.
    replica_of: Option<u16>,
    /// A Redis Cluster node: its settings.
    cluster: Option<ClusterNode>,
    process: Option<Guard>,
}

impl Redis {
    pub async fn start(dir: &Path, replica_of: Option<u16>) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut redis = Self {
            port: free_port().map_err(|e| e.to_string())?,
            dir: dir.to_owned(),
            replica_of,
            cluster: None,
            process: None,
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// A Redis Cluster node (not yet part of a cluster) on `port` (see
    /// [`free_cluster_port`]), its `nodes.conf` in its directory.
    pub async fn start_cluster_node(
        dir: &Path,
        port: u16,
        settings: ClusterNode,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut redis = Self {
            port,
            dir: dir.to_owned(),
            replica_of: None,
            cluster: Some(settings),
            process: None,
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// Starts it on its port (loading `dump.rdb` from its directory if there
    /// is one) and waits until it answers PING.
    pub async fn restart(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .map_err(|e| e.to_string())?;
        let mut command = command("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--protected-mode", "no"])
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        if let Some(primary) = self.replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        if let Some(cluster) = &self.cluster {
            command
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(self.dir.join("nodes.conf"))
                .args([
                    "--cluster-node-timeout",
                    &cluster.node_timeout_ms.to_string(),
                ])
                // Clients (the nodes, the replicas) are told this port: a
                // proxy the harness can cut. The bus stays direct.
                .args([
                    "--cluster-announce-port",
                    &cluster.announce_port.to_string(),
                ])
                .args([
                    "--cluster-announce-bus-port",
                    &(u32::from(self.port) + 10_000).to_string(),
                ])
                // The other shards keep serving while one has no primary:
                // a fault hits the topics of one shard, not all.
                .args(["--cluster-require-full-coverage", "no"])
                // A replica that lost its primary a while ago may still be
                // promoted (the harness kills primaries back to back).
                .args(["--cluster-replica-validity-factor", "0"]);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("redis-server: {e} (is it on PATH?)"))?;
        self.process = Some(Guard { child: Some(child) });
        let port = self.port;
        wait_until(
            "redis-server answers PING",
            Duration::from_secs(10),
            || async move { redis_cmd(port, &["PING"]).await.is_ok() },
        )
        .await
    }

    /// Whether its process runs (it was not killed since its last start).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// SIGKILL: whatever was not saved is gone.
    pub async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await;
        }
    }

    /// Kills it, and forgets its snapshot: it restarts empty.
    pub async fn kill_and_forget(&mut self) {
        self.kill().await;
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
    }

    /// No longer a replica (`REPLICAOF NO ONE`): it accepts writes.
    pub async fn promote(&mut self) -> Result<(), String> {
        redis_cmd(self.port, &["REPLICAOF", "NO", "ONE"]).await?;
        self.replica_of = None;
        Ok(())
    }

    pub async fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info = redis_cmd(self.port, &["INFO", section]).await.ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .map(|value| value.trim().to_owned())
    }

    /// Waits until this replica's link to its primary is up (synced).
    pub async fn wait_synced(&self) -> Result<(), String> {
        wait_until("the replica syncs", Duration::from_secs(15), || async {
            self.info_field("replication", "master_link_status")
                .await
                .as_deref()
                == Some("up")
        })
        .await
    }
}

/// One node process (this binary in `node` mode).
pub struct Node {
    pub addr: SocketAddr,
    process: Guard,
}

impl Node {
    /// Starts a node and waits for its `listening on http://ADDR` line;
    /// `redis` are its Redis arguments (`--redis URL` or `--redis-cluster
    /// URL,URL,…`).
    pub async fn start(redis: &[String], prefix: &str, log: &Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| e.to_string())?;
        let mut child = command(exe)
            .arg("node")
            .args(redis)
            .args(["--prefix", prefix])
            .args(["--addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("node: {e}"))?;
        let stdout = child.stdout.take().ok_or("node: no stdout")?;
        let mut process = Guard { child: Some(child) };
        let mut line = String::new();
        let read = timeout(
            Duration::from_secs(20),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        let addr = match read {
            Ok(Ok(_)) => line
                .trim()
                .strip_prefix("listening on http://")
                .and_then(|addr| addr.parse().ok()),
            _ => None,
        };
        match addr {
            Some(addr) => Ok(Self { addr, process }),
            None => {
                process.kill().await;
                Err(format!("node did not start: {line:?}"))
            }
        }
    }

    pub async fn kill(&mut self) {
        self.process.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Reply, String> {
        read_reply(&mut BufReader::new(bytes), 0).await
    }

    fn text(s: &str) -> Reply {
        Reply::Text(s.to_owned())
    }

    #[tokio::test]
    async fn replies_parse() {
        assert_eq!(parse(b"+OK\r\n").await, Ok(text("OK")));
        assert_eq!(parse(b":42\r\n").await, Ok(text("42")));
        assert_eq!(parse(b"$5\r\nhello\r\n").await, Ok(text("hello")));
        assert_eq!(parse(b"$-1\r\n").await, Ok(Reply::Nil));
        assert_eq!(parse(b"*-1\r\n").await, Ok(Reply::Nil));
        assert_eq!(
            parse(b"*3\r\n$1\r\na\r\n*1\r\n:7\r\n$0\r\n\r\n").await,
            Ok(Reply::Array(vec![
                text("a"),
                Reply::Array(vec![text("7")]),
                text("")
            ]))
        );
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n")
                .await
                .and_then(Reply::into_list),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            parse(b"-ERR unknown\r\n").await,
            Err("ERR unknown".to_owned())
        );
    }

    #[tokio::test]
    async fn bad_replies_are_errors() {
        // A length out of bounds, a truncated body, an unknown type, too deep.
        assert!(parse(b"$99999999999\r\n").await.is_err());
        assert!(parse(b"*-7\r\n").await.is_err());
        assert!(parse(b"$5\r\nhel").await.is_err());
        assert!(parse(b"?what\r\n").await.is_err());
        assert!(
            parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n")
                .await
                .is_err()
        );
        assert!(parse(b"").await.is_err());
        assert!(parse(b"*1\r\n:1\r\n").await.unwrap().into_text().is_err());
    }
}

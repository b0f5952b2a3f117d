//! `faults run --cluster`: a Redis Cluster of the harness's own (primaries
//! with a replica each, on free loopback ports), what it looks like from
//! its nodes (`CLUSTER NODES`), and the cluster faults: a primary killed
//! and its replica promoted, a slot migrated while events are published,
//! the clients' link to one shard cut.
//!
//! Each server announces (`--cluster-announce-port`) the port of a proxy
//! in front of it, so every client connection (the nodes', the replicas'
//! replication) goes through a proxy the harness can cut; the cluster bus
//! and the harness's own commands go straight to the server.
//!
//! Every wait polls with a deadline; the only sleeps pace the faults.

use crate::faults::Rng;
use crate::probe::Probe;
use crate::procs::{
    ClusterNode, Redis, free_cluster_port, loopback, redis_call, redis_cmd, wait_until,
};
use crate::proxy::Proxy;
use push_runtime::Channel;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// `--cluster-node-timeout`: how long a primary may be silent before its
/// replica takes over. Small, so a failover takes a second or two.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// The longest wait for the cluster to be whole again (every node says
/// `cluster_state:ok`, all agree on the slot map, every primary has a
/// synced replica).
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    /// The port it announces (through `Cluster::view`: its own port).
    pub port: u16,
    pub primary: bool,
    /// `fail` or `fail?`: the others think it is down.
    pub failing: bool,
    /// A replica's primary.
    pub primary_id: Option<String>,
    /// Slot ranges served (inclusive), without the `[slot->-id]` entries of
    /// a migration under way.
    pub slots: Vec<(u16, u16)>,
}

impl NodeLine {
    pub fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(low, high)| (low..=high).contains(&slot))
    }
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@bus[,host]> <flags> <primary>
/// <ping> <pong> <epoch> <link> <slot>…`.
pub fn parse_nodes(text: &str) -> Result<Vec<NodeLine>, String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = || format!("unexpected CLUSTER NODES line {line:?}");
            if fields.len() < 8 {
                return Err(bad());
            }
            let port = fields[1]
                .split('@')
                .next()
                .and_then(|addr| addr.rsplit_once(':'))
                .and_then(|(_, port)| port.parse().ok())
                .ok_or_else(bad)?;
            let flags: Vec<&str> = fields[2].split(',').collect();
            let mut slots = Vec::new();
            for slot in &fields[8..] {
                if slot.starts_with('[') {
                    continue;
                }
                let (low, high) = slot.split_once('-').unwrap_or((slot, slot));
                let low: u16 = low.parse().map_err(|_| bad())?;
                let high: u16 = high.parse().map_err(|_| bad())?;
                slots.push((low, high));
            }
            Ok(NodeLine {
                id: fields[0].to_owned(),
                port,
                primary: flags.contains(&"master"),
                failing: flags.iter().any(|f| f.starts_with("fail")),
                primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// The hash tag of a probe topic's keys (`{prefix}:{/probe/<topic>}:…`):
/// what decides the topic's slot.
pub fn hash_tag(topic: &str) -> String {
    format!("{{{}/{topic}}}", Probe::PATH)
}

/// The harness's own Redis Cluster.
pub struct Cluster {
    /// Every server, primaries and replicas alike; a killed one stays here
    /// (stopped) until it is restarted on its port, with its `nodes.conf`.
    pub servers: Vec<Redis>,
    /// In front of each server (same index): the port it announces.
    pub links: Vec<Proxy>,
}

impl Cluster {
    /// Starts `primaries × (1 + replicas)` servers under `dir`, makes them a
    /// cluster (`redis-cli --cluster create`), and waits until it is whole.
    /// Ports are drawn at random below the ephemeral range: `rng` is seeded
    /// apart from the run's seed, so that runs side by side do not collide.
    pub async fn start(
        dir: &Path,
        primaries: usize,
        replicas: usize,
        rng: &mut Rng,
    ) -> Result<Self, String> {
        let mut servers = Vec::new();
        let mut links = Vec::new();
        for index in 0..primaries * (1 + replicas) {
            let server_dir = dir.join(format!("cluster-{index}"));
            let port = free_cluster_port(rng).map_err(|e| e.to_string())?;
            let link = Proxy::start(vec![Some(loopback(port))])
                .await
                .map_err(|e| e.to_string())?;
            let settings = ClusterNode {
                node_timeout_ms: NODE_TIMEOUT_MS,
                announce_port: link.addr.port(),
            };
            servers.push(Redis::start_cluster_node(&server_dir, port, settings).await?);
            links.push(link);
        }
        let cluster = Self { servers, links };
        let mut create = tokio::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for server in &cluster.servers {
            create.arg(format!("127.0.0.1:{}", server.port));
        }
        let output = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), output)
            .await
            .map_err(|_| "redis-cli --cluster create: not done within 60 s".to_owned())?
            .map_err(|e| format!("redis-cli: {e} (is it on PATH?)"))?;
        let log = [output.stdout.as_slice(), output.stderr.as_slice()].concat();
        let _ = std::fs::write(dir.join("cluster-create.log"), &log);
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&log).trim()
            ));
        }
        cluster.wait_whole().await?;
        Ok(cluster)
    }

    /// Seed URLs for the nodes: every server, through its link.
    pub fn urls(&self) -> Vec<String> {
        self.links
            .iter()
            .map(|link| format!("redis://{}", link.addr))
            .collect()
    }

    /// The link in front of the server on `port`.
    pub fn link_of(&self, port: u16) -> Option<&Proxy> {
        let index = self.servers.iter().position(|s| s.port == port)?;
        self.links.get(index)
    }

    /// The slot of a probe topic (`CLUSTER KEYSLOT`, asked of any server).
    pub async fn slot_of(&self, topic: &str) -> Result<u16, String> {
        let tag = hash_tag(topic);
        let mut last = String::new();
        for server in self.servers.iter().filter(|s| s.is_running()) {
            match redis_cmd(server.port, &["CLUSTER", "KEYSLOT", &tag]).await {
                Ok(slot) => return slot.parse().map_err(|_| format!("KEYSLOT: {slot:?}")),
                Err(error) => last = error,
            }
        }
        Err(format!(
            "CLUSTER KEYSLOT {tag}: no server answered ({last})"
        ))
    }

    /// The cluster as one running server sees it, each node named by its
    /// own port (not the one of the link it announces).
    async fn view(&self, port: u16) -> Result<Vec<NodeLine>, String> {
        let mut view = parse_nodes(&redis_cmd(port, &["CLUSTER", "NODES"]).await?)?;
        for node in &mut view {
            if let Some(index) = self.links.iter().position(|l| l.addr.port() == node.port) {
                node.port = self.servers[index].port;
            }
        }
        Ok(view)
    }

    /// The cluster as the first running server that answers sees it.
    pub async fn any_view(&self) -> Result<Vec<NodeLine>, String> {
        let mut last = "no server running".to_owned();
        for server in self.servers.iter().filter(|s| s.is_running()) {
            match self.view(server.port).await {
                Ok(view) => return Ok(view),
                Err(error) => last = error,
            }
        }
        Err(format!("CLUSTER NODES: {last}"))
    }

    /// The primary serving `slot`, as the cluster sees it now.
    pub async fn owner(&self, slot: u16) -> Result<NodeLine, String> {
        self.any_view()
            .await?
            .into_iter()
            .find(|node| node.primary && node.serves(slot))
            .ok_or_else(|| format!("no primary serves slot {slot}"))
    }

    /// Whether the cluster is whole: every server runs and says
    /// `cluster_state:ok`, all see the same slot owners covering every slot
    /// and nobody failing, and every primary has a replica whose link to
    /// it is up.
    async fn is_whole(&self) -> Result<(), String> {
        let mut maps = Vec::new();
        for server in &self.servers {
            if !server.is_running() {
                return Err(format!("{} is stopped", server.port));
            }
            let info = redis_cmd(server.port, &["CLUSTER", "INFO"]).await?;
            if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
                return Err(format!("{}: cluster_state is not ok", server.port));
            }
            let view = self.view(server.port).await?;
            if let Some(node) = view.iter().find(|node| node.failing) {
                return Err(format!("{} sees {} failing", server.port, node.port));
            }
            let mut map: Vec<(u16, u16, u16)> = view
                .iter()
                .filter(|node| node.primary)
                .flat_map(|node| node.slots.iter().map(|&(l, h)| (l, h, node.port)))
                .collect();
            map.sort_unstable();
            let covered: u32 = map.iter().map(|&(l, h, _)| u32::from(h - l) + 1).sum();
            if covered != 16384 {
                return Err(format!("{} sees {covered} slots served", server.port));
            }
            for primary in view.iter().filter(|n| n.primary && !n.slots.is_empty()) {
                if !view
                    .iter()
                    .any(|n| n.primary_id.as_deref() == Some(primary.id.as_str()))
                {
                    return Err(format!(
                        "{} sees no replica of {}",
                        server.port, primary.port
                    ));
                }
            }
            maps.push(map);
        }
        if maps.windows(2).any(|pair| pair[0] != pair[1]) {
            return Err("the servers disagree on the slot map".to_owned());
        }
        for server in &self.servers {
            if server.info_field("replication", "role").await.as_deref() == Some("slave")
                && server
                    .info_field("replication", "master_link_status")
                    .await
                    .as_deref()
                    != Some("up")
            {
                return Err(format!("replica {} is not synced", server.port));
            }
        }
        Ok(())
    }

    /// Waits until the cluster is whole (see `is_whole`), naming what was
    /// still wrong if it is not within the limit.
    pub async fn wait_whole(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        loop {
            match self.is_whole().await {
                Ok(()) => return Ok(()),
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "the cluster is not whole within {SETTLE_LIMIT:?}: {error}"
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// One topic per primary, each in a slot that primary serves: `p<n>`
    /// for the smallest `n` that lands there. Faults on one shard then hit
    /// some topics and not others.
    pub async fn spread_topics(&self) -> Result<Vec<String>, String> {
        let view = self.any_view().await?;
        let mut primaries: Vec<&NodeLine> = view
            .iter()
            .filter(|node| node.primary && !node.slots.is_empty())
            .collect();
        primaries.sort_by_key(|node| node.slots.iter().min().copied());
        let mut topics: BTreeMap<usize, String> = BTreeMap::new();
        for n in 0..10_000 {
            if topics.len() == primaries.len() {
                break;
            }
            let topic = format!("p{n}");
            let slot = self.slot_of(&topic).await?;
            if let Some(index) = primaries.iter().position(|node| node.serves(slot)) {
                topics.entry(index).or_insert(topic);
            }
        }
        if topics.len() < primaries.len() {
            return Err("no topic name found for every primary".to_owned());
        }
        Ok(topics.into_values().collect())
    }

    /// `cluster-failover`: SIGKILL the primary serving `topic`, wait until
    /// the cluster has promoted a replica in its place, then restart the
    /// killed server (same port and `nodes.conf`: it rejoins as a replica
    /// of the new primary). The cluster is whole again (see `is_whole`)
    /// when the next cluster fault starts: other faults may come between.
    pub async fn failover(&mut self, topic: &str) -> Result<String, String> {
        self.wait_whole().await?;
        let slot = self.slot_of(topic).await?;
        let old = self.owner(slot).await?;
        let index = self
            .servers
            .iter()
            .position(|server| server.port == old.port)
            .ok_or_else(|| format!("slot {slot} is served by {}, not ours", old.port))?;
        self.servers[index].kill().await;
        let killed_at = tokio::time::Instant::now();
        let promoted = std::sync::Mutex::new(None);
        wait_until(
            &format!("a replica of {} is promoted", old.port),
            SETTLE_LIMIT,
            || async {
                let owner = self.owner(slot).await;
                match owner {
                    Ok(owner) if owner.id != old.id && !owner.failing => {
                        *promoted.lock().unwrap_or_else(|p| p.into_inner()) = Some(owner.port);
                        true
                    }
                    _ => false,
                }
            },
        )
        .await?;
        let took = killed_at.elapsed();
        self.servers[index].restart().await?;
        let promoted = promoted.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(format!(
            "{topic} (slot {slot}): primary {} killed, {} promoted after {} ms, {} restarted",
            old.port,
            promoted.unwrap_or_default(),
            took.as_millis(),
            old.port,
        ))
    }

    /// `redis-link` with a cluster: the link to the primary serving `topic`
    /// (the nodes' and its replicas' connections) drops every connection
    /// and refuses new ones for `outage`; the cluster itself (its bus) sees
    /// nothing wrong, so no failover follows.
    pub async fn cut_link(&self, topic: &str, outage: Duration) -> Result<String, String> {
        let slot = self.slot_of(topic).await?;
        let owner = self.owner(slot).await?;
        let link = self
            .link_of(owner.port)
            .ok_or_else(|| format!("slot {slot} is served by {}, not ours", owner.port))?;
        link.block();
        tokio::time::sleep(outage).await;
        link.unblock();
        Ok(format!(
            "{topic} (slot {slot}): the link to {} cut for {} ms",
            owner.port,
            outage.as_millis()
        ))
    }

    /// `slot-migrate`: moves the slot of `topic` to another primary while
    /// events are published: IMPORTING on the target, MIGRATING on the
    /// source, then `MIGRATE` one key at a time (`CLUSTER GETKEYSINSLOT`
    /// with a count of 1: the topic's two keys are apart for a while, so
    /// multi-key commands get `TRYAGAIN`), pausing between them, then
    /// `SETSLOT … NODE` on every primary. It starts once the cluster is
    /// whole, and returns once every server agrees on the new owner.
    pub async fn migrate(&self, topic: &str, rng: &mut Rng) -> Result<String, String> {
        self.wait_whole().await?;
        let slot = self.slot_of(topic).await?;
        let view = self.any_view().await?;
        let source = view
            .iter()
            .find(|node| node.primary && node.serves(slot))
            .ok_or_else(|| format!("no primary serves slot {slot}"))?;
        let targets: Vec<&NodeLine> = view
            .iter()
            .filter(|node| node.primary && !node.failing && node.id != source.id)
            .collect();
        if targets.is_empty() {
            return Err("slot-migrate: no other primary to move a slot to".to_owned());
        }
        let target = targets[rng.range(0, targets.len() as u64 - 1) as usize];
        let slot_text = slot.to_string();
        let setslot = |port: u16, state: &'static str, id: String| {
            let slot_text = slot_text.clone();
            async move {
                redis_cmd(port, &["CLUSTER", "SETSLOT", &slot_text, state, &id])
                    .await
                    .map_err(|e| format!("CLUSTER SETSLOT {slot_text} {state} on {port}: {e}"))
            }
        };
        setslot(target.port, "IMPORTING", source.id.clone()).await?;
        setslot(source.port, "MIGRATING", target.id.clone()).await?;
        tokio::time::sleep(rng.millis(100, 800)).await;
        let mut moved = 0;
        loop {
            let keys = redis_call(source.port, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "1"])
                .await
                .and_then(|reply| reply.into_list())
                .map_err(|e| format!("CLUSTER GETKEYSINSLOT {slot} on {}: {e}", source.port))?;
            if keys.is_empty() {
                break;
            }
            let target_port = target.port.to_string();
            let mut migrate = vec![
                "MIGRATE",
                "127.0.0.1",
                &target_port,
                "",
                "0",
                "5000",
                "KEYS",
            ];
            migrate.extend(keys.iter().map(String::as_str));
            redis_cmd(source.port, &migrate)
                .await
                .map_err(|e| format!("MIGRATE {keys:?} to {}: {e}", target.port))?;
            moved += keys.len();
            tokio::time::sleep(rng.millis(50, 400)).await;
        }
        if moved == 0 {
            return Err(format!(
                "slot {slot} of topic {topic} held no keys: does {} still name the topic's keys?",
                hash_tag(topic)
            ));
        }
        // The target first, then the source, then every other primary.
        setslot(target.port, "NODE", target.id.clone()).await?;
        setslot(source.port, "NODE", target.id.clone()).await?;
        for other in view
            .iter()
            .filter(|n| n.primary && !n.failing && n.id != source.id && n.id != target.id)
        {
            setslot(other.port, "NODE", target.id.clone()).await?;
        }
        self.wait_whole().await?;
        Ok(format!(
            "{topic} (slot {slot}, {moved} keys): {} -> {}",
            source.port, target.port
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922 [5465->-e7d1]
292f 127.0.0.1:30003@40003,host master,fail - 0 1426238318243 3 connected 10923-16383 42
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";
        let nodes = parse_nodes(text).expect("parses");
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].primary_id.as_deref(), Some("e7d1"));
        assert!(!nodes[0].primary && nodes[0].slots.is_empty());
        assert_eq!(nodes[1].slots, [(5461, 10922)]);
        assert!(nodes[1].serves(5465) && !nodes[1].serves(5460));
        assert_eq!(nodes[2].port, 30003);
        assert!(nodes[2].failing && nodes[2].serves(42));
        assert!(nodes[3].primary && !nodes[3].failing);
        assert!(parse_nodes("garbage line").is_err());
        assert!(parse_nodes("a 127.0.0.1:1@2 master - 0 0 1 connected x-y").is_err());
    }

    #[test]
    fn the_hash_tag_is_the_channel_path_and_topic() {
        assert_eq!(hash_tag("p3"), "{/probe/p3}");
    }
}

//! The fault kinds and the seeded schedule that picks them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// splitmix64: small, seedable, good enough to pick faults and pauses.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high]`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high.saturating_sub(low) + 1)
    }

    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.range(low, high))
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL a node, restart it after a short pause.
    NodeKill,
    /// Drop every client connection at the front proxy at once.
    ClientCut,
    /// Make one client stop reading for a few seconds (it falls behind the
    /// history: a gap, or the server drops it).
    SlowClient,
    /// Cut the node<->Redis link (every connection dropped, new ones
    /// refused) for a while, then restore it; with a cluster, the link to
    /// the primary of one probe topic's shard.
    RedisLink,
    /// Kill Redis and restart it empty: its data is lost, new epochs follow.
    RedisRestart,
    /// SAVE a snapshot, let more events be published, then kill Redis and
    /// restart it from the older snapshot: same epochs, lower seqs.
    RedisRollback,
    /// Cut the replication link so a replica lags, kill the primary,
    /// promote the replica (`REPLICAOF NO ONE`) and point the nodes' Redis
    /// proxy at it; then start a new replica of it.
    ReplicaPromote,
    /// Redis Cluster: SIGKILL the primary serving a probe topic's slot, wait
    /// until a replica is promoted, restart the killed server (it rejoins
    /// as a replica).
    ClusterFailover,
    /// Redis Cluster: move a probe topic's slot to another primary while
    /// events are published (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE).
    SlotMigrate,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::NodeKill,
        Kind::ClientCut,
        Kind::SlowClient,
        Kind::RedisLink,
        Kind::RedisRestart,
        Kind::RedisRollback,
        Kind::ReplicaPromote,
        Kind::ClusterFailover,
        Kind::SlotMigrate,
    ];

    /// Whether the fault kills or restarts Redis, so needs one of the
    /// harness's own.
    pub fn needs_own_redis(self) -> bool {
        matches!(
            self,
            Kind::RedisRestart | Kind::RedisRollback | Kind::ReplicaPromote
        )
    }

    /// Whether the fault acts on one Redis server (restarts it, or
    /// promotes its replica by hand), so has no meaning with `--cluster`.
    pub fn needs_single_redis(self) -> bool {
        matches!(
            self,
            Kind::RedisRestart | Kind::RedisRollback | Kind::ReplicaPromote
        )
    }

    /// Whether the fault acts on a Redis Cluster (`--cluster`).
    pub fn needs_cluster(self) -> bool {
        matches!(self, Kind::ClusterFailover | Kind::SlotMigrate)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::NodeKill => "node-kill",
            Kind::ClientCut => "client-cut",
            Kind::SlowClient => "slow-client",
            Kind::RedisLink => "redis-link",
            Kind::RedisRestart => "redis-restart",
            Kind::RedisRollback => "redis-rollback",
            Kind::ReplicaPromote => "replica-promote",
            Kind::ClusterFailover => "cluster-failover",
            Kind::SlotMigrate => "slot-migrate",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Kind::ALL
            .iter()
            .copied()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault kind {name:?}; known: {}", names.join(", "))
            })
    }
}

/// `--faults a,b,c` (empty or `none`: no faults).
pub fn parse_kinds(list: &str) -> Result<Vec<Kind>, String> {
    let mut kinds = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "none" {
            continue;
        }
        let kind: Kind = name.parse()?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// `120s`, `2m`, `500ms`, or a bare number of seconds.
/// `LOW..HIGH`, two durations: the bounds of the pause between faults.
pub fn parse_pause(text: &str) -> Result<(Duration, Duration), String> {
    let (low, high) = text
        .split_once("..")
        .ok_or_else(|| format!("not a range: {text:?} (e.g. 1s..3s)"))?;
    let (low, high) = (parse_duration(low)?, parse_duration(high)?);
    if low > high {
        return Err(format!("{text:?}: the low bound is above the high one"));
    }
    Ok((low, high))
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (e.g. 120s, 2m, 500ms)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("unknown unit in {text:?}: ms, s or m")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rng_is_seeded() {
        let a: Vec<u64> = (0..4)
            .scan(Rng::new(1), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(Rng::new(1), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..4)
            .scan(Rng::new(2), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut rng = Rng::new(3);
        assert!(
            (0..1000)
                .map(|_| rng.range(2, 5))
                .all(|n| (2..=5).contains(&n))
        );
    }

    #[test]
    fn pauses_parse() {
        assert_eq!(
            parse_pause("200ms..1s"),
            Ok((Duration::from_millis(200), Duration::from_secs(1)))
        );
        assert!(parse_pause("3s..1s").is_err());
        assert!(parse_pause("1s").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn no_faults_parse_as_empty() {
        assert_eq!(parse_kinds(""), Ok(vec![]));
        assert_eq!(parse_kinds("none"), Ok(vec![]));
        assert!(parse_kinds("meteor").is_err());
    }

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for &kind in Kind::ALL {
            assert_eq!(kind.name().parse::<Kind>(), Ok(kind));
            assert!(!(kind.needs_cluster() && kind.needs_single_redis()));
        }
        assert_eq!(
            parse_kinds("cluster-failover,slot-migrate,cluster-failover"),
            Ok(vec![Kind::ClusterFailover, Kind::SlotMigrate])
        );
    }
}

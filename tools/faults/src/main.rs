//! The fault-injection harness: proves that across several nodes sharing one
//! Redis (or one Redis Cluster), nothing published is lost silently,
//! whatever fails.
//!
//! ```text
//! cargo build -p faults
//! target/debug/faults run --seed 1 --duration 60s --faults node-kill,client-cut
//! target/debug/faults run --cluster --seed 1 --duration 60s --faults cluster-failover,slot-migrate
//! target/debug/faults node --redis redis://127.0.0.1:6380 --prefix p   # one node, by hand
//! target/debug/faults node --redis-cluster redis://127.0.0.1:7001,redis://127.0.0.1:7002
//! ```
//!
//! `faults node` is one node of the service (a hub over the Redis broker);
//! `faults run` starts its own Redis and nodes (this binary in `node` mode),
//! puts TCP proxies in front of them, runs clients on every transport and
//! publishers, injects faults on a seeded schedule, and checks what every
//! client received against what every publisher was told. With `--cluster`
//! it starts a Redis Cluster instead (3 primaries, a replica each) and
//! spreads the probe topics over its shards, one per primary, so a fault on
//! one shard hits some topics and not others; each topic is checked apart.
//!
//! | fault kind | what happens | Redis | today |
//! |---|---|---|---|
//! | `node-kill` | SIGKILL a node, restart it after 0.3-1.5 s | both | passes |
//! | `client-cut` | the front proxy drops every client connection | both | passes |
//! | `slow-client` | one client stops reading for 2-6 s | both | passes |
//! | `redis-link` | the node<->Redis proxy drops and refuses connections for 0.5-3 s (a cluster: the proxy a probe topic's primary announces) | both | passes |
//! | `redis-restart` | Redis killed and restarted empty: new epochs | single | passes |
//! | `redis-rollback` | Redis restarted from an older snapshot: same epoch, lower seq | single | passes |
//! | `replica-promote` | a lagging replica promoted in place of the primary | single | passes |
//! | `cluster-failover` | SIGKILL the primary of a probe topic's shard, wait for its replica's promotion, restart it (it rejoins as a replica) | cluster | passes |
//! | `slot-migrate` | move a probe topic's slot to another primary while publishing (IMPORTING/MIGRATING, MIGRATE key by key, SETSLOT NODE) | cluster | passes |
//!
//! "single" kinds are refused with `--cluster` (they restart the one
//! server, or promote its replica by hand), "cluster" kinds without it.
//! `.ci/faults-smoke` runs every kind (its cluster run's seed draws all six
//! of a cluster within 30 s). Every process a run starts
//! (redis-server, nodes) listens on a free loopback port with its own
//! directory under the temp dir, and is killed when the run ends, fails,
//! panics or is interrupted.

mod check;
mod cluster;
mod faults;
mod inject;
mod node;
mod probe;
mod procs;
mod proxy;
mod report;
mod run;
mod traffic;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "faults",
    about = "Fault-injection harness of the push framework"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// One node: a hub over a Redis broker serving the probe channel on
    /// every transport and `POST /probe/{topic}`; prints `listening on
    /// http://ADDR` and runs until killed.
    Node {
        /// The Redis to use, e.g. redis://127.0.0.1:6380.
        #[arg(long, required_unless_present = "redis_cluster")]
        redis: Option<String>,
        /// A Redis Cluster instead: seed URLs of its nodes, comma-separated
        /// (e.g. redis://127.0.0.1:7001,redis://127.0.0.1:7002).
        #[arg(long, conflicts_with = "redis", value_delimiter = ',')]
        redis_cluster: Option<Vec<String>>,
        /// The key prefix of the broker.
        #[arg(long, default_value = "faults")]
        prefix: String,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
    },
    /// The harness: its own Redis (or Redis Cluster), `--nodes` nodes
    /// behind a round-robin proxy, clients on every transport, publishers,
    /// seeded faults; then the checker. Exits non-zero on any silent loss, duplicate, reorder
    /// or cursor conflict.
    Run {
        /// Seeds the fault schedule, its pauses and which clients are slow.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How long events are published (e.g. 120s, 2m).
        #[arg(long, default_value = "120s", value_parser = faults::parse_duration)]
        duration: std::time::Duration,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 2)]
        clients_per_transport: usize,
        #[arg(long, default_value_t = 2)]
        publishers: u32,
        /// Events per second, per publisher.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Comma-separated fault kinds (none by default): node-kill,
        /// client-cut, slow-client, redis-link, redis-restart,
        /// redis-rollback, replica-promote; with --cluster:
        /// cluster-failover, slot-migrate.
        #[arg(long, default_value = "")]
        faults: String,
        /// Start a Redis Cluster (3 primaries, a replica each) instead of
        /// one Redis, and spread the probe topics over its shards. The
        /// faults on one Redis (redis-restart, redis-rollback,
        /// replica-promote) are refused then.
        #[arg(long, conflicts_with = "redis")]
        cluster: bool,
        /// Use this Redis (host:port, e.g. the one of your own deployment)
        /// instead of starting one; the harness's keys get a prefix of the
        /// run's own. The faults that kill Redis (redis-restart,
        /// redis-rollback, replica-promote) need a Redis of its own.
        #[arg(long)]
        redis: Option<std::net::SocketAddr>,
        /// The pause between two faults, drawn between these bounds
        /// (`LOW..HIGH`, each a duration: e.g. 200ms..600ms for a long run).
        #[arg(long, default_value = "1s..3s", value_parser = faults::parse_pause)]
        pause: (std::time::Duration, std::time::Duration),
        /// The longest wait for every client to catch up at the end.
        #[arg(long, default_value = "30s", value_parser = faults::parse_duration)]
        catch_up: std::time::Duration,
        /// Keep the run's directory (node logs, Redis files) even if it passes.
        #[arg(long)]
        keep: bool,
    },
}

/// Ends the run early on SIGINT or SIGTERM (e.g. `timeout`), dropping
/// everything it started: every child process is killed by its guard.
pub async fn interruptible<T>(
    run: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        result = run => result,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        _ = term.recv() => Err("terminated".to_owned()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("faults: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.mode {
        Mode::Node {
            redis,
            redis_cluster,
            prefix,
            addr,
        } => {
            let backend = match (redis, redis_cluster) {
                (_, Some(urls)) => node::Backend::Cluster(urls),
                (Some(url), None) => node::Backend::Single(url),
                (None, None) => {
                    eprintln!("faults: --redis or --redis-cluster is needed");
                    return ExitCode::FAILURE;
                }
            };
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            runtime.block_on(node::run(&backend, &prefix, &addr))
        }
        Mode::Run {
            seed,
            duration,
            nodes,
            clients_per_transport,
            publishers,
            rate,
            faults,
            redis,
            cluster,
            pause,
            catch_up,
            keep,
        } => {
            let options = run::Options {
                seed,
                duration,
                nodes: nodes.max(1),
                clients_per_transport: clients_per_transport.max(1),
                publishers: publishers.max(1),
                rate,
                faults: match faults::parse_kinds(&faults) {
                    Ok(kinds) => kinds,
                    Err(error) => {
                        eprintln!("faults: {error}");
                        return ExitCode::FAILURE;
                    }
                },
                redis,
                cluster,
                pause,
                catch_up,
                keep,
            };
            match runtime.block_on(run::run(options)) {
                Ok(true) => Ok(()),
                Ok(false) => Err(
                    "the checker found losses, duplicates, reorders or cursor conflicts".to_owned(),
                ),
                Err(error) => Err(error),
            }
        }
    };
    // Nothing may outlive the run: children die with their guards.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("faults: {error}");
            ExitCode::FAILURE
        }
    }
}

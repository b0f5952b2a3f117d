//! Delivered events per second and publish-to-receive latency: two nodes
//! over Redis against one in-memory node, measured in the same run.
//!
//! ```text
//! cargo run --release --example redis_bench -- --subscribers 100 --events 20000
//! ```
//!
//! Subscribers read the hub directly (what every transport reads), so this
//! measures the broker, not HTTP framing. In the Redis run, half the
//! subscribers are on the publishing node and half on the other one.
//! Options: `--subscribers` (default 100), `--events` (default 20000),
//! `--publishers` (concurrent publishing tasks, default 4), `--rate` (events
//! per second per publisher, default as fast as publishing goes);
//! `REDIS_URL` (default `redis://127.0.0.1:6379`).

use push_runtime::broker::{RedisBroker, RedisConfig};
use push_runtime::history::Subscription;
use push_runtime::{Delivery, Hub, HubConfig, Start};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The benchmark's only event: when it was published and its number.
#[push_runtime::push_channel(path = "/bench")]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BenchEvent {
    /// One published event.
    Tick {
        /// Nanoseconds since the benchmark started.
        sent_ns: u64,
        /// Its number, from 0.
        n: u64,
    },
}

fn since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

struct Options {
    subscribers: usize,
    events: u64,
    rate: Option<f64>,
    publishers: u64,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        subscribers: 100,
        events: 20_000,
        rate: None,
        publishers: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--subscribers" => {
                options.subscribers = value.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            "--events" => options.events = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--publishers" => {
                options.publishers = value
                    .parse::<u64>()
                    .map_err(|e| format!("{flag}: {e}"))?
                    .max(1)
            }
            "--rate" => options.rate = Some(value.parse().map_err(|e| format!("{flag}: {e}"))?),
            _ => return Err(format!("unknown option {flag} {value}")),
        }
    }
    Ok(options)
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    latencies_ns: Vec<u64>,
    gaps: usize,
    last_at_ns: u64,
}

async fn consume(mut subscription: Subscription, events: u64) -> Seen {
    let mut seen = Seen::default();
    let mut out = Vec::with_capacity(256);
    let mut received = 0;
    while received < events {
        out.clear();
        subscription.next_batch(&mut out, 256).await;
        let now = since_start();
        for delivery in &out {
            match delivery {
                Delivery::Event(event) => {
                    received += 1;
                    if let Ok(BenchEvent::Tick { sent_ns, n }) =
                        serde_json::from_slice(event.data())
                    {
                        seen.latencies_ns.push(now.saturating_sub(sent_ns));
                        received = received.max(n + 1);
                    }
                }
                Delivery::Gap(gap) => {
                    seen.gaps += 1;
                    received = gap.to.seq();
                }
            }
        }
        seen.last_at_ns = now;
    }
    seen
}

struct Figures {
    delivered: usize,
    gaps: usize,
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
    publish_per_second: f64,
}

/// Subscribes on every hub in turn, publishes on the first one, waits for every delivery.
async fn run(hubs: &[Hub<BenchEvent>], options: &Options) -> Figures {
    let mut readers = Vec::new();
    for i in 0..options.subscribers {
        let subscription = hubs[i % hubs.len()]
            .subscribe("load", Start::Now, None)
            .await
            .expect("subscribe");
        readers.push(tokio::spawn(consume(subscription, options.events)));
    }
    let started = since_start();
    let pause = options.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    for n in 0..options.events {
        let event = BenchEvent::Tick {
            sent_ns: since_start(),
            n,
        };
        hubs[0].publish("load", event).await.expect("publish");
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    let published = since_start() - started;
    let mut latencies = Vec::new();
    let (mut gaps, mut last) = (0, started);
    for reader in readers {
        let seen = reader.await.expect("reader");
        latencies.extend(seen.latencies_ns);
        gaps += seen.gaps;
        last = last.max(seen.last_at_ns);
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Figures {
        delivered: latencies.len(),
        gaps,
        per_second: latencies.len() as f64 / ((last - started) as f64 / 1e9),
        p50_us: at(0.50),
        p99_us: at(0.99),
        publish_per_second: options.events as f64 / (published as f64 / 1e9),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    let history_len = usize::try_from(options.events).unwrap_or(usize::MAX);
    let mut config = HubConfig::default();
    config.history_len = history_len;
    since_start();

    let memory = run(&[Hub::with_config(config.clone())], &options).await;

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("push-bench:{}", std::process::id());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let redis = RedisConfig::new(url.as_str())
            .key_prefix(prefix.as_str())
            .history_len(history_len);
        let broker = RedisBroker::connect(redis).await?;
        nodes.push(Hub::with_broker(Arc::new(broker), config.clone()));
    }
    let redis = run(&nodes, &options).await;
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await?;
    }

    println!(
        "{} subscribers, {} events from {} publishers{}\n",
        options.subscribers,
        options.events,
        options.publishers,
        options
            .rate
            .map(|r| format!(" at {r}/s"))
            .unwrap_or_default()
    );
    println!(
        "| setup | delivered | gaps | delivered events/s | publishes/s | p50 latency | p99 latency |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, f) in [("in-memory, 1 node", &memory), ("Redis, 2 nodes", &redis)] {
        println!(
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} µs | {:.0} µs |",
            f.delivered, f.gaps, f.per_second, f.publish_per_second, f.p50_us, f.p99_us
        );
    }
    println!(
        "\nRedis / in-memory: {:.2}× delivered events/s, {:.1}× p50 latency, {:.1}× p99 latency",
        redis.per_second / memory.per_second,
        redis.p50_us / memory.p50_us.max(0.001),
        redis.p99_us / memory.p99_us.max(0.001)
    );
    Ok(())
}

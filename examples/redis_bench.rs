//! Two benchmarks of the Redis broker, each against a baseline measured in
//! the same run.
//!
//! Delivery (the default): delivered events per second and
//! publish-to-receive latency, two nodes over Redis against one in-memory
//! node.
//!
//! ```text
//! cargo run --release --example redis_bench -- --subscribers 100 --events 20000
//! ```
//!
//! Subscribers read the hub directly (what every transport reads), so this
//! measures the broker, not HTTP framing. In the Redis run, half the
//! subscribers are on the publishing node and half on the other one.
//! Options: `--subscribers` (default 100), `--events` (default 20000),
//! `--publishers` (concurrent publishing tasks sharing the events, default
//! 4), `--rate` (events per second per publisher, default as fast as
//! publishing goes); `REDIS_URL` (default `redis://127.0.0.1:6379`).
//!
//! Publish throughput (`publish`): publishes per second and publish latency
//! of one node with 1, 4 and 16 concurrent publishers on one topic, against
//! the same Lua script run without the broker, at the same concurrency, by
//! `redis-benchmark` (if it is on the `PATH`) and by a raw client (one
//! multiplexed connection, as the broker has).
//!
//! ```text
//! cargo run --release --example redis_bench -- publish --events 20000 --publishers 1,4,16
//! ```
//!
//! Options: `--events` (per row, default 20000), `--publishers` (the
//! concurrency levels, default `1,4,16`), `--history` (events kept per
//! topic, default 1024, as `RedisConfig::history_len`).

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

/// The events `[from, to)` publisher `p` of `publishers` sends, of `events`.
fn share(events: u64, publishers: u64, p: u64) -> (u64, u64) {
    (events * p / publishers, events * (p + 1) / publishers)
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
                    // The topic is new: its cursors count its events from 1.
                    received = event.cursor().seq();
                    if let Ok(BenchEvent::Tick { sent_ns, .. }) =
                        serde_json::from_slice(event.data())
                    {
                        seen.latencies_ns.push(now.saturating_sub(sent_ns));
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
    let publishers: Vec<_> = (0..options.publishers)
        .map(|p| {
            let hub = hubs[0].clone();
            let (from, to) = share(options.events, options.publishers, p);
            tokio::spawn(async move {
                // Paced by deadlines, not by a sleep after each publish: the
                // timer's millisecond granularity would halve a rate of
                // 1,000/s.
                let begin = tokio::time::Instant::now();
                for (k, n) in (from..to).enumerate() {
                    if let Some(pause) = pause {
                        tokio::time::sleep_until(begin + pause.mul_f64(k as f64)).await;
                    }
                    let event = BenchEvent::Tick {
                        sent_ns: since_start(),
                        n,
                    };
                    hub.publish("load", event).await.expect("publish");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
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
    if std::env::args().nth(1).as_deref() == Some("publish") {
        return publish_bench(publish_options()?).await;
    }
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
    delete_keys(&mut conn, &prefix).await?;

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

// Publish throughput.

struct PublishOptions {
    events: u64,
    levels: Vec<u64>,
    history_len: usize,
    rounds: usize,
}

fn publish_options() -> Result<PublishOptions, String> {
    let mut options = PublishOptions {
        events: 20_000,
        levels: vec![1, 4, 16],
        history_len: push_runtime::DEFAULT_HISTORY_LEN,
        rounds: 3,
    };
    let mut args = std::env::args().skip(2);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--events" => options.events = value.parse().map_err(|e| bad(&e))?,
            "--history" => options.history_len = value.parse().map_err(|e| bad(&e))?,
            "--rounds" => options.rounds = value.parse::<usize>().map_err(|e| bad(&e))?.max(1),
            "--publishers" => {
                options.levels = value
                    .split(',')
                    .map(|level| match level.trim().parse::<u64>() {
                        Ok(0) => Err(bad(&"at least 1 publisher")),
                        Ok(n) => Ok(n),
                        Err(e) => Err(bad(&e)),
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown option {flag} {value}")),
        }
    }
    if options.events == 0 {
        return Err("--events: at least 1".to_owned());
    }
    Ok(options)
}

/// One row of the publish table.
struct Rate {
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Rate {
    /// From every publish's latency and the time they all took.
    fn of(mut latencies_ns: Vec<u64>, elapsed: Duration) -> Self {
        latencies_ns.sort_unstable();
        let at = |q: f64| {
            latencies_ns
                .get(((latencies_ns.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        Self {
            per_second: latencies_ns.len() as f64 / elapsed.as_secs_f64(),
            p50_us: at(0.50),
            p99_us: at(0.99),
        }
    }
}

/// Runs `publish(n)` for `events` events, shared by `publishers` concurrent
/// tasks, each waiting for its publish before sending the next.
async fn concurrently<F, Fut>(events: u64, publishers: u64, publish: F) -> Rate
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let publish = publish.clone();
            let (from, to) = share(events, publishers, p);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity((to - from) as usize);
                for n in from..to {
                    let sent = Instant::now();
                    publish(n).await;
                    latencies.push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("publisher"));
    }
    Rate::of(latencies, started.elapsed())
}

/// The keys of a topic of the `/bench` channel, as the broker names them.
fn topic_keys(prefix: &str, topic: &str) -> (String, String) {
    let base = format!("{prefix}:{{/bench/{topic}}}");
    (format!("{base}:meta"), format!("{base}:events"))
}

/// A payload the size of the broker's.
fn payload(n: u64) -> Vec<u8> {
    serde_json::to_vec(&BenchEvent::Tick {
        sent_ns: since_start(),
        n,
    })
    .expect("json")
}

/// The publish script run by a raw client: `EVALSHA` on one multiplexed
/// connection shared by every publisher, with the broker's arguments.
async fn raw_level(
    conn: &redis::aio::MultiplexedConnection,
    (sha, run): (&str, &str),
    keys: (String, String),
    options: &PublishOptions,
    publishers: u64,
) -> Rate {
    let (conn, sha, run, keys, len) = (
        conn.clone(),
        sha.to_owned(),
        run.to_owned(),
        Arc::new(keys),
        options.history_len,
    );
    concurrently(options.events, publishers, move |n| {
        let (mut conn, sha, run, keys) =
            (conn.clone(), sha.clone(), run.clone(), Arc::clone(&keys));
        async move {
            let _: (String, u64) = redis::cmd("EVALSHA")
                .arg(&sha)
                .arg(2)
                .arg(&keys.0)
                .arg(&keys.1)
                .arg(push_runtime::history::fresh_epoch())
                .arg(len)
                .arg("tick")
                .arg(0)
                .arg(payload(n))
                .arg("")
                .arg(0)
                .arg(&run)
                .query_async(&mut conn)
                .await
                .expect("raw publish");
        }
    })
    .await
}

/// `redis-benchmark` running the script with `publishers` connections,
/// one call in flight on each; `None` if it cannot be run.
fn redis_benchmark(
    url: &str,
    (sha, run): (&str, &str),
    keys: (String, String),
    options: &PublishOptions,
    publishers: u64,
) -> Option<Rate> {
    let info = redis::IntoConnectionInfo::into_connection_info(url).ok()?;
    let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
        return None;
    };
    let output = std::process::Command::new("redis-benchmark")
        .args(["-h", host, "-p", &port.to_string()])
        .args([
            "-c",
            &publishers.to_string(),
            "-n",
            &options.events.to_string(),
        ])
        .arg("--csv")
        .args(["EVALSHA", sha, "2", &keys.0, &keys.1, "1"])
        .arg(options.history_len.to_string())
        .args(["tick", "0"])
        .arg(String::from_utf8(payload(0)).expect("json is text"))
        .args(["", "0", run])
        .output()
        .ok()?;
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let text = String::from_utf8_lossy(&output.stdout);
    let row = text.lines().find(|line| line.starts_with("\"EVALSHA"))?;
    let fields: Vec<f64> = row
        .rsplit("\",\"")
        .take(7)
        .map(|f| f.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    // Reversed: max, p99, p95, p50, min, avg, rps.
    let [_, p99, _, p50, _, _, rps] = fields.as_slice() else {
        return None;
    };
    Some(Rate {
        per_second: *rps,
        p50_us: p50 * 1000.0,
        p99_us: p99 * 1000.0,
    })
}

/// The broker: `Hub::publish` on one node.
async fn broker_level(
    hub: &Hub<BenchEvent>,
    topic: &str,
    options: &PublishOptions,
    publishers: u64,
) -> Rate {
    let (hub, topic) = (hub.clone(), Arc::<str>::from(topic));
    concurrently(options.events, publishers, move |n| {
        let (hub, topic) = (hub.clone(), Arc::clone(&topic));
        async move {
            let event = BenchEvent::Tick {
                sent_ns: since_start(),
                n,
            };
            hub.publish(&topic, event).await.expect("publish");
        }
    })
    .await
}

async fn publish_bench(options: PublishOptions) -> Result<(), Box<dyn std::error::Error>> {
    since_start();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("push-bench:{}", std::process::id());
    let redis = RedisConfig::new(url.as_str())
        .key_prefix(prefix.as_str())
        .history_len(options.history_len);
    let mut config = HubConfig::default();
    config.history_len = options.history_len;
    let hub = Hub::with_broker(Arc::new(RedisBroker::connect(redis).await?), config);

    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(RedisBroker::publish_script())
        .query_async(&mut conn)
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    let run = info
        .lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .ok_or("no run_id in INFO server")?
        .trim()
        .to_owned();
    let script = (sha.as_str(), run.as_str());
    // Warm-up: connections open, the script cached in Redis and the node.
    let warm = PublishOptions {
        events: 500,
        levels: Vec::new(),
        history_len: options.history_len,
        rounds: 1,
    };
    raw_level(&conn, script, topic_keys(&prefix, "warm-raw"), &warm, 4).await;
    broker_level(&hub, "warm-broker", &warm, 4).await;

    let mut rows: Vec<(String, u64, Rate)> = Vec::new();
    for (round, &publishers) in
        (0..options.rounds).flat_map(|round| options.levels.iter().map(move |level| (round, level)))
    {
        let keys = |name: &str| topic_keys(&prefix, &format!("{name}-{publishers}-{round}"));
        if let Some(rate) = redis_benchmark(&url, script, keys("cli"), &options, publishers) {
            rows.push((
                "redis-benchmark (script, no broker)".to_owned(),
                publishers,
                rate,
            ));
        }
        let rate = raw_level(&conn, script, keys("raw"), &options, publishers).await;
        rows.push((
            "raw client (script, no broker)".to_owned(),
            publishers,
            rate,
        ));
        let topic = format!("node-{publishers}-{round}");
        let rate = broker_level(&hub, &topic, &options, publishers).await;
        rows.push(("broker: Hub::publish".to_owned(), publishers, rate));
        // A topic the node mirrors: a subscriber reads it meanwhile.
        let topic = format!("mirrored-{publishers}-{round}");
        let mut subscription = hub.subscribe(&topic, Start::Now, None).await?;
        let reader = tokio::spawn(async move {
            let mut out = Vec::with_capacity(256);
            loop {
                out.clear();
                subscription.next_batch(&mut out, 256).await;
            }
        });
        let rate = broker_level(&hub, &topic, &options, publishers).await;
        reader.abort();
        rows.push((
            "broker, topic mirrored (1 subscriber)".to_owned(),
            publishers,
            rate,
        ));
    }

    delete_keys(&mut conn, &prefix).await?;

    // Each row: its median round by publishes/s, in the order first run.
    let order: Vec<String> = rows.iter().map(|row| row.0.clone()).collect();
    rows.sort_by(|a, b| a.2.per_second.total_cmp(&b.2.per_second));
    let mut medians: Vec<(String, u64, Rate)> = Vec::new();
    for (name, publishers, _) in &rows {
        if medians.iter().any(|m| &m.0 == name && m.1 == *publishers) {
            continue;
        }
        let same: Vec<_> = rows
            .iter()
            .filter(|row| &row.0 == name && row.1 == *publishers)
            .collect();
        let median = &same[same.len() / 2].2;
        let rate = Rate {
            per_second: median.per_second,
            p50_us: median.p50_us,
            p99_us: median.p99_us,
        };
        medians.push((name.clone(), *publishers, rate));
    }
    let position = |name: &String| order.iter().position(|n| n == name);
    medians.sort_by_key(|row| (row.1, position(&row.0)));
    let rows = medians;
    println!(
        "{} publishes per row and round, one topic per row and round, history {}; \
         the median of {} rounds\n",
        options.events, options.history_len, options.rounds
    );
    println!("| setup | publishers | publishes/s | vs raw | p50 latency | p99 latency |");
    println!("|---|---|---|---|---|---|");
    for &publishers in &options.levels {
        let level: Vec<_> = rows.iter().filter(|row| row.1 == publishers).collect();
        // The best raw figure of the level is the baseline.
        let raw = level
            .iter()
            .filter(|row| row.0.contains("no broker"))
            .map(|row| row.2.per_second)
            .fold(0.0, f64::max);
        for (name, _, rate) in level {
            println!(
                "| {name} | {publishers} | {:.0} | {:.0}% | {:.0} µs | {:.0} µs |",
                rate.per_second,
                100.0 * rate.per_second / raw,
                rate.p50_us,
                rate.p99_us
            );
        }
    }
    Ok(())
}

/// Deletes the keys a run left under `prefix`.
async fn delete_keys(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> redis::RedisResult<()> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(conn)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).query_async::<()>(conn).await?;
    }
    Ok(())
}

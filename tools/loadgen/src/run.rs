//! The measurements: each starts (or attaches to) a server process, drives
//! it, and reports from its `/proc` counters.

use crate::Options;
use crate::clients::{self, Progress};
use crate::measure::{self, Report, now_micros, percentile};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// A server process under measurement (killed on drop if we started it).
pub struct Server {
    pub base: String,
    pub pid: u32,
    child: Option<Child>,
    pub stdin: Option<ChildStdin>,
    stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback address of its own for each server, 127.0.0.2 to 127.0.0.251
/// in turn. Sockets an earlier run left in TIME_WAIT (its publishers', its
/// floor's) name that run's server address, so a new server, whose port
/// comes from the same ephemeral range as their client ports, never meets
/// one of their 4-tuples (which ended a connection with a reset).
fn fresh_address() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(std::process::id());
    format!("127.0.0.{}:0", 2 + n % 250)
}

/// Starts `loadgen serve <args>` (pinned to `--server-core` with `taskset`
/// when it is installed) and waits for the address it listens on.
fn spawn(o: &Options, args: &[String]) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let pin = o
        .server_core
        .as_ref()
        .filter(|_| Command::new("taskset").arg("-V").output().is_ok());
    // A higher descriptor limit for the idle-connection runs, where allowed.
    let mut script =
        String::from("ulimit -n 65536 2>/dev/null || ulimit -n hard 2>/dev/null; exec");
    if let Some(core) = pin {
        script.push_str(&format!(" taskset -c {core}"));
    }
    script.push_str(" \"$@\"");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(exe)
        .arg("serve")
        .args(args)
        .args(["--addr", &fresh_address()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected server output: {line:?}"))?
        .to_owned();
    Ok(Server {
        base: format!("http://{addr}"),
        pid: child.id(),
        stdin: child.stdin.take(),
        stdout: Some(stdout),
        child: Some(child),
    })
}

/// The server of a run: started here (`push` or `baseline`) or given.
fn server(o: &Options) -> Result<Server, String> {
    match o.server.as_str() {
        "external" => Ok(Server {
            base: o.url.clone().ok_or("--server external needs --url")?,
            pid: o.pid.ok_or("--server external needs --pid (for /proc)")?,
            child: None,
            stdin: None,
            stdout: None,
        }),
        kind @ ("push" | "baseline") => {
            let mut args = vec![kind.to_owned(), "--history".into(), o.history.to_string()];
            if kind == "baseline" {
                args.truncate(1);
            } else {
                if o.serve || o.http2 > 0 {
                    args.push("--serve".into());
                }
                if let Some(ahead) = o.backpressure {
                    args.extend([
                        "--backpressure".into(),
                        ahead.to_string(),
                        "--backpressure-wait".into(),
                        o.backpressure_wait_ms.to_string(),
                    ]);
                }
            }
            spawn(o, &args)
        }
        other => Err(format!("unknown server {other}: push|baseline|external")),
    }
}

/// The pool of shared HTTP/2 connections of `--http2`, if given.
fn h2_pool(o: &Options, server: &Server) -> Option<Arc<clients::H2Pool>> {
    let host = server.base.strip_prefix("http://").unwrap_or(&server.base);
    (o.http2 > 0).then(|| Arc::new(clients::H2Pool::new(host, o.http2)))
}

/// What the subscribers spoke: `http/1.1`, or `h2c×<streams per connection>`.
fn protocol(o: &Options) -> String {
    if o.http2 > 0 {
        format!("h2c×{}", o.http2)
    } else {
        "http/1.1".into()
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// The chat event JSON for event `n`, padded to about `size` bytes.
fn event_body(n: usize, publisher: usize, size: usize) -> String {
    let head = format!("{n} {} {publisher}", now_micros());
    let bare = r#"{"type":"message","from":"lg","text":""}"#.len() + head.len();
    let pad = size.saturating_sub(bare + 1);
    format!(
        r#"{{"type":"message","from":"lg","text":"{head} {}"}}"#,
        "x".repeat(pad)
    )
}

async fn publish(
    http: &reqwest::Client,
    url: &str,
    n: usize,
    publisher: usize,
    size: usize,
) -> Result<(), String> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(event_body(n, publisher, size))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("publish answered {}", response.status()));
    }
    Ok(())
}

/// S subscribers, M events: sequential (optionally in lockstep), at a rate,
/// or from K concurrent publishers.
pub async fn fanout(o: &Options) -> Result<Report, String> {
    let server = server(o)?;
    let topic = format!("lg{}", std::process::id());
    let base = format!("{}/chat/{topic}", server.base);
    let pool = h2_pool(o, &server);
    let progress = Arc::new(Progress::default());
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(2 * o.subscribers.max(1));
    let mut tasks = Vec::with_capacity(o.subscribers);
    for _ in 0..o.subscribers {
        let (base, ready, progress) = (base.clone(), ready_tx.clone(), Arc::clone(&progress));
        let (transport, events) = (o.transport, o.events);
        tasks.push(tokio::spawn(clients::subscribe(
            transport,
            base,
            events,
            ready,
            progress,
            pool.clone(),
        )));
    }
    drop(ready_tx);
    for _ in 0..o.subscribers {
        ready_rx
            .recv()
            .await
            .ok_or("a subscriber ended before it was ready")?
            .map_err(|e| format!("a subscriber failed: {e}"))?;
    }
    // Pollers become "ready" on their first answer; let the next request arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;

    before_measuring()?;
    let total = o.subscribers * o.events;
    let syscalls = measure::SyscallCount::start(server.pid);
    let before = measure::sample(server.pid);
    let client_before = measure::sample(std::process::id());
    let started = Instant::now();
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let mut publishers = Vec::new();
    for publisher in 0..o.publishers {
        let (http, url, next, progress) = (
            http.clone(),
            base.clone(),
            Arc::clone(&next),
            Arc::clone(&progress),
        );
        let (events, size, rate, lockstep, subscribers) =
            (o.events, o.size, o.rate, o.lockstep, o.subscribers);
        publishers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= events {
                    return Ok::<_, String>(());
                }
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(n as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                if lockstep {
                    let target = n * subscribers;
                    progress.target.store(target, Ordering::Relaxed);
                    while progress.delivered.load(Ordering::Relaxed) < target {
                        let wait = progress.reached.notified();
                        if progress.delivered.load(Ordering::Relaxed) >= target {
                            break;
                        }
                        let _ = tokio::time::timeout(Duration::from_millis(50), wait).await;
                    }
                }
                publish(&http, &url, n, publisher, size).await?;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.map_err(|e| e.to_string())??;
    }
    let published = started.elapsed();
    progress.target.store(total, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(o.timeout_s);
    while progress.delivered.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(20), progress.reached.notified()).await;
    }
    let elapsed = started.elapsed();
    let after = measure::sample(server.pid);
    let client_after = measure::sample(std::process::id());
    let writes = syscalls
        .finish()
        .unwrap_or(after.writes.saturating_sub(before.writes));
    let delivered = progress.delivered.load(Ordering::Relaxed);

    let (mut latencies, mut duplicates, mut reordered, mut lost, mut errors) =
        (Vec::new(), 0, 0, 0, Vec::new());
    for task in tasks {
        if !task.is_finished() {
            task.abort();
        }
        match task.await {
            Ok(Ok(seen)) => {
                duplicates += seen.duplicates;
                reordered += seen.reordered;
                lost += seen.lost();
                latencies.extend(seen.latencies_us);
            }
            Ok(Err(error)) => errors.push(error),
            Err(_) => {}
        }
    }
    // Subscribers that did not finish: whatever they miss is lost.
    lost = lost.max(total.saturating_sub(delivered));
    latencies.sort_unstable();
    let cpu_us = (after.cpu_s - before.cpu_s) * 1e6;
    // The load generator's own CPU: when it nears the wall time, the
    // latencies measure the load generator, not the server.
    let client_busy = (client_after.cpu_s - client_before.cpu_s) / elapsed.as_secs_f64();
    let mode = match (o.lockstep, o.rate, o.publishers) {
        (true, _, _) => "lockstep".to_owned(),
        (_, Some(rate), _) => format!("{rate}/s"),
        (_, _, 1) => "sequential".to_owned(),
        (_, _, k) => format!("{k} publishers"),
    };
    let mut report = Report::default();
    report
        .set("server", o.server.clone())
        .set("transport", o.transport.name())
        .set("publishing", mode)
        .set(
            "backpressure",
            match (o.server.as_str(), o.backpressure) {
                ("push", Some(ahead)) => format!("ahead {ahead}, {} ms", o.backpressure_wait_ms),
                _ => "off".to_owned(),
            },
        )
        .set("subscribers", o.subscribers)
        .set("events", o.events)
        .set("deliveries", delivered)
        .num(
            "server_cpu_us_per_delivery",
            cpu_us / delivered.max(1) as f64,
            2,
        )
        .num(
            "kernel_share",
            (after.sys_s - before.sys_s) * 1e6 / cpu_us.max(1.0),
            2,
        )
        .num(
            "writes_per_delivery",
            writes as f64 / delivered.max(1) as f64,
            3,
        )
        .num(
            "p50_ms",
            f64::from(percentile(&latencies, 0.50)) / 1000.0,
            2,
        )
        .num(
            "p90_ms",
            f64::from(percentile(&latencies, 0.90)) / 1000.0,
            2,
        )
        .num(
            "p99_ms",
            f64::from(percentile(&latencies, 0.99)) / 1000.0,
            2,
        )
        .num("max_ms", f64::from(percentile(&latencies, 1.0)) / 1000.0, 2)
        .num(
            "deliveries_per_s",
            delivered as f64 / elapsed.as_secs_f64(),
            0,
        )
        .num("publish_s", published.as_secs_f64(), 3)
        .num("loadgen_cpu_share", client_busy, 2)
        .set("lost", lost)
        .set("duplicates", duplicates)
        .set("reordered", reordered)
        .set("load", load_average());
    report.print();
    if let Some(error) = errors.first() {
        return Err(format!(
            "{} subscribers failed, e.g.: {error}",
            errors.len()
        ));
    }
    if lost + duplicates + reordered > 0 {
        return Err("events were lost, duplicated or reordered".into());
    }
    Ok(report)
}

/// The physical floor: `--connections` loopback sockets, a writer process
/// doing one `write()` of `--batch` events of `--size` bytes per socket per
/// round, `--events` rounds; its CPU per event.
pub async fn floor(o: &Options) -> Result<Report, String> {
    let mut args: Vec<String> = [
        "floor",
        "--connections",
        &o.connections.to_string(),
        "--events",
        &(o.events / o.batch).max(1).to_string(),
        "--batch",
        &o.batch.to_string(),
        "--size",
        &o.size.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    if o.epoll {
        args.push("--epoll".to_owned());
    }
    let mut server = spawn(o, &args)?;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let rounds = (o.events / o.batch).max(1);
    let per_socket = rounds * o.batch * o.size;
    let mut readers = Vec::new();
    for _ in 0..o.connections {
        let mut socket = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| e.to_string())?;
        readers.push(tokio::spawn(async move {
            let mut buffer = vec![0u8; 64 * 1024];
            let mut read = 0;
            while read < per_socket {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            read
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let syscalls = measure::SyscallCount::start(server.pid);
    let before = measure::sample(server.pid);
    let started = Instant::now();
    let stdin = server.stdin.as_mut().ok_or("no stdin")?;
    stdin.write_all(b"go\n").map_err(|e| e.to_string())?;
    stdin.flush().map_err(|e| e.to_string())?;
    let mut received = 0;
    for reader in readers {
        received += reader.await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed();
    // The writer prints "done" once its last write returned.
    if let Some(stdout) = &mut server.stdout {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
    }
    let after = measure::sample(server.pid);
    let writes = syscalls
        .finish()
        .unwrap_or(after.writes.saturating_sub(before.writes));
    let events = o.connections * rounds * o.batch;
    let cpu_us = (after.cpu_s - before.cpu_s) * 1e6;
    let mut report = Report::default();
    report
        .set("server", if o.epoll { "floor-epoll" } else { "floor" })
        .set("connections", o.connections)
        .set("events_per_write", o.batch)
        .set("deliveries", events)
        .num("server_cpu_us_per_delivery", cpu_us / events as f64, 2)
        .num(
            "server_cpu_us_per_write",
            cpu_us / (o.connections * rounds) as f64,
            2,
        )
        .num(
            "kernel_share",
            (after.sys_s - before.sys_s) * 1e6 / cpu_us.max(1.0),
            2,
        )
        .num("writes_per_delivery", writes as f64 / events as f64, 3)
        .num("deliveries_per_s", events as f64 / elapsed.as_secs_f64(), 0)
        .set(
            "lost_bytes",
            (o.connections * per_socket).saturating_sub(received),
        )
        .set("load", load_average());
    report.print();
    Ok(report)
}

/// Memory per idle connection: the server's resident memory before and
/// after `--connections` subscribers connect and sit idle.
pub async fn idle(o: &Options) -> Result<Report, String> {
    let server = server(o)?;
    let topic = format!("idle{}", std::process::id());
    let base = format!("{}/chat/{topic}", server.base);
    // Warm the server up (topic, first allocations) before the first reading.
    let warm = Arc::new(Progress::default());
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let pool = h2_pool(o, &server);
    let warmup = tokio::spawn(clients::subscribe(
        o.transport,
        base.clone(),
        1,
        tx,
        Arc::clone(&warm),
        pool.clone(),
    ));
    rx.recv()
        .await
        .ok_or("the first subscriber ended before it was ready")??;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = measure::sample(server.pid);
    let progress = Arc::new(Progress::default());
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(2 * o.connections.max(1));
    let mut tasks = Vec::new();
    for _ in 0..o.connections {
        let (base, ready, progress) = (base.clone(), ready_tx.clone(), Arc::clone(&progress));
        tasks.push(tokio::spawn(clients::subscribe(
            o.transport,
            base,
            1,
            ready,
            progress,
            pool.clone(),
        )));
    }
    drop(ready_tx);
    for _ in 0..o.connections {
        ready_rx
            .recv()
            .await
            .ok_or("a connection ended before it was ready")?
            .map_err(|e| format!("a connection failed (`ulimit -n` too low?): {e}"))?;
    }
    // Every connection has had its answer; wait until the server has handled
    // what followed (a held long poll's second request) and is idle again.
    let after = settled(server.pid).await;
    let per_connection = (after.rss_kib as f64 - before.rss_kib as f64) / o.connections as f64;
    let mut report = Report::default();
    report
        .set("server", o.server.clone())
        .set("transport", o.transport.name())
        .set("protocol", protocol(o))
        .set("connections", o.connections)
        .set(
            "tcp_connections",
            pool.as_ref()
                .map_or(o.connections + 1, |p| p.connections.load(Ordering::Relaxed)),
        )
        .set("rss_before_kib", before.rss_kib)
        .set("rss_after_kib", after.rss_kib)
        .num("kib_per_connection", per_connection, 2)
        .set("load", load_average());
    report.print();
    for task in tasks {
        task.abort();
    }
    warmup.abort();
    Ok(report)
}

/// Samples the server until its CPU time stops moving (two readings 250 ms
/// apart alike: nothing left to handle), for at most 20 s.
async fn settled(pid: u32) -> measure::ProcSample {
    let mut last = measure::sample(pid);
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = measure::sample(pid);
        if now.cpu_s == last.cpu_s {
            return now;
        }
        last = now;
    }
    last
}

/// Runs `LOADGEN_BEFORE_PUBLISH`, if set, once everything is connected and
/// before anything is measured (e.g. `callgrind_control -z <pid>`, so a
/// profile leaves out connection setup).
fn before_measuring() -> Result<(), String> {
    if let Ok(command) = std::env::var("LOADGEN_BEFORE_PUBLISH") {
        Command::new("sh")
            .arg("-c")
            .arg(&command)
            .status()
            .map_err(|e| format!("LOADGEN_BEFORE_PUBLISH: {e}"))?;
    }
    Ok(())
}

/// Server CPU of an empty short poll answered `304 Not Modified`.
pub async fn poll304(o: &Options) -> Result<Report, String> {
    let server = server(o)?;
    let url = format!("{}/chat/poll{}/poll", server.base, std::process::id());
    let http = reqwest::Client::new();
    let first = http.get(&url).send().await.map_err(|e| e.to_string())?;
    let etag = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .ok_or("the poll answer has no ETag")?
        .to_owned();
    let pollers = 4;
    // Every poller's connection is open before anything is measured.
    let warm = (0..pollers).map(|_| http.get(&url).header("if-none-match", &etag).send());
    for answer in futures_util::future::join_all(warm).await {
        answer.map_err(|e| e.to_string())?;
    }
    before_measuring()?;
    let before = measure::sample(server.pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..pollers {
        let (http, url, etag, polls) = (http.clone(), url.clone(), etag.clone(), o.polls / pollers);
        tasks.push(tokio::spawn(async move {
            let mut not_modified = 0;
            for _ in 0..polls {
                let response = http
                    .get(&url)
                    .header("if-none-match", &etag)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                not_modified += usize::from(response.status() == 304);
                let _ = response.bytes().await;
            }
            Ok::<_, String>(not_modified)
        }));
    }
    let mut not_modified = 0;
    for task in tasks {
        not_modified += task.await.map_err(|e| e.to_string())??;
    }
    let elapsed = started.elapsed();
    let after = measure::sample(server.pid);
    let polls = (o.polls / pollers) * pollers;
    let mut report = Report::default();
    report
        .set("server", o.server.clone())
        .set("polls", polls)
        .set("answered_304", not_modified)
        .num(
            "server_cpu_us_per_poll",
            (after.cpu_s - before.cpu_s) * 1e6 / polls.max(1) as f64,
            2,
        )
        .num("polls_per_s", polls as f64 / elapsed.as_secs_f64(), 0)
        .set("load", load_average());
    report.print();
    if not_modified != polls {
        return Err(format!(
            "{} of {polls} polls were not answered 304",
            polls - not_modified
        ));
    }
    Ok(report)
}

/// The figures `compare` summarizes, each a median over a server's runs.
const COMPARED: [&str; 9] = [
    "server_cpu_us_per_delivery",
    "kernel_share",
    "writes_per_delivery",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "deliveries_per_s",
    "publish_s",
];

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The fan-out of `o` against the baseline and the framework, alternately,
/// `--repeat` times each; then each figure's median per server and the
/// framework's as a multiple of the baseline's.
pub async fn compare(o: &Options) -> Result<(), String> {
    let servers = ["baseline", "push"];
    let mut reports: Vec<Vec<Report>> = vec![Vec::new(), Vec::new()];
    let mut failures = Vec::new();
    for run in 0..o.repeat {
        for (i, server) in servers.iter().enumerate() {
            eprintln!("loadgen compare: run {} of {}, {server}", run + 1, o.repeat);
            let mut o = o.clone();
            o.server = (*server).to_owned();
            match fanout(&o).await {
                Ok(report) => reports[i].push(report),
                Err(error) => failures.push(format!("{server}, run {}: {error}", run + 1)),
            }
        }
    }
    let medians: Vec<Vec<Option<f64>>> = reports
        .iter()
        .map(|runs| {
            COMPARED
                .iter()
                .map(|key| {
                    let mut values: Vec<f64> = runs
                        .iter()
                        .filter_map(|report| report.number(key))
                        .collect();
                    median(&mut values)
                })
                .collect()
        })
        .collect();
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    println!();
    println!(
        "| median of {} runs ({} subscribers, {}, {}) | baseline | push | push / baseline |",
        o.repeat,
        o.subscribers,
        o.transport.name(),
        o.rate.map_or("as fast as possible".to_owned(), |r| format!(
            "{r} events/s"
        )),
    );
    println!("|---|---|---|---|");
    let mut json = serde_json::Map::new();
    for (k, key) in COMPARED.iter().enumerate() {
        let (base, push) = (medians[0][k], medians[1][k]);
        let ratio = match (base, push) {
            (Some(b), Some(p)) if b > 0.0 => Some(round(p / b)),
            _ => None,
        };
        let show = |v: Option<f64>| v.map_or("–".to_owned(), |v| round(v).to_string());
        println!(
            "| {key} | {} | {} | {} |",
            show(base),
            show(push),
            show(ratio)
        );
        json.insert(
            (*key).to_owned(),
            serde_json::json!({ "baseline": base, "push": push, "ratio": ratio }),
        );
    }
    json.insert("runs".into(), o.repeat.into());
    json.insert("load".into(), load_average().into());
    println!("{}", serde_json::Value::Object(json));
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

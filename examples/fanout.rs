//! Fan-out check against a running chat server: opens S subscribers on one
//! topic (SSE or WebSocket), publishes M messages over HTTP, and reports the
//! delivery rate, publish-to-receive latency, and any loss, duplicate or
//! reordering.
//!
//! ```text
//! cargo run --release --example chat &
//! cargo run --release --example fanout -- --subscribers 1000 --events 200 --transport ws
//! ```
//!
//! Options: `--url` (default `PUSH_URL` or http://127.0.0.1:3000), `--topic`
//! (default `fanout`), `--subscribers` (default 100), `--events` (default 100),
//! `--transport` (`sse` or `ws`, default `sse`), `--rate` (events per second,
//! default as fast as the server accepts them).

use futures_util::StreamExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

struct Options {
    url: String,
    topic: String,
    subscribers: usize,
    events: usize,
    transport: String,
    rate: Option<f64>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        url: std::env::var("PUSH_URL").unwrap_or_else(|_| "http://127.0.0.1:3000".into()),
        topic: "fanout".into(),
        subscribers: 100,
        events: 100,
        transport: "sse".into(),
        rate: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => options.url = value.trim_end_matches('/').to_owned(),
            "--topic" => options.topic = value,
            "--subscribers" => options.subscribers = number()?,
            "--events" => options.events = number()?,
            "--transport" if value == "sse" || value == "ws" => options.transport = value,
            "--rate" => options.rate = Some(value.parse().map_err(|e| format!("--rate: {e}"))?),
            _ => return Err(format!("unknown option {flag} {value}")),
        }
    }
    Ok(options)
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default()
}

/// What one subscriber saw: message numbers in arrival order and latencies.
#[derive(Default)]
struct Seen {
    numbers: Vec<usize>,
    latencies_us: Vec<u64>,
}

fn record(seen: &mut Seen, data: &str) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(data) else {
        return;
    };
    let Some(text) = value["text"].as_str() else {
        return;
    };
    let Some((number, sent)) = text.split_once(' ') else {
        return;
    };
    if let (Ok(number), Ok(sent)) = (number.parse(), sent.parse::<u128>()) {
        seen.numbers.push(number);
        seen.latencies_us
            .push(now_micros().saturating_sub(sent) as u64);
    }
}

async fn subscribe_sse(
    url: String,
    events: usize,
    ready: mpsc::Sender<()>,
) -> Result<Seen, String> {
    let response = reqwest::get(&url).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut seen = Seen::default();
    let mut announced = false;
    while seen.numbers.len() < events {
        let chunk = body
            .next()
            .await
            .ok_or("stream ended")?
            .map_err(|e| e.to_string())?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.contains("event: push.ready") && !announced {
                announced = true;
                let _ = ready.send(()).await;
            }
            if !block.contains("event: message\n") {
                continue;
            }
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                record(&mut seen, data);
            }
        }
    }
    Ok(seen)
}

async fn subscribe_ws(url: String, events: usize, ready: mpsc::Sender<()>) -> Result<Seen, String> {
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| e.to_string())?;
    let mut seen = Seen::default();
    while seen.numbers.len() < events {
        match socket
            .next()
            .await
            .ok_or("socket closed")?
            .map_err(|e| e.to_string())?
        {
            Message::Text(text) => {
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| e.to_string())?;
                match value["event"].as_str() {
                    Some("push.ready") => {
                        let _ = ready.send(()).await;
                    }
                    Some("message") => record(&mut seen, &value["data"].to_string()),
                    _ => {}
                }
            }
            Message::Close(frame) => return Err(format!("closed: {frame:?}")),
            _ => {}
        }
    }
    Ok(seen)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let o = options()?;
    let stream_url = match o.transport.as_str() {
        "ws" => format!("{}/chat/{}/ws", o.url.replacen("http", "ws", 1), o.topic),
        _ => format!("{}/chat/{}/sse", o.url, o.topic),
    };
    let (ready_tx, mut ready_rx) = mpsc::channel(o.subscribers.max(1));
    let mut tasks = Vec::with_capacity(o.subscribers);
    for _ in 0..o.subscribers {
        let (url, ready, events) = (stream_url.clone(), ready_tx.clone(), o.events);
        tasks.push(tokio::spawn(async move {
            match url.starts_with("ws") {
                true => subscribe_ws(url, events, ready).await,
                false => subscribe_sse(url, events, ready).await,
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..o.subscribers {
        ready_rx
            .recv()
            .await
            .ok_or("a subscriber failed before it was ready")?;
    }

    let http = reqwest::Client::new();
    let publish_url = format!("{}/chat/{}", o.url, o.topic);
    let started = Instant::now();
    for n in 0..o.events {
        if let Some(rate) = o.rate {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let body = format!(
            r#"{{"type":"message","from":"fanout","text":"{n} {}"}}"#,
            now_micros()
        );
        let response = http
            .post(&publish_url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("publish answered {}", response.status()));
        }
    }
    let published = started.elapsed();

    let (mut latencies, mut lost, mut duplicates, mut reordered) = (Vec::new(), 0, 0, 0);
    for task in tasks {
        let seen = task.await.map_err(|e| e.to_string())??;
        let mut sorted = seen.numbers.clone();
        sorted.sort_unstable();
        sorted.dedup();
        duplicates += seen.numbers.len() - sorted.len();
        lost += o.events - sorted.len();
        reordered += usize::from(seen.numbers.windows(2).any(|w| w[0] > w[1]));
        latencies.extend(seen.latencies_us);
    }
    let delivered_in = started.elapsed();
    latencies.sort_unstable();
    let deliveries = latencies.len();
    println!(
        "| transport | subscribers | events | deliveries | deliveries/s | publish/s | p50 latency | p99 latency | lost | duplicates | reordered streams |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {} | {} | {} |",
        o.transport,
        o.subscribers,
        o.events,
        deliveries,
        deliveries as f64 / delivered_in.as_secs_f64(),
        o.events as f64 / published.as_secs_f64(),
        percentile(&latencies, 0.50) as f64 / 1000.0,
        percentile(&latencies, 0.99) as f64 / 1000.0,
        lost,
        duplicates,
        reordered
    );
    if lost + duplicates + reordered > 0 {
        return Err("events were lost, duplicated or reordered".into());
    }
    Ok(())
}

//! The traffic of a run: subscribers on every transport (the typed Rust
//! client, through the front proxy) recording every update, and publishers
//! POSTing events with unique ids, recording each answer.

use crate::check::{Ack, Record, Seen};
use crate::probe::Probe;
use futures_util::StreamExt;
use push_runtime::Cursor;
use push_runtime::client::{Client, ClientConfig, Transport, Update};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Milliseconds since the run started: the one clock of every record.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn ms(self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

pub const TRANSPORTS: [Transport; 5] = [
    Transport::Sse,
    Transport::WebSocket,
    Transport::LongPoll,
    Transport::ShortPoll,
    Transport::Iframe,
];

pub fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Sse => "sse",
        Transport::WebSocket => "ws",
        Transport::LongPoll => "long-poll",
        Transport::ShortPoll => "poll",
        Transport::Iframe => "iframe",
        _ => "auto",
    }
}

/// Fast reconnection: faults last a second or two, the run a minute or two.
fn client_config() -> ClientConfig {
    ClientConfig::default()
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(2))
        .idle_timeout(Some(Duration::from_secs(2)))
        .poll_interval(Duration::from_millis(100))
        .long_poll_timeout(Duration::from_secs(1))
}

/// One subscriber and what it recorded.
pub struct Subscriber {
    pub name: String,
    /// The index of the topic it reads in the run's topics.
    pub topic: usize,
    pub transport: Transport,
    /// Sleep after each item, in milliseconds (0: a fast client).
    pub slow_ms: u64,
    pub records: Arc<Mutex<Vec<Record>>>,
    /// Until when (run milliseconds) it reads nothing: the `slow-client` fault.
    pub stall_until: Arc<AtomicU64>,
    pub position: Arc<Mutex<Option<Cursor>>>,
    pub ended: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Reads `topics[topic]`.
    pub fn start(
        base: &str,
        topics: &[String],
        topic: usize,
        transport: Transport,
        index: usize,
        slow_ms: u64,
        clock: Clock,
    ) -> Result<Self, String> {
        let client =
            Client::<Probe>::with_config(base, client_config()).map_err(|e| e.to_string())?;
        let records = Arc::new(Mutex::new(Vec::new()));
        let stall_until = Arc::new(AtomicU64::new(0));
        let position = Arc::new(Mutex::new(None));
        let ended = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(read(
            client,
            topics[topic].clone(),
            transport,
            slow_ms,
            clock,
            Arc::clone(&records),
            Arc::clone(&stall_until),
            Arc::clone(&position),
            Arc::clone(&ended),
        ));
        let name = if topics.len() > 1 {
            format!("{}#{index}@{}", transport_name(transport), topics[topic])
        } else {
            format!("{}#{index}", transport_name(transport))
        };
        Ok(Self {
            name,
            topic,
            transport,
            slow_ms,
            records,
            stall_until,
            position,
            ended,
            task,
        })
    }

    pub fn position(&self) -> Option<Cursor> {
        *self.position.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn has_started(&self) -> bool {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|r| matches!(r.seen, Seen::Ready(_)))
    }

    pub fn stop(&self) -> Vec<Record> {
        self.task.abort();
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[allow(clippy::too_many_arguments)]
async fn read(
    client: Client<Probe>,
    topic: String,
    transport: Transport,
    slow_ms: u64,
    clock: Clock,
    records: Arc<Mutex<Vec<Record>>>,
    stall_until: Arc<AtomicU64>,
    position: Arc<Mutex<Option<Cursor>>>,
    ended: Arc<AtomicBool>,
) {
    let mut stream = client.subscribe(&topic).transport(transport).stream();
    while let Some(item) = stream.next().await {
        let seen = match item {
            Ok(Update::Ready { cursor }) => Seen::Ready(cursor),
            Ok(Update::Event {
                cursor,
                event: Probe::Tick { id, .. },
            }) => Seen::Event { cursor, id },
            Ok(Update::Gap(gap)) => Seen::Gap {
                from: gap.from,
                to: gap.to,
                missed: gap.missed,
            },
            Ok(Update::Reconnecting { .. }) => Seen::Reconnecting,
            Ok(_) => continue,
            Err(error) => Seen::Error(error.to_string()),
        };
        let at_ms = clock.ms();
        if let Some(cursor) = stream.position() {
            *position.lock().unwrap_or_else(|p| p.into_inner()) = Some(cursor);
        }
        records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(crate::check::Record { at_ms, seen });
        if slow_ms > 0 {
            tokio::time::sleep(Duration::from_millis(slow_ms)).await;
        }
        let until = stall_until.load(Ordering::Relaxed);
        let now = clock.ms();
        if until > now {
            tokio::time::sleep(Duration::from_millis(until - now)).await;
        }
    }
    ended.store(true, Ordering::SeqCst);
}

/// A failure's kind, for counting: its text without the URL of the request
/// (`send: error sending request for url (…)`).
pub fn failure_kind(error: &str) -> &str {
    error.find(" for url (").map_or(error, |at| &error[..at])
}

/// Everything publishers did.
#[derive(Default)]
pub struct Published {
    pub acks: Vec<Ack>,
    /// Publishes that failed (may still have been stored): the topic's
    /// index, the id, why.
    pub failed: Vec<(usize, u64, String)>,
}

pub struct Publisher {
    task: JoinHandle<()>,
}

impl Publisher {
    /// POSTs `rate` events a second until `stop`, to each of `topics` in
    /// turn; ids are `(index << 40) | n`, unique in the run.
    pub fn start(
        base: &str,
        topics: &[String],
        index: u32,
        rate: f64,
        clock: Clock,
        stop: Arc<AtomicBool>,
        out: Arc<Mutex<Published>>,
    ) -> Result<Self, String> {
        if topics.is_empty() {
            return Err("a publisher needs a topic".to_owned());
        }
        let http = reqwest::Client::builder()
            // One connection per publish: the front proxy spreads them over the nodes.
            .pool_max_idle_per_host(0)
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?;
        let urls: Vec<String> = topics
            .iter()
            .map(|topic| format!("{base}/probe/{topic}"))
            .collect();
        let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                n += 1;
                let id = (u64::from(index) << 40) | n;
                // Publishers start on different topics.
                let topic = (n as usize + index as usize) % urls.len();
                let result = publish(&http, &urls[topic], id, index).await;
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(cursor) => out.acks.push(Ack {
                        topic,
                        cursor,
                        id,
                        at_ms: clock.ms(),
                    }),
                    Err(error) => out.failed.push((topic, id, error)),
                }
            }
        });
        Ok(Self { task })
    }

    pub async fn join(self) {
        let _ = self.task.await;
    }
}

async fn publish(
    http: &reqwest::Client,
    url: &str,
    id: u64,
    publisher: u32,
) -> Result<Cursor, String> {
    let body = serde_json::to_vec(&Probe::Tick { id, publisher }).map_err(|e| e.to_string())?;
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("body: {e}"))?;
    if !status.is_success() {
        // The route's answer says which broker error it was: keep its start.
        let answer: String = String::from_utf8_lossy(&body).chars().take(160).collect();
        return Err(format!("{status}: {}", answer.trim()));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        cursor: Cursor,
    }
    let answer: Answer = serde_json::from_slice(&body).map_err(|e| format!("answer: {e}"))?;
    Ok(answer.cursor)
}

//! Subscribers, one per transport. Each finds the load generator's events in
//! what it reads by their `"text":"<n> <micros> <publisher> …"` field, whatever the framing,
//! and records numbers (for loss, duplicates, order) and latencies.

use crate::measure::now_micros;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, mpsc};

/// The five transports, plus what the URL path of each is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Sse,
    Ws,
    Poll,
    LongPoll,
    Iframe,
}

impl Transport {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "sse" => Self::Sse,
            "ws" => Self::Ws,
            "poll" => Self::Poll,
            "long-poll" => Self::LongPoll,
            "iframe" => Self::Iframe,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Ws => "ws",
            Self::Poll => "poll",
            Self::LongPoll => "long-poll",
            Self::Iframe => "iframe",
        }
    }
}

/// Shared by all subscribers of a run: deliveries so far, and a wake-up for
/// the publisher when they reach `target`.
#[derive(Default)]
pub struct Progress {
    pub delivered: AtomicUsize,
    pub target: AtomicUsize,
    pub reached: Notify,
}

impl Progress {
    fn add(&self, n: usize) {
        let now = self.delivered.fetch_add(n, Ordering::Relaxed) + n;
        if now >= self.target.load(Ordering::Relaxed) {
            self.reached.notify_one();
        }
    }
}

/// What one subscriber saw.
pub struct Seen {
    got: Vec<bool>,
    /// The last event number seen from each publisher (each publishes in order).
    last: Vec<usize>,
    pub count: usize,
    pub duplicates: usize,
    pub reordered: usize,
    pub latencies_us: Vec<u32>,
}

impl Seen {
    fn new(events: usize) -> Self {
        Self {
            got: vec![false; events],
            last: Vec::new(),
            count: 0,
            duplicates: 0,
            reordered: 0,
            latencies_us: Vec::with_capacity(events),
        }
    }

    pub fn lost(&self) -> usize {
        self.got.len() - self.count
    }

    fn done(&self) -> bool {
        self.count == self.got.len()
    }

    /// Records every complete event text in `bytes`; returns how many bytes
    /// were consumed (the rest may hold the start of an event).
    fn scan(&mut self, bytes: &[u8], progress: &Progress) -> usize {
        const KEY: &[u8] = b"\"text\":\"";
        let mut at = 0;
        let mut recorded = 0;
        while let Some(start) = find(&bytes[at..], KEY) {
            let text_start = at + start + KEY.len();
            let Some(len) = bytes[text_start..].iter().position(|&b| b == b'"') else {
                break;
            };
            self.record(&bytes[text_start..text_start + len]);
            recorded += 1;
            at = text_start + len + 1;
        }
        progress.add(recorded);
        // Keep a tail that may hold the beginning of a key.
        let keep_from =
            find(&bytes[at..], KEY).map_or(bytes.len().saturating_sub(KEY.len()), |s| at + s);
        keep_from.max(at)
    }

    fn record(&mut self, text: &[u8]) {
        let now = now_micros();
        let text = std::str::from_utf8(text).unwrap_or("");
        let mut words = text.split(' ');
        let (Some(Ok(n)), Some(Ok(sent)), Some(Ok(publisher))) = (
            words.next().map(str::parse::<usize>),
            words.next().map(str::parse::<u64>),
            words.next().map(str::parse::<usize>),
        ) else {
            return;
        };
        let Some(slot) = self.got.get_mut(n) else {
            return;
        };
        if *slot {
            self.duplicates += 1;
            return;
        }
        *slot = true;
        self.count += 1;
        if self.last.len() <= publisher {
            self.last.resize(publisher + 1, 0);
        }
        // Numbers start at 0; `last` holds number + 1 (0: none yet).
        if n < self.last[publisher] {
            self.reordered += 1;
        }
        self.last[publisher] = n + 1;
        self.latencies_us
            .push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Finds the value of the last `"cursor":"…"` in `bytes`.
fn last_cursor(bytes: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"cursor\":\"";
    let mut at = 0;
    let mut found = None;
    while let Some(start) = find(&bytes[at..], KEY) {
        let value = at + start + KEY.len();
        let len = bytes[value..].iter().position(|&b| b == b'"')?;
        found = Some(String::from_utf8_lossy(&bytes[value..value + len]).into_owned());
        at = value + len;
    }
    found
}

pub type Ready = mpsc::Sender<()>;

/// Runs one subscriber until it has seen `events` events; `ready` is signalled
/// once the subscription exists (first bytes received, or first poll answered).
pub async fn subscribe(
    transport: Transport,
    base: String,
    events: usize,
    ready: Ready,
    progress: Arc<Progress>,
) -> Result<Seen, String> {
    let seen = Seen::new(events);
    match transport {
        Transport::Sse => stream(format!("{base}/sse"), seen, ready, progress, false).await,
        Transport::Iframe => stream(format!("{base}/iframe"), seen, ready, progress, true).await,
        Transport::Ws => {
            ws(
                format!("{}/ws", base.replacen("http", "ws", 1)),
                seen,
                ready,
                progress,
            )
            .await
        }
        Transport::Poll | Transport::LongPoll => poll(transport, base, seen, ready, progress).await,
    }
}

/// SSE and the forever frame: a streamed body (the frame ends with `push.end`
/// after a size or age limit, then resumes from the cursor it gives).
async fn stream(
    url: String,
    mut seen: Seen,
    ready: Ready,
    progress: Arc<Progress>,
    resumes: bool,
) -> Result<Seen, String> {
    let client = reqwest::Client::new();
    let mut after: Option<String> = None;
    let mut announced = false;
    while !seen.done() {
        let request = match &after {
            // Cursors are `<digits>-<digits>`: nothing to escape.
            Some(cursor) => client.get(format!("{url}?after={cursor}")),
            None => client.get(&url),
        };
        let response = request.send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{url}: {}", response.status()));
        }
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        while !seen.done() {
            let Some(chunk) = body.next().await else {
                if resumes {
                    break;
                }
                return Err("stream ended".into());
            };
            let chunk = chunk.map_err(|e| e.to_string())?;
            if !announced {
                announced = true;
                let _ = ready.send(()).await;
            }
            buffer.extend_from_slice(&chunk);
            if resumes && let Some(cursor) = last_cursor(&buffer) {
                after = Some(cursor);
            }
            let used = seen.scan(&buffer, &progress);
            buffer.drain(..used);
        }
    }
    Ok(seen)
}

async fn ws(
    url: String,
    mut seen: Seen,
    ready: Ready,
    progress: Arc<Progress>,
) -> Result<Seen, String> {
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut announced = false;
    while !seen.done() {
        match socket
            .next()
            .await
            .ok_or("socket closed")?
            .map_err(|e| e.to_string())?
        {
            Message::Text(text) => {
                if !announced {
                    announced = true;
                    let _ = ready.send(()).await;
                }
                seen.scan(text.as_bytes(), &progress);
            }
            Message::Close(frame) => return Err(format!("closed: {frame:?}")),
            _ => {}
        }
    }
    Ok(seen)
}

/// Short or long polling: ask from the last answer's cursor until done.
async fn poll(
    transport: Transport,
    base: String,
    mut seen: Seen,
    ready: Ready,
    progress: Arc<Progress>,
) -> Result<Seen, String> {
    let client = reqwest::Client::new();
    let url = format!("{base}/{}", transport.name());
    let mut cursor: Option<String> = None;
    let mut announced = false;
    while !seen.done() {
        let request = match &cursor {
            Some(cursor) => client.get(format!("{url}?after={cursor}")),
            None => client.get(&url),
        };
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{url}: {status}"));
        }
        if !announced {
            announced = true;
            let _ = ready.send(()).await;
        }
        seen.scan(&body, &progress);
        // The answer's own cursor comes first: `{"cursor":"…","more":…,"events":[…]}`.
        let Some(next) = first_cursor(&body) else {
            return Err("poll answer without a cursor".into());
        };
        cursor = Some(next);
        if transport == Transport::Poll && find(&body, b"\"more\":true").is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    Ok(seen)
}

fn first_cursor(bytes: &[u8]) -> Option<String> {
    let end = find(bytes, b"\"more\"")?;
    last_cursor(&bytes[..end])
}

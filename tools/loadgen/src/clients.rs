//! Subscribers, one per transport. Each finds the load generator's events in
//! what it reads by their `"text":"<n> <micros> <publisher> …"` field, whatever the framing,
//! and records numbers (for loss, duplicates, order) and latencies.
//!
//! Subscribers speak HTTP/1.1 and WebSocket over plain sockets, with one read
//! per wakeup into a reused buffer and no per-event allocation: a full HTTP
//! client per subscriber (reqwest, tokio-tungstenite) costs more CPU per
//! delivery than the server under test, and a load generator that saturates
//! its own core measures itself, not the server's latency. The framing the
//! scan skips is checked where it matters: the status line of every answer,
//! WebSocket frame headers (parsed with tungstenite's `FrameHeader`), and the
//! cursor of every poll answer.

use crate::measure::now_micros;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, SemaphorePermit, mpsc};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, OpCode};

/// The five transports (`--transport`; each value is also the last segment
/// of its URL path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Server-Sent Events (`/sse`)
    Sse,
    /// WebSocket (`/ws`)
    Ws,
    /// short polls (`/poll`)
    Poll,
    /// long polls (`/long-poll`)
    LongPoll,
    /// the forever frame (`/iframe`)
    Iframe,
}

impl Transport {
    /// The name on the command line and in reports.
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
    memchr::memmem::find(haystack, needle)
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

/// Where a subscriber says it is ready (`Ok`) or why it failed (`Err`).
pub type Ready = mpsc::Sender<Result<(), String>>;

/// Runs one subscriber until it has seen `events` events; `ready` gets `Ok`
/// once the subscription exists (first bytes received, or first poll
/// answered), or the error that ended the subscriber (also after `Ok`).
/// `base` is `http://host:port/chat/<topic>`.
/// With `h2`, SSE and forever-frame subscribers open their streams on the
/// pool's shared HTTP/2 (h2c) connections instead of one HTTP/1.1
/// connection each.
pub async fn subscribe(
    transport: Transport,
    base: String,
    events: usize,
    ready: Ready,
    progress: Arc<Progress>,
    h2: Option<Arc<H2Pool>>,
) -> Result<Seen, String> {
    let seen = Seen::new(events);
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: only http:// URLs"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, path) = (host.to_owned(), path.to_owned());
    let failed = ready.clone();
    let result = match (transport, h2) {
        (Transport::Sse | Transport::Iframe, Some(pool)) => {
            let (segment, resumes) = (transport.name(), transport == Transport::Iframe);
            h2_stream(
                pool,
                format!("{path}/{segment}"),
                seen,
                ready,
                progress,
                resumes,
            )
            .await
        }
        (_, Some(_)) => Err(format!(
            "--http2 takes --transport sse or iframe, not {}",
            transport.name()
        )),
        (Transport::Sse, None) => {
            stream(host, format!("{path}/sse"), seen, ready, progress, false).await
        }
        (Transport::Iframe, None) => {
            stream(host, format!("{path}/iframe"), seen, ready, progress, true).await
        }
        (Transport::Ws, None) => ws(host, format!("{path}/ws"), seen, ready, progress).await,
        (Transport::Poll | Transport::LongPoll, None) => {
            poll(transport, host, path, seen, ready, progress).await
        }
    };
    if let Err(error) = &result {
        let _ = failed.try_send(Err(error.clone()));
    }
    result
}

/// Subscribers connecting at once: each holds a permit until its first answer
/// arrives, so thousands of connections opened together never overflow the
/// server's accept queue (an overflow ends in resets and SYN cookies, and
/// measures the kernel's backlog rather than the server).
static CONNECTING: Semaphore = Semaphore::const_new(256);

async fn connecting() -> Result<Option<SemaphorePermit<'static>>, String> {
    CONNECTING
        .acquire()
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Says a subscriber is ready, once (at its first answer), and gives its
/// connecting permit back.
async fn announce(opening: &mut Option<SemaphorePermit<'static>>, ready: &Ready) {
    if opening.take().is_some() {
        let _ = ready.send(Ok(())).await;
    }
}

/// How much a subscriber reads at most per wakeup.
const READ_CHUNK: usize = 16 * 1024;

/// One connection's socket and read buffer.
struct Conn {
    socket: TcpStream,
    buffer: Vec<u8>,
}

impl Conn {
    async fn open(host: &str) -> Result<Self, String> {
        let socket = TcpStream::connect(host)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        socket.set_nodelay(true).map_err(|e| e.to_string())?;
        // Closed with a reset, not a FIN: a run leaves no TIME_WAIT behind,
        // so back-to-back runs of 10,000 connections neither run out of
        // ephemeral ports nor meet a lingering socket on a reused port.
        socket.set_zero_linger().map_err(|e| e.to_string())?;
        Ok(Self {
            socket,
            buffer: Vec::with_capacity(READ_CHUNK),
        })
    }

    async fn send(&mut self, request: &str) -> Result<(), String> {
        self.socket
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())
    }

    /// Reads once more into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, String> {
        if self.buffer.capacity() - self.buffer.len() < READ_CHUNK / 2 {
            self.buffer.reserve(READ_CHUNK);
        }
        let n = self
            .socket
            .read_buf(&mut self.buffer)
            .await
            .map_err(|e| e.to_string())?;
        Ok(n > 0)
    }

    /// Reads a response head (the buffer keeps what follows it).
    async fn head(&mut self) -> Result<Head, String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buffer) {
                Ok(httparse::Status::Complete(len)) => {
                    let value = |name: &str| {
                        response
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    };
                    let head = Head {
                        status: response.code.unwrap_or(0),
                        content_length: value("content-length").and_then(|v| v.parse().ok()),
                        chunked: value("transfer-encoding")
                            .is_some_and(|v| v.eq_ignore_ascii_case("chunked")),
                    };
                    self.buffer.drain(..len);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("not an HTTP/1.1 answer: {e}")),
            }
            if !self.fill().await? {
                return Err("the connection closed before an answer".into());
            }
        }
    }
}

/// What a response head says.
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

/// Decodes `Transfer-Encoding: chunked` as bytes arrive: chunk boundaries may
/// fall anywhere, inside an event too (the server splits large batches).
#[derive(Default)]
struct Dechunk {
    /// Data bytes of the current chunk still to come.
    left: u64,
    /// The CRLF after a chunk's data is due.
    crlf: bool,
    /// The last (empty) chunk was read.
    done: bool,
}

impl Dechunk {
    /// Moves chunk data from `raw` to `body`; returns how much of `raw` was used.
    fn feed(&mut self, raw: &[u8], body: &mut Vec<u8>) -> Result<usize, String> {
        let mut at = 0;
        loop {
            if self.left > 0 {
                let n = (raw.len() - at).min(self.left as usize);
                if n == 0 {
                    return Ok(at);
                }
                body.extend_from_slice(&raw[at..at + n]);
                at += n;
                self.left -= n as u64;
                self.crlf = self.left == 0;
            } else if self.crlf {
                if raw.len() - at < 2 {
                    return Ok(at);
                }
                if &raw[at..at + 2] != b"\r\n" {
                    return Err("a chunk's data is not followed by CRLF".into());
                }
                at += 2;
                self.crlf = false;
            } else if self.done {
                return Ok(at);
            } else {
                match httparse::parse_chunk_size(&raw[at..]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        at += used;
                        self.left = size;
                        self.done = size == 0;
                        // The last chunk is followed by an empty trailer line.
                        self.crlf = size == 0;
                    }
                    Ok(httparse::Status::Partial) => return Ok(at),
                    Err(_) => return Err("an invalid chunk size".into()),
                }
            }
        }
    }
}

/// SSE and the forever frame: a streamed (chunked) body, read as it comes.
/// The forever frame ends with `push.end` after a size or age limit; the
/// subscriber then reconnects from the last cursor it saw.
async fn stream(
    host: String,
    path: String,
    mut seen: Seen,
    ready: Ready,
    progress: Arc<Progress>,
    resumes: bool,
) -> Result<Seen, String> {
    let mut opening = connecting().await?;
    let mut after: Option<String> = None;
    let mut body = Vec::with_capacity(READ_CHUNK);
    while !seen.done() {
        let mut conn = Conn::open(&host).await?;
        // Cursors are `<digits>-<digits>`: nothing to escape.
        let query = after
            .as_ref()
            .map_or(String::new(), |c| format!("?after={c}"));
        conn.send(&format!(
            "GET {path}{query} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
        ))
        .await?;
        let head = conn.head().await?;
        if head.status != 200 || !head.chunked {
            return Err(format!(
                "{path}: {}, chunked: {}",
                head.status, head.chunked
            ));
        }
        let mut chunks = Dechunk::default();
        body.clear();
        loop {
            let used = chunks.feed(&conn.buffer, &mut body)?;
            conn.buffer.drain(..used);
            if !body.is_empty() {
                announce(&mut opening, &ready).await;
                if resumes && let Some(cursor) = last_cursor(&body) {
                    after = Some(cursor);
                }
                let used = seen.scan(&body, &progress);
                body.drain(..used);
            }
            if seen.done() {
                break;
            }
            if chunks.done || !conn.fill().await? {
                if resumes {
                    break;
                }
                return Err("stream ended".into());
            }
        }
    }
    Ok(seen)
}

/// HTTP/2 connections with prior knowledge (h2c) shared by subscribers:
/// a new one every `streams` subscribers.
pub struct H2Pool {
    host: String,
    streams: usize,
    current: tokio::sync::Mutex<Option<(h2::client::SendRequest<bytes::Bytes>, usize)>>,
    /// Connections opened so far.
    pub connections: AtomicUsize,
}

impl H2Pool {
    /// A pool of connections to `host` (`ip:port`), `streams` streams each.
    pub fn new(host: &str, streams: usize) -> Self {
        Self {
            host: host.to_owned(),
            streams: streams.max(1),
            current: tokio::sync::Mutex::new(None),
            connections: AtomicUsize::new(0),
        }
    }

    /// A handle on a connection with room for one more stream.
    async fn sender(&self) -> Result<h2::client::SendRequest<bytes::Bytes>, String> {
        let mut current = self.current.lock().await;
        if let Some((sender, used)) = current.as_mut()
            && *used < self.streams
        {
            *used += 1;
            return Ok(sender.clone());
        }
        let socket = Conn::open(&self.host).await?.socket;
        // Windows large enough that flow control never holds a fan-out back:
        // the subscribers give every byte back as soon as they have read it.
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 30)
            .max_concurrent_streams(self.streams as u32)
            .handshake::<_, bytes::Bytes>(socket)
            .await
            .map_err(|e| format!("h2 handshake with {}: {e}", self.host))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.connections.fetch_add(1, Ordering::Relaxed);
        *current = Some((sender.clone(), 1));
        Ok(sender)
    }
}

/// SSE or the forever frame as one stream of a shared HTTP/2 connection:
/// the body's data frames read as they come (no chunked coding to undo).
/// Like [`stream`], the forever frame is reopened from the last cursor it
/// saw when it ends (`push.end` after its size or age limit).
async fn h2_stream(
    pool: Arc<H2Pool>,
    path: String,
    mut seen: Seen,
    ready: Ready,
    progress: Arc<Progress>,
    resumes: bool,
) -> Result<Seen, String> {
    let mut opening = connecting().await?;
    let mut after: Option<String> = None;
    let mut buffer = Vec::with_capacity(READ_CHUNK);
    while !seen.done() {
        let sender = pool.sender().await?;
        let mut sender = sender.ready().await.map_err(|e| e.to_string())?;
        let query = after
            .as_ref()
            .map_or(String::new(), |c| format!("?after={c}"));
        let request = http::Request::get(format!("http://{}{path}{query}", pool.host))
            .body(())
            .map_err(|e| e.to_string())?;
        let (response, _) = sender
            .send_request(request, true)
            .map_err(|e| format!("{path}: {e}"))?;
        let response = response.await.map_err(|e| format!("{path}: {e}"))?;
        if response.status() != 200 {
            return Err(format!("{path}: {}", response.status()));
        }
        let mut body = response.into_body();
        buffer.clear();
        while !seen.done() {
            let Some(data) = body.data().await else {
                if resumes {
                    break;
                }
                return Err("stream ended".into());
            };
            let data = data.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(data.len());
            announce(&mut opening, &ready).await;
            buffer.extend_from_slice(&data);
            if resumes && let Some(cursor) = last_cursor(&buffer) {
                after = Some(cursor);
            }
            let used = seen.scan(&buffer, &progress);
            buffer.drain(..used);
        }
    }
    Ok(seen)
}

/// WebSocket over a plain socket: the handshake by hand, frames parsed with
/// tungstenite's `FrameHeader`, pings answered with masked pongs.
async fn ws(
    host: String,
    path: String,
    mut seen: Seen,
    ready: Ready,
    progress: Arc<Progress>,
) -> Result<Seen, String> {
    let mut opening = connecting().await?;
    let mut conn = Conn::open(&host).await?;
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    conn.send(&format!(
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n"
    ))
    .await?;
    let head = conn.head().await?;
    if head.status != 101 {
        return Err(format!("{path}: {}, not 101", head.status));
    }
    let mut pong = Vec::new();
    // An empty pong; client frames are masked (the mask of an empty payload
    // changes nothing).
    let header = FrameHeader {
        opcode: OpCode::Control(Control::Pong),
        mask: Some(*b"lg01"),
        ..FrameHeader::default()
    };
    header.format(0, &mut pong).map_err(|e| e.to_string())?;
    while !seen.done() {
        let mut at = 0;
        loop {
            let mut cursor = std::io::Cursor::new(&conn.buffer[at..]);
            let Some((frame, len)) = FrameHeader::parse(&mut cursor).map_err(|e| e.to_string())?
            else {
                break;
            };
            let start = at + cursor.position() as usize;
            let end = start + len as usize;
            if end > conn.buffer.len() {
                break;
            }
            match frame.opcode {
                OpCode::Data(_) => {
                    announce(&mut opening, &ready).await;
                    seen.scan(&conn.buffer[start..end], &progress);
                }
                OpCode::Control(Control::Ping) => conn
                    .socket
                    .write_all(&pong)
                    .await
                    .map_err(|e| e.to_string())?,
                OpCode::Control(Control::Close) => {
                    return Err(format!(
                        "closed: {}",
                        String::from_utf8_lossy(&conn.buffer[start..end])
                    ));
                }
                OpCode::Control(_) => {}
            }
            at = end;
        }
        conn.buffer.drain(..at);
        if seen.done() {
            break;
        }
        if !conn.fill().await? {
            return Err("socket closed".into());
        }
    }
    Ok(seen)
}

/// Short or long polling over one keep-alive connection: ask from the last
/// answer's cursor until done.
async fn poll(
    transport: Transport,
    host: String,
    path: String,
    mut seen: Seen,
    ready: Ready,
    progress: Arc<Progress>,
) -> Result<Seen, String> {
    let path = format!("{path}/{}", transport.name());
    let mut opening = connecting().await?;
    let mut conn = Conn::open(&host).await?;
    let mut cursor: Option<String> = None;
    while !seen.done() {
        // Without a cursor a long poll would wait for the next event: the
        // first one asks for the current position at once (`timeout=0`).
        let query = match &cursor {
            Some(c) => format!("?after={c}"),
            None if transport == Transport::LongPoll => "?timeout=0".to_owned(),
            None => String::new(),
        };
        conn.send(&format!(
            "GET {path}{query} HTTP/1.1\r\nhost: {host}\r\n\r\n"
        ))
        .await?;
        let head = conn.head().await?;
        let status = head.status;
        let length = head
            .content_length
            .ok_or_else(|| format!("{path}: an answer without content-length"))?;
        while conn.buffer.len() < length {
            if !conn.fill().await? {
                return Err("the connection closed inside an answer".into());
            }
        }
        let body = &conn.buffer[..length];
        if status != 200 {
            return Err(format!(
                "{path}: {status} {}",
                String::from_utf8_lossy(body)
            ));
        }
        announce(&mut opening, &ready).await;
        seen.scan(body, &progress);
        // The answer's own cursor comes first: `{"cursor":"…","more":…,"events":[…]}`.
        let next = first_cursor(body).ok_or("poll answer without a cursor")?;
        let more = find(body, b"\"more\":true").is_some();
        cursor = Some(next);
        conn.buffer.drain(..length);
        if transport == Transport::Poll && !more {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    Ok(seen)
}

fn first_cursor(bytes: &[u8]) -> Option<String> {
    let end = find(bytes, b"\"more\"")?;
    last_cursor(&bytes[..end])
}

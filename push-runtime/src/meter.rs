//! The hub's own accounting: open connections (per topic and per transport
//! too), the bytes handed to connections that their sockets have not taken
//! yet, and the counters an operator scrapes (`metrics`): bytes written,
//! publishes and their latency, refusals, cuts. Every figure is an atomic
//! updated where the thing happens, at most once per chunk written, and
//! read only when asked.
//!
//! A chunk handed to hyper is wrapped so that its bytes are counted until
//! hyper drops it, i.e. until it is written to the socket (hyper queues
//! chunks without copying on sockets with vectored writes, Tokio's TCP
//! default). WebSocket messages are counted from the moment they are fed
//! until the flush that writes them completes.

use crate::limits::{LimitRefusal, Limits};
use crate::topic::Topic;
use bytes::Bytes;
use futures_util::Stream;
use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// The transport a connection uses, for the per-transport counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Sse,
    Ws,
    Poll,
    LongPoll,
    Iframe,
}

impl Transport {
    /// Every transport, in the order of [`Transport::index`].
    pub(crate) const ALL: [Transport; 5] = [
        Transport::Sse,
        Transport::Ws,
        Transport::Poll,
        Transport::LongPoll,
        Transport::Iframe,
    ];

    #[cfg(feature = "metrics")]
    /// The transport's name, as in its route (`…/sse`, `…/long-poll`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::Poll => "poll",
            Transport::LongPoll => "long-poll",
            Transport::Iframe => "iframe",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The upper bounds of the publish latency histogram's buckets, in
/// microseconds (the last bucket, `+Inf`, is implied).
pub(crate) const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// A latency histogram of fixed buckets, one atomic per bucket: what a
/// scrape renders as a Prometheus histogram.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    /// Observations at most each bound of [`LATENCY_BUCKETS_US`], not
    /// cumulative; the last slot holds those above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_ns: AtomicU64,
}

impl Latency {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    #[cfg(feature = "metrics")]
    /// The count of each bucket, by its upper bound in seconds (not
    /// cumulative; the last bound is infinite), the total count and the
    /// sum in seconds.
    pub(crate) fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_US.len() + 1);
        for (slot, count) in self.buckets.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            total += count;
            let bound = LATENCY_BUCKETS_US
                .get(slot)
                .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            buckets.push((bound, count));
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (buckets, total, sum)
    }
}

/// The counters of a hub that only a scrape reads (`metrics`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Bytes the sockets took (streams: when hyper dropped the chunk;
    /// WebSocket: when the flush completed; polls: the answer's body).
    pub(crate) written: AtomicU64,
    /// Events published through the hub, and publishes that failed.
    pub(crate) published: AtomicU64,
    pub(crate) publish_failed: AtomicU64,
    /// Paced publishes ([`Backpressure`](crate::Backpressure)) that stopped
    /// waiting at `max_wait`.
    pub(crate) publish_waits_cut: AtomicU64,
    /// The time each successful publish took.
    pub(crate) publish_latency: Latency,
    /// Subscriptions the authorization hook refused.
    pub(crate) unauthorized: AtomicU64,
    /// Subscriptions refused because their principal had already expired.
    pub(crate) expired_refused: AtomicU64,
    /// Connections (and held long polls) ended when their authorization
    /// expired.
    pub(crate) expired_cut: AtomicU64,
}

/// A snapshot of a hub's accounting, from [`Hub::stats`](crate::Hub::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Subscriptions open now, all transports (a poll counts while answered).
    pub connections: usize,
    /// Bytes handed to connections and not yet written to their sockets.
    pub buffered_bytes: usize,
    /// The most bytes any one connection has had buffered at once.
    pub peak_buffered_per_connection: usize,
    /// Connections whose writes are waiting for their socket now (streams at
    /// their buffer limit, WebSockets whose flush is pending).
    pub held_back: usize,
    /// Connections cut because they stayed at their buffer limit for
    /// [`Limits::stall_timeout`](crate::Limits::stall_timeout).
    pub stalled_cut: u64,
    /// Requests refused at a limit (`503`).
    pub refused_at_limit: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Meter {
    connections: AtomicUsize,
    by_transport: [AtomicUsize; Transport::ALL.len()],
    pub(crate) counters: Counters,
    per_topic: Mutex<HashMap<Topic, usize>>,
    buffered: AtomicUsize,
    peak: AtomicUsize,
    held_back: AtomicUsize,
    stalled_cut: AtomicU64,
    refused: AtomicU64,
}

impl Meter {
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            connections: self.connections.load(Ordering::SeqCst),
            buffered_bytes: self.buffered.load(Ordering::SeqCst),
            peak_buffered_per_connection: self.peak.load(Ordering::SeqCst),
            held_back: self.held_back.load(Ordering::SeqCst),
            stalled_cut: self.stalled_cut.load(Ordering::SeqCst),
            refused_at_limit: self.refused.load(Ordering::SeqCst),
        }
    }

    pub(crate) fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::SeqCst);
    }

    #[cfg(feature = "metrics")]
    /// Connections open now on `transport`.
    pub(crate) fn connections_on(&self, transport: Transport) -> usize {
        self.by_transport[transport.index()].load(Ordering::Relaxed)
    }

    #[cfg(feature = "metrics")]
    /// Topics with at least one connection now.
    pub(crate) fn topics_read(&self) -> usize {
        self.topics().len()
    }

    /// Counts `bytes` written to a socket.
    pub(crate) fn count_written(&self, bytes: usize) {
        self.counters
            .written
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a connection ended by the expiry of its authorization.
    pub(crate) fn count_expiry_cut(&self) {
        self.counters.expired_cut.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a new connection to `topic`, unless a limit is reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        topic: &Topic,
        limits: &Limits,
        transport: Transport,
    ) -> Result<ConnectionPermit, LimitRefusal> {
        let total = self.connections.fetch_add(1, Ordering::SeqCst);
        if total >= limits.max_connections {
            self.connections.fetch_sub(1, Ordering::SeqCst);
            return Err(LimitRefusal::Connections(limits.max_connections));
        }
        let mut per_topic = self.topics();
        let count = per_topic.entry(topic.clone()).or_insert(0);
        if *count >= limits.max_connections_per_topic {
            if *count == 0 {
                per_topic.remove(topic);
            }
            drop(per_topic);
            self.connections.fetch_sub(1, Ordering::SeqCst);
            return Err(LimitRefusal::TopicConnections(
                limits.max_connections_per_topic,
            ));
        }
        *count += 1;
        drop(per_topic);
        self.by_transport[transport.index()].fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionPermit {
            meter: Arc::clone(self),
            topic: topic.clone(),
            transport,
        })
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, usize>> {
        // Updated in single steps: a poisoned map is still consistent.
        self.per_topic
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    meter: Arc<Meter>,
    topic: Topic,
    transport: Transport,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut per_topic = self.meter.topics();
        if let Some(count) = per_topic.get_mut(&self.topic) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_topic.remove(&self.topic);
            }
        }
        drop(per_topic);
        self.meter.by_transport[self.transport.index()].fetch_sub(1, Ordering::Relaxed);
        self.meter.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The bytes one connection holds unwritten, and who waits for them to drain.
#[derive(Debug)]
pub(crate) struct Outbound {
    meter: Arc<Meter>,
    pending: AtomicUsize,
    /// Chunks handed over and not yet dropped.
    chunks: AtomicUsize,
    /// Counted in the meter's `held_back`.
    held: std::sync::atomic::AtomicBool,
    drained: AtomicWaker,
    budget: usize,
    stall_timeout: Duration,
}

impl Outbound {
    pub(crate) fn new(meter: Arc<Meter>, limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            meter,
            pending: AtomicUsize::new(0),
            chunks: AtomicUsize::new(0),
            held: std::sync::atomic::AtomicBool::new(false),
            drained: AtomicWaker::new(),
            budget: limits.max_buffered_per_connection.min(MAX_BUDGET),
            stall_timeout: limits.stall_timeout,
        })
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Whether nothing more may be handed over until something is written.
    fn full(&self) -> bool {
        self.pending() >= self.budget || self.chunks.load(Ordering::SeqCst) >= MAX_CHUNKS
    }

    /// The largest piece handed over at once.
    fn piece(&self) -> usize {
        (self.budget / 4).max(1)
    }

    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    pub(crate) fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }

    pub(crate) fn add(&self, bytes: usize) {
        let now = self.pending.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.meter.buffered.fetch_add(bytes, Ordering::SeqCst);
        self.meter.peak.fetch_max(now, Ordering::SeqCst);
    }

    /// `bytes` were written: no longer buffered, and counted as written.
    pub(crate) fn release(&self, bytes: usize) {
        self.pending.fetch_sub(bytes, Ordering::SeqCst);
        self.meter.buffered.fetch_sub(bytes, Ordering::SeqCst);
        self.meter.count_written(bytes);
        self.drained.wake();
    }

    /// Marks the connection as waiting for its socket, or not.
    pub(crate) fn hold(&self, waiting: bool) {
        if self.held.swap(waiting, Ordering::SeqCst) != waiting {
            if waiting {
                self.meter.held_back.fetch_add(1, Ordering::SeqCst);
            } else {
                self.meter.held_back.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    pub(crate) fn count_stall(&self) {
        self.meter.stalled_cut.fetch_add(1, Ordering::SeqCst);
    }

    /// The hub's meter.
    pub(crate) fn meter(&self) -> &Meter {
        &self.meter
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.hold(false);
    }
}

/// The most chunks a connection may have handed to hyper and not written.
///
/// hyper polls a response body only while it queues fewer than 16 chunks and
/// fewer than about 400 KiB; past that it only flushes, and a body that is
/// never polled could never notice that its peer stopped reading. Staying
/// well below both keeps the stall timeout working however small the chunks
/// (heartbeats to a dead peer) or large the batches.
const MAX_CHUNKS: usize = 8;
/// The largest per-connection budget honoured (see [`MAX_CHUNKS`]).
const MAX_BUDGET: usize = 256 * 1024;

/// A chunk counted as buffered until hyper drops it.
struct Tracked {
    bytes: Bytes,
    outbound: Arc<Outbound>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.outbound.chunks.fetch_sub(1, Ordering::SeqCst);
        self.outbound.release(self.bytes.len());
    }
}

pin_project_lite::pin_project! {
    /// A response stream that takes nothing more from `inner` while its
    /// connection holds its budget unwritten, and is cut after staying there
    /// for the stall timeout. The stream is kept inline, next to its
    /// accounting: one allocation and one pointer less per connection.
    pub(crate) struct Metered<S, K> {
        #[pin]
        inner: S,
        // What is left of a chunk larger than a piece.
        rest: Bytes,
        outbound: Arc<Outbound>,
        stall: Option<Pin<Box<tokio::time::Sleep>>>,
        done: bool,
        // Released when the response ends.
        keep: K,
    }
}

impl<S, K> Metered<S, K> {
    pub(crate) fn new(inner: S, outbound: Arc<Outbound>, keep: K) -> Self {
        Self {
            inner,
            rest: Bytes::new(),
            outbound,
            stall: None,
            done: false,
            keep,
        }
    }
}

impl<S: Stream<Item = Result<Bytes, Infallible>>, K> Stream for Metered<S, K> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let _ = this.keep;
        if *this.done {
            return Poll::Ready(None);
        }
        if this.outbound.full() {
            this.outbound.drained.register(cx.waker());
            if this.outbound.full() {
                this.outbound.hold(true);
                let timeout = this.outbound.stall_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stall.as_mut().poll(cx).is_ready() {
                    *this.done = true;
                    this.outbound.count_stall();
                    tracing::info!("cutting a connection that stopped reading");
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer stopped reading",
                    ))));
                }
                return Poll::Pending;
            }
        }
        *this.stall = None;
        this.outbound.hold(false);
        if this.rest.is_empty() {
            match this.inner.poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => *this.rest = bytes,
                Poll::Ready(None) => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Pending => return Poll::Pending,
            }
        }
        let piece = this.outbound.piece().min(this.rest.len());
        let bytes = this.rest.split_to(piece);
        this.outbound.chunks.fetch_add(1, Ordering::SeqCst);
        this.outbound.add(bytes.len());
        let outbound = Arc::clone(this.outbound);
        Poll::Ready(Some(Ok(Bytes::from_owner(Tracked { bytes, outbound }))))
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_connections_per_topic_and_in_total() {
        let meter = Arc::new(Meter::default());
        let limits = Limits::default()
            .max_connections(3)
            .max_connections_per_topic(2);
        let a = Topic::new("a").unwrap();
        let b = Topic::new("b").unwrap();
        let first = meter.admit(&a, &limits, Transport::Sse).unwrap();
        let _second = meter.admit(&a, &limits, Transport::Sse).unwrap();
        assert!(matches!(
            meter.admit(&a, &limits, Transport::Sse),
            Err(LimitRefusal::TopicConnections(2))
        ));
        let _third = meter.admit(&b, &limits, Transport::Ws).unwrap();
        assert!(matches!(
            meter.admit(&b, &limits, Transport::Ws),
            Err(LimitRefusal::Connections(3))
        ));
        assert_eq!(meter.stats().connections, 3);
        drop(first);
        assert_eq!(meter.stats().connections, 2);
        assert!(meter.admit(&a, &limits, Transport::Sse).is_ok());
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn counts_connections_per_transport_and_latency_per_bucket() {
        let meter = Arc::new(Meter::default());
        let limits = Limits::default();
        let a = Topic::new("a").unwrap();
        let sse = meter.admit(&a, &limits, Transport::Sse).unwrap();
        let _poll = meter.admit(&a, &limits, Transport::LongPoll).unwrap();
        assert_eq!(meter.connections_on(Transport::Sse), 1);
        assert_eq!(meter.connections_on(Transport::LongPoll), 1);
        assert_eq!(meter.connections_on(Transport::Ws), 0);
        assert_eq!(meter.topics_read(), 1);
        drop(sse);
        assert_eq!(meter.connections_on(Transport::Sse), 0);

        let latency = Latency::default();
        latency.observe(Duration::from_micros(100));
        latency.observe(Duration::from_micros(101));
        latency.observe(Duration::from_secs(10));
        let (buckets, count, sum) = latency.snapshot();
        assert_eq!(count, 3);
        assert_eq!(buckets.len(), LATENCY_BUCKETS_US.len() + 1);
        // At most 100 µs, then at most 250 µs, then above every bound.
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets[1], (0.00025, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((sum - 10.000201).abs() < 1e-9, "{sum}");
    }

    #[tokio::test]
    async fn holds_back_past_the_budget_and_counts_until_dropped() {
        use futures_util::StreamExt;
        let meter = Arc::new(Meter::default());
        let limits = Limits::default().max_buffered_per_connection(16);
        let outbound = Outbound::new(Arc::clone(&meter), &limits);
        let chunks = futures_util::stream::iter(
            (0..3).map(|_| Ok::<_, Infallible>(Bytes::from_static(b"12345678"))),
        );
        let mut body = Metered::new(chunks, Arc::clone(&outbound), ());
        // Handed over in pieces of a quarter of the budget.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(body.next().await.unwrap().unwrap());
        }
        assert!(held.iter().all(|piece| piece.len() == 4));
        assert_eq!(meter.stats().buffered_bytes, 16);
        // At the budget: nothing more until something is written.
        let more = tokio::time::timeout(Duration::from_millis(20), body.next()).await;
        assert!(more.is_err(), "must hold back at the budget");
        drop(held);
        assert_eq!(meter.stats().buffered_bytes, 0);
        assert_eq!(body.next().await.unwrap().unwrap(), "1234");
        assert_eq!(meter.stats().peak_buffered_per_connection, 16);
    }

    #[tokio::test]
    async fn holds_back_past_the_chunk_count_however_small_the_chunks() {
        use futures_util::StreamExt;
        let meter = Arc::new(Meter::default());
        let outbound = Outbound::new(Arc::clone(&meter), &Limits::default());
        let heartbeats =
            futures_util::stream::repeat(Ok::<_, Infallible>(Bytes::from_static(b":\n\n")));
        let mut body = Metered::new(heartbeats, outbound, ());
        let mut held = Vec::new();
        for _ in 0..MAX_CHUNKS {
            held.push(body.next().await.unwrap().unwrap());
        }
        let more = tokio::time::timeout(Duration::from_millis(20), body.next()).await;
        assert!(
            more.is_err(),
            "hyper stops polling at 16 queued chunks: stay below"
        );
        held.pop();
        assert!(body.next().await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn cuts_a_stalled_connection() {
        use futures_util::StreamExt;
        let meter = Arc::new(Meter::default());
        let limits = Limits::default()
            .max_buffered_per_connection(1)
            .stall_timeout(Duration::from_secs(3));
        let outbound = Outbound::new(Arc::clone(&meter), &limits);
        let chunks = futures_util::stream::repeat(Ok::<_, Infallible>(Bytes::from_static(b"x")));
        let mut body = Metered::new(chunks, outbound, ());
        let _held = body.next().await;
        assert!(matches!(body.next().await, Some(Err(_))));
        assert!(body.next().await.is_none());
        assert_eq!(meter.stats().stalled_cut, 1);
    }
}

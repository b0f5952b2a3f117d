//! The hub's own accounting: open connections (per topic too) and the bytes
//! handed to connections that their sockets have not taken yet.
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

    /// Counts a new connection to `topic`, unless a limit is reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        topic: &Topic,
        limits: &Limits,
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
        Ok(ConnectionPermit {
            meter: Arc::clone(self),
            topic: topic.clone(),
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

    pub(crate) fn release(&self, bytes: usize) {
        self.pending.fetch_sub(bytes, Ordering::SeqCst);
        self.meter.buffered.fetch_sub(bytes, Ordering::SeqCst);
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
        let first = meter.admit(&a, &limits).unwrap();
        let _second = meter.admit(&a, &limits).unwrap();
        assert!(matches!(
            meter.admit(&a, &limits),
            Err(LimitRefusal::TopicConnections(2))
        ));
        let _third = meter.admit(&b, &limits).unwrap();
        assert!(matches!(
            meter.admit(&b, &limits),
            Err(LimitRefusal::Connections(3))
        ));
        assert_eq!(meter.stats().connections, 3);
        drop(first);
        assert_eq!(meter.stats().connections, 2);
        assert!(meter.admit(&a, &limits).is_ok());
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

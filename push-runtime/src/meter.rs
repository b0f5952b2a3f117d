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
    stalled_cut: AtomicU64,
    refused: AtomicU64,
}

impl Meter {
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            connections: self.connections.load(Ordering::SeqCst),
            buffered_bytes: self.buffered.load(Ordering::SeqCst),
            peak_buffered_per_connection: self.peak.load(Ordering::SeqCst),
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
    drained: AtomicWaker,
    budget: usize,
    stall_timeout: Duration,
}

impl Outbound {
    pub(crate) fn new(meter: Arc<Meter>, limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            meter,
            pending: AtomicUsize::new(0),
            drained: AtomicWaker::new(),
            budget: limits.max_buffered_per_connection,
            stall_timeout: limits.stall_timeout,
        })
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
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

    pub(crate) fn count_stall(&self) {
        self.meter.stalled_cut.fetch_add(1, Ordering::SeqCst);
    }
}

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
        self.outbound.release(self.bytes.len());
    }
}

/// A response stream that takes nothing more from `inner` while its
/// connection holds its budget unwritten, and is cut after staying there
/// for the stall timeout.
pub(crate) struct Metered<S> {
    inner: Pin<Box<S>>,
    outbound: Arc<Outbound>,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
    /// Released when the response ends.
    _keep: Box<dyn Send + Sync>,
}

impl<S> Metered<S> {
    pub(crate) fn new(inner: S, outbound: Arc<Outbound>, keep: Box<dyn Send + Sync>) -> Self {
        Self {
            inner: Box::pin(inner),
            outbound,
            stall: None,
            done: false,
            _keep: keep,
        }
    }
}

impl<S: Stream<Item = Result<Bytes, Infallible>>> Stream for Metered<S> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.outbound.pending() >= self.outbound.budget {
            self.outbound.drained.register(cx.waker());
            if self.outbound.pending() >= self.outbound.budget {
                let timeout = self.outbound.stall_timeout;
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stall.as_mut().poll(cx).is_ready() {
                    self.done = true;
                    self.outbound.count_stall();
                    tracing::info!("cutting a connection that stopped reading");
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer stopped reading",
                    ))));
                }
                return Poll::Pending;
            }
        }
        self.stall = None;
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                self.outbound.add(bytes.len());
                let outbound = Arc::clone(&self.outbound);
                Poll::Ready(Some(Ok(Bytes::from_owner(Tracked { bytes, outbound }))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(never))) => match never {},
            Poll::Pending => Poll::Pending,
        }
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
        let limits = Limits::default().max_buffered_per_connection(10);
        let outbound = Outbound::new(Arc::clone(&meter), &limits);
        let chunks = futures_util::stream::iter(
            (0..3).map(|_| Ok::<_, Infallible>(Bytes::from_static(b"12345678"))),
        );
        let mut body = Metered::new(chunks, Arc::clone(&outbound), Box::new(()));
        let one = body.next().await.unwrap().unwrap();
        let two = body.next().await.unwrap().unwrap();
        assert_eq!(meter.stats().buffered_bytes, 16);
        // Over budget: nothing more until something is written.
        let third = tokio::time::timeout(Duration::from_millis(20), body.next()).await;
        assert!(third.is_err(), "must hold back past the budget");
        drop((one, two));
        assert_eq!(meter.stats().buffered_bytes, 0);
        assert!(body.next().await.is_some());
        assert_eq!(meter.stats().peak_buffered_per_connection, 16);
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
        let mut body = Metered::new(chunks, outbound, Box::new(()));
        let _held = body.next().await;
        assert!(matches!(body.next().await, Some(Err(_))));
        assert!(body.next().await.is_none());
        assert_eq!(meter.stats().stalled_cut, 1);
    }
}

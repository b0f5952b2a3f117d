//! The machinery of a long-lived connection, shared by the streaming
//! transports (SSE, WebSocket, the forever frame):
//!
//! - [`poll_next`]: the wait for the end of the connection's authorization,
//!   then events, then shutdown, then the connection's timer, in that order
//!   of precedence;
//! - [`Body`] and [`Chunks`]: a response body made of a prelude and a
//!   source of chunks, polled in place so that a connection's state is one
//!   struct rather than combinators around an async fn;
//! - [`timer`]: the connection's one reusable timer, the end of its
//!   authorization ([`Expiry`]), and deadlines that saturate instead of
//!   overflowing;
//! - [`woken`]: a source (a socket's read side, a timer) polled only once
//!   it woke the task;
//! - [`batch`]: the memory policy of the batch a connection writes from.

pub(crate) mod batch;
pub(crate) mod timer;
pub(crate) mod woken;

pub(crate) use self::timer::{Expiry, Timer};

use crate::history::{Delivery, Subscription};
use crate::shutdown::ShutdownWaiter;
use bytes::Bytes;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What ended a streaming connection's wait ([`poll_next`]).
pub(crate) enum Next {
    /// Events (or a gap) were appended to the batch.
    Batch,
    /// The server is shutting down.
    Shutdown,
    /// The connection's timer fired.
    Timer,
    /// The connection's authorization ended ([`Expiry`]): nothing more may
    /// be delivered, and nothing was taken from the subscription, so its
    /// position is still what the client was sent.
    Expired,
}

/// Polls for the end of the connection's authorization, then events
/// (appended to `batch`, at most `max`), then the shutdown signal, then
/// `timer`, in that order of precedence; `cx` is woken by whichever comes
/// first. The expiry comes first so that no batch is taken at or after it:
/// an event published before the expiry but not written by then is left
/// for the client's next subscription.
///
/// Inlined into each transport's body, as it was before it took the
/// expiry: out of line, it cost SSE about 130 more instructions per
/// delivery (`.ci/callgrind-delivery sse`).
#[inline(always)]
pub(crate) fn poll_next(
    cx: &mut Context<'_>,
    subscription: &mut Subscription,
    batch: &mut Vec<Delivery>,
    max: usize,
    shutdown: &mut ShutdownWaiter,
    timer: &mut Timer,
    expiry: Option<&mut Expiry>,
) -> Poll<Next> {
    if let Some(expiry) = expiry
        && expiry.poll(cx).is_ready()
    {
        return Poll::Ready(Next::Expired);
    }
    if subscription.poll_next_batch(cx, batch, max).is_ready() {
        return Poll::Ready(Next::Batch);
    }
    if shutdown.poll_wait(cx).is_ready() {
        return Poll::Ready(Next::Shutdown);
    }
    timer.poll(cx).map(|()| Next::Timer)
}

/// A streaming response's source of chunks after its prelude.
pub(crate) trait Chunks {
    /// The next chunk, `None` once the response ends.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>>;
}

/// A streaming response body (SSE, forever frame): a prelude, then the
/// chunks of `T`. A stream of its own, polled in place, so a connection's
/// state is one struct rather than combinators around an async fn.
pub(crate) struct Body<T> {
    prelude: Option<Bytes>,
    pub(crate) chunks: T,
}

impl<T> Body<T> {
    pub(crate) fn new(prelude: Bytes, chunks: T) -> Self {
        Self {
            prelude: Some(prelude),
            chunks,
        }
    }
}

impl<T: Chunks + Unpin> futures_util::Stream for Body<T> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(prelude) = this.prelude.take() {
            return Poll::Ready(Some(Ok(prelude)));
        }
        this.chunks.poll_chunk(cx).map(|chunk| chunk.map(Ok))
    }
}

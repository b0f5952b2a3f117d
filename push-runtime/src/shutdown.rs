//! Graceful shutdown: one signal that ends every stream of a hub, telling
//! clients to reconnect and resume.

use crate::wake::{Registration, WaitList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// A one-way signal, cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Debug, Default)]
struct ShutdownInner {
    triggered: AtomicBool,
    waiters: WaitList,
}

impl Shutdown {
    /// Raises the signal; every waiter wakes, and later waiters return at once.
    pub(crate) fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        self.inner.waiters.wake_all();
    }

    /// Whether the signal was raised.
    pub(crate) fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// A waiter that keeps its place across waits: for a connection's loop,
    /// which waits for the signal once per chunk.
    pub(crate) fn waiter(&self) -> ShutdownWaiter {
        ShutdownWaiter {
            shutdown: self.clone(),
            registration: Registration::default(),
        }
    }

    /// Waits until the signal is raised. Cancel-safe.
    pub(crate) async fn wait(&self) {
        self.waiter().wait().await;
    }
}

/// Waits for a [`Shutdown`] signal, registered once for all its waits.
#[derive(Debug)]
pub(crate) struct ShutdownWaiter {
    shutdown: Shutdown,
    registration: Registration,
}

impl ShutdownWaiter {
    /// Waits until the signal is raised. Cancel-safe.
    pub(crate) async fn wait(&mut self) {
        std::future::poll_fn(|cx| self.poll_wait(cx)).await;
    }

    /// The poll form of [`ShutdownWaiter::wait`].
    pub(crate) fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        // Register before looking again, so a trigger in between is not missed.
        self.shutdown
            .inner
            .waiters
            .register(&mut self.registration, cx.waker());
        if self.shutdown.is_triggered() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether the signal was raised.
    pub(crate) fn is_triggered(&self) -> bool {
        self.shutdown.is_triggered()
    }
}

impl Drop for ShutdownWaiter {
    fn drop(&mut self) {
        self.shutdown
            .inner
            .waiters
            .deregister(&mut self.registration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_waiters_and_stays_raised() {
        let signal = Shutdown::default();
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.wait().await }
        });
        let kept = tokio::spawn({
            let mut waiter = signal.waiter();
            async move {
                // A waiter that was polled (and registered) before, as a
                // connection's loop does between chunks.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_millis(1), waiter.wait()).await;
                waiter.wait().await;
                waiter.is_triggered()
            }
        });
        tokio::task::yield_now().await;
        signal.trigger();
        waiter.await.unwrap();
        assert!(kept.await.unwrap());
        signal.wait().await;
        assert!(signal.is_triggered());
    }
}

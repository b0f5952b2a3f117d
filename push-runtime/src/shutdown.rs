//! Graceful shutdown: one signal that ends every stream of a hub, telling
//! clients to reconnect and resume.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// A one-way signal, cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Debug, Default)]
struct ShutdownInner {
    triggered: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    /// Raises the signal; every waiter wakes, and later waiters return at once.
    pub(crate) fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether the signal was raised.
    pub(crate) fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Waits until the signal is raised. Cancel-safe.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so a trigger in between is not missed.
            notified.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
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
        tokio::task::yield_now().await;
        signal.trigger();
        waiter.await.unwrap();
        signal.wait().await;
        assert!(signal.is_triggered());
    }
}

//! A source of a connection's task (a WebSocket's read side, a heartbeat
//! or ping timer) polled only when that source woke the task: a task with
//! several sources, woken for a batch of events (most wakeups), skips the
//! others.

use futures_util::task::AtomicWaker;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

/// Polls a source of a connection's task (a WebSocket's read side, a ping
/// or heartbeat timer) only when that source woke the task, or at first: a
/// task woken for a batch of events, most wakeups, skips the others.
pub(crate) struct Woken {
    flag: Arc<WokenFlag>,
    waker: Waker,
}

struct WokenFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl std::task::Wake for WokenFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Woken {
    pub(crate) fn new() -> Self {
        let flag = Arc::new(WokenFlag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&flag));
        Self { flag, waker }
    }

    /// Polls `source` with a waker that flags this source before waking
    /// the task of `cx`, if the flag is up; `Pending` otherwise.
    pub(crate) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        source: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        self.flag.task.register(cx.waker());
        let polled = source(&mut Context::from_waker(&self.waker));
        if polled.is_ready() {
            // More may be ready at once: look again next time.
            self.flag.woken.store(true, Ordering::Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A source that counts its polls and keeps the waker it was given.
    #[derive(Default)]
    struct Source {
        polls: Cell<usize>,
        waker: Cell<Option<Waker>>,
        ready: Cell<bool>,
    }

    impl Source {
        fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.set(self.polls.get() + 1);
            self.waker.set(Some(cx.waker().clone()));
            if self.ready.get() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn a_source_is_polled_at_first_then_only_once_it_woke_the_task() {
        let woken = Woken::new();
        let source = Source::default();
        let task = Arc::new(WokenFlag {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        let task_waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&task_waker);
        let mut poll = || woken.poll(&mut cx, |cx| source.poll(cx));

        assert!(poll().is_pending());
        assert_eq!(source.polls.get(), 1, "polled at first");
        assert!(poll().is_pending());
        assert_eq!(source.polls.get(), 1, "not polled again before it wakes");

        source.waker.take().unwrap().wake();
        assert!(
            task.woken.load(Ordering::Acquire),
            "its wake reaches the task"
        );
        source.ready.set(true);
        assert!(poll().is_ready());
        assert_eq!(source.polls.get(), 2, "polled once it woke");
        assert!(poll().is_ready());
        assert_eq!(source.polls.get(), 3, "polled again after being ready");
        source.ready.set(false);
        assert!(poll().is_pending());
        assert!(poll().is_pending());
        assert_eq!(source.polls.get(), 4);
    }
}

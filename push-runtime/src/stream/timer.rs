//! A connection's one reusable timer, and deadlines computed from
//! configured durations without overflow.

use super::woken::Woken;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A connection's one reusable timer (heartbeats, an age limit), polled
/// only once it fired: a busy connection registers no timer per chunk, and
/// a wakeup for events does not touch it.
pub(crate) struct Timer {
    sleep: Pin<Box<Sleep>>,
    fired: Woken,
}

impl Timer {
    /// A timer that fires at `deadline`.
    pub(crate) fn at(deadline: Instant) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            fired: Woken::new(),
        }
    }

    /// Fires at `deadline` instead.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline);
    }

    /// Ready once the timer fired; polls the sleep only after it woke the task.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = &mut self.sleep;
        self.fired
            .poll(cx, |cx| std::future::Future::poll(sleep.as_mut(), cx))
    }
}

/// `start + wait`, where a wait too long for the clock (a configured
/// `Duration::MAX`) means "about never": a century.
pub(crate) fn after(start: Instant, wait: Duration) -> Instant {
    const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start
        .checked_add(wait.min(NEVER))
        .unwrap_or_else(|| start + NEVER)
}

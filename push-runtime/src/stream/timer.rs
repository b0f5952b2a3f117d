//! A connection's one reusable timer, the end of its authorization
//! ([`Expiry`]), and deadlines computed from configured durations without
//! overflow.

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

/// The end of a connection's authorization (the principal's expiry, on the
/// runtime's clock): a deadline looked at before each batch is taken, so no
/// event is taken at or after it, and a timer that wakes an idle
/// connection at it. Boxed by its holders: a connection without an expiry
/// pays one pointer and one comparison per wakeup.
pub(crate) struct Expiry {
    at: Instant,
    timer: Timer,
}

impl Expiry {
    /// The authorization ends at `at`.
    pub(crate) fn at(at: Instant) -> Box<Self> {
        Box::new(Self {
            at,
            timer: Timer::at(at),
        })
    }

    /// Ready once the authorization ended: the clock is at or past the
    /// deadline, or the deadline's timer fired.
    ///
    /// Never inlined: the wait of every connection ([`super::poll_next`])
    /// stays as small as without an expiry, and so do the transports'
    /// bodies it is inlined into.
    #[inline(never)]
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        self.timer.poll(cx)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_expiry_is_ready_at_its_deadline_and_wakes_an_idle_task() {
        let at = Instant::now() + Duration::from_secs(5);
        let mut expiry = Expiry::at(at);
        let mut polls = 0;
        let fired = std::future::poll_fn(|cx| {
            polls += 1;
            if Instant::now() < at {
                assert!(expiry.poll(cx).is_pending(), "ready before its deadline");
            }
            expiry.poll(cx)
        })
        .await;
        assert_eq!(fired, ());
        assert!(Instant::now() >= at);
        assert_eq!(polls, 2, "polled at first, then woken once, by its timer");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(expiry.poll(&mut cx).is_ready(), "and stays ready");
    }
}

//! Rounds of a topic's up-to-date subscribers, for paced publishers
//! ([`Backpressure`](crate::Backpressure)).
//!
//! Once a publisher paces on a topic ([`Pacing::track`]), a subscription
//! that has read everything **joins** the round of the next event (its
//! sequence number), and **leaves** it when it takes that event (or goes
//! away). A round gets no new members once its event is appended (a
//! subscription that reads after that takes the event itself), so the
//! round of event `n` is exactly the subscriptions that were up to date
//! when `n` was appended, busy writing or waiting. A publisher waits until
//! no round at or before its bound has members ([`Pacing::poll_drained`]),
//! or gives up on those rounds ([`Pacing::abandon`]): a subscription that
//! stopped reading is in one round at most, so it holds publishers for one
//! wait at most.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The most rounds kept open: past it, the oldest is given up (its
/// publishers, if any, stop waiting for it). Paced publishers give up the
/// rounds they waited for in vain, so this bounds the rounds of a topic
/// whose stalled readers no paced publisher waits for (a hub without
/// back-pressure publishing on a paced topic): 4,096 rounds, 64 KiB.
const MAX_ROUNDS: usize = 4096;

/// The rounds of one topic.
#[derive(Debug, Default)]
pub(crate) struct Pacing {
    /// Whether rounds are counted: read without the lock, so a topic no
    /// publisher paces on costs each read one load.
    tracking: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `(sequence number, members)`, in increasing sequence numbers; the
    /// front has members (empty rounds are dropped from the front).
    rounds: VecDeque<(u64, usize)>,
    /// Publishers waiting for the front round to empty.
    publishers: Vec<Waker>,
}

impl Inner {
    /// Drops the empty rounds at the front; the publishers to wake if any went.
    fn pop_empty(&mut self) -> Vec<Waker> {
        let before = self.rounds.len();
        while self
            .rounds
            .front()
            .is_some_and(|&(_, members)| members == 0)
        {
            self.rounds.pop_front();
        }
        if self.rounds.len() == before {
            Vec::new()
        } else {
            std::mem::take(&mut self.publishers)
        }
    }
}

impl Pacing {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Updated in single steps: a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Counts rounds from now on.
    pub(crate) fn track(&self) {
        self.tracking.store(true, Ordering::Relaxed);
    }

    /// Whether rounds are counted.
    pub(crate) fn is_tracking(&self) -> bool {
        self.tracking.load(Ordering::Relaxed)
    }

    /// A subscription that was in the round of `left` (if any) took that
    /// event, and now waits for `joins` (if any). The caller holds its
    /// topic's ring, so `joins` is not appended meanwhile.
    pub(crate) fn step(&self, left: Option<u64>, joins: Option<u64>) {
        let mut inner = self.lock();
        let mut publishers = Vec::new();
        if let Some(seq) = left
            && let Ok(i) = inner.rounds.binary_search_by_key(&seq, |&(s, _)| s)
        {
            inner.rounds[i].1 = inner.rounds[i].1.saturating_sub(1);
            publishers = inner.pop_empty();
        }
        if let Some(seq) = joins {
            match inner.rounds.back_mut() {
                Some((last, members)) if *last == seq => *members += 1,
                Some((last, _)) if *last > seq => {
                    // Not newer than the newest round: only if it is still open.
                    if let Ok(i) = inner.rounds.binary_search_by_key(&seq, |&(s, _)| s) {
                        inner.rounds[i].1 += 1;
                    }
                }
                _ => {
                    inner.rounds.push_back((seq, 1));
                    if inner.rounds.len() > MAX_ROUNDS {
                        inner.rounds.pop_front();
                        publishers.extend(inner.pop_empty());
                        publishers.append(&mut inner.publishers);
                    }
                }
            }
        }
        drop(inner);
        publishers.into_iter().for_each(Waker::wake);
    }

    /// Ready once no round at or before `bound` has members; otherwise `cx`
    /// is woken when the front round empties or is given up.
    pub(crate) fn poll_drained(&self, cx: &mut Context<'_>, bound: u64) -> Poll<()> {
        let mut inner = self.lock();
        match inner.rounds.front() {
            Some(&(seq, _)) if seq <= bound => {
                if !inner.publishers.iter().any(|w| w.will_wake(cx.waker())) {
                    inner.publishers.push(cx.waker().clone());
                }
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// Gives up on the rounds at or before `bound`: their members that have
    /// not taken their event are not waited for any more.
    pub(crate) fn abandon(&self, bound: u64) {
        let mut inner = self.lock();
        let before = inner.rounds.len();
        while inner.rounds.front().is_some_and(|&(seq, _)| seq <= bound) {
            inner.rounds.pop_front();
        }
        let mut publishers = inner.pop_empty();
        if inner.rounds.len() != before {
            publishers.append(&mut inner.publishers);
        }
        drop(inner);
        publishers.into_iter().for_each(Waker::wake);
    }

    #[cfg(test)]
    fn members(&self, seq: u64) -> usize {
        let inner = self.lock();
        inner
            .rounds
            .iter()
            .find(|&&(s, _)| s == seq)
            .map_or(0, |&(_, members)| members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wake::{Count, woken};
    use std::sync::Arc;

    fn drained(pacing: &Pacing, bound: u64, count: &Arc<Count>) -> bool {
        let waker = Waker::from(Arc::clone(count));
        pacing
            .poll_drained(&mut Context::from_waker(&waker), bound)
            .is_ready()
    }

    #[test]
    fn a_round_holds_publishers_until_its_last_member_takes_its_event() {
        let pacing = Pacing::default();
        let publisher = Arc::new(Count::default());
        pacing.step(None, Some(5));
        pacing.step(None, Some(5));
        assert_eq!(pacing.members(5), 2);
        assert!(drained(&pacing, 4, &publisher), "nothing at or before 4");
        assert!(!drained(&pacing, 5, &publisher));
        // The first member takes 5 and waits for 6.
        pacing.step(Some(5), Some(6));
        assert_eq!(woken(&publisher), 0);
        assert!(!drained(&pacing, 5, &publisher));
        // The second goes away.
        pacing.step(Some(5), None);
        assert_eq!(woken(&publisher), 1, "woken once 5 emptied");
        assert!(drained(&pacing, 5, &publisher));
        assert!(!drained(&pacing, 6, &publisher));
    }

    #[test]
    fn abandoned_rounds_are_not_waited_for_and_their_members_leave_nothing() {
        let pacing = Pacing::default();
        let publisher = Arc::new(Count::default());
        pacing.step(None, Some(3));
        pacing.step(None, Some(3));
        assert!(!drained(&pacing, 3, &publisher));
        pacing.abandon(3);
        assert_eq!(woken(&publisher), 1);
        assert!(drained(&pacing, 3, &publisher));
        // A member of the abandoned round comes back: it takes nothing away
        // from the next round.
        pacing.step(None, Some(4));
        pacing.step(Some(3), Some(4));
        assert_eq!(pacing.members(4), 2);
        assert!(!drained(&pacing, 4, &publisher));
    }

    #[test]
    fn rounds_nobody_waits_for_are_bounded() {
        let pacing = Pacing::default();
        // A reader stalls in each round and no paced publisher gives up on them.
        for seq in 1..=(MAX_ROUNDS as u64 + 100) {
            pacing.step(None, Some(seq));
        }
        assert_eq!(pacing.lock().rounds.len(), MAX_ROUNDS);
        assert_eq!(pacing.members(100), 0, "the oldest were given up");
        assert_eq!(pacing.members(MAX_ROUNDS as u64 + 100), 1);
    }

    #[test]
    fn a_later_round_may_empty_first() {
        let pacing = Pacing::default();
        let publisher = Arc::new(Count::default());
        pacing.step(None, Some(1));
        pacing.step(None, Some(2));
        pacing.step(Some(2), None);
        assert!(
            !drained(&pacing, 2, &publisher),
            "round 1 still has a member"
        );
        pacing.step(Some(1), None);
        assert!(drained(&pacing, 2, &publisher));
    }
}

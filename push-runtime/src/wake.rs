//! Wake-ups for many waiters of one signal (a topic's appends, the hub's
//! shutdown), cheap on the hot path.
//!
//! Each waiter keeps a [`Registration`] of its own across polls: registering
//! again before the next signal only compares a generation number, and a
//! signal takes the whole list of wakers at once and wakes them outside the
//! lock. Compared with `tokio::sync::Notify`, where every wait is a new
//! future linked into the list and unlinked again, this halves the
//! instructions a subscriber spends per woken event (see `.ci/callgrind-delivery`).

use slab::Slab;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

/// The wakers waiting for the next signal.
#[derive(Debug, Default)]
pub(crate) struct WaitList {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Counts signals: a registration made before the last one is spent.
    generation: u64,
    wakers: Slab<Waker>,
}

/// Where a waiter stands in a [`WaitList`]: nowhere, or at a slot of the
/// generation it registered in. The owner must call [`WaitList::deregister`]
/// before it goes away (a forgotten registration only costs one spurious
/// wake-up, at the next signal).
#[derive(Debug, Default)]
pub(crate) struct Registration {
    at: Option<(u64, usize)>,
}

impl WaitList {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Updated in single steps: a poisoned list is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Makes sure `waker` is woken by the next signal.
    pub(crate) fn register(&self, registration: &mut Registration, waker: &Waker) {
        let mut inner = self.lock();
        if let Some((generation, key)) = registration.at
            && generation == inner.generation
            && let Some(registered) = inner.wakers.get_mut(key)
        {
            if !registered.will_wake(waker) {
                registered.clone_from(waker);
            }
            return;
        }
        let key = inner.wakers.insert(waker.clone());
        registration.at = Some((inner.generation, key));
    }

    /// Takes back a registration that the next signal has not consumed.
    pub(crate) fn deregister(&self, registration: &mut Registration) {
        let Some((generation, key)) = registration.at.take() else {
            return;
        };
        let mut inner = self.lock();
        if generation == inner.generation {
            inner.wakers.try_remove(key);
        }
    }

    /// Wakes every registered waker; later registrations wait for the next signal.
    pub(crate) fn wake_all(&self) {
        let mut taken = {
            let mut inner = self.lock();
            inner.generation = inner.generation.wrapping_add(1);
            if inner.wakers.is_empty() {
                return;
            }
            std::mem::take(&mut inner.wakers)
        };
        for waker in taken.drain() {
            waker.wake();
        }
        // Hand the (now empty) allocation back for the next round of
        // registrations, unless some have already made one of their own.
        let mut inner = self.lock();
        if inner.wakers.is_empty() && inner.wakers.capacity() < taken.capacity() {
            inner.wakers = taken;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().wakers.len()
    }
}

/// A waker that counts how often it was woken, for tests here and in the
/// modules that wait on a [`WaitList`].
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Count(std::sync::atomic::AtomicUsize);

#[cfg(test)]
impl std::task::Wake for Count {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How often `count` was woken.
#[cfg(test)]
pub(crate) fn woken(count: &std::sync::Arc<Count>) -> usize {
    count.0.load(std::sync::atomic::Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A waiter: its wake counter, its waker and its (empty) registration.
    fn waiter() -> (Arc<Count>, Waker, Registration) {
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        (count, waker, Registration::default())
    }

    #[test]
    fn a_signal_wakes_each_registered_waiter_once() {
        let list = WaitList::default();
        let (a, wa, mut ra) = waiter();
        let (b, wb, mut rb) = waiter();
        list.register(&mut ra, &wa);
        list.register(&mut ra, &wa);
        list.register(&mut rb, &wb);
        assert_eq!(list.len(), 2, "registering twice keeps one slot");
        list.wake_all();
        assert_eq!((woken(&a), woken(&b)), (1, 1));
        list.wake_all();
        assert_eq!((woken(&a), woken(&b)), (1, 1), "a registration is spent");
        list.register(&mut ra, &wa);
        list.wake_all();
        assert_eq!((woken(&a), woken(&b)), (2, 1));
    }

    #[test]
    fn deregistering_removes_only_a_live_registration() {
        let list = WaitList::default();
        let (a, wa, mut ra) = waiter();
        let (b, wb, mut rb) = waiter();
        list.register(&mut ra, &wa);
        list.deregister(&mut ra);
        assert_eq!(list.len(), 0);
        list.register(&mut ra, &wa);
        list.wake_all();
        // `ra`'s slot key now belongs to nobody; `rb` takes a slot.
        list.register(&mut rb, &wb);
        list.deregister(&mut ra);
        assert_eq!(
            list.len(),
            1,
            "a spent registration must not remove another's slot"
        );
        list.wake_all();
        assert_eq!((woken(&a), woken(&b)), (1, 1));
    }

    #[test]
    fn a_new_waker_replaces_the_registered_one() {
        let list = WaitList::default();
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut registration = Registration::default();
        list.register(&mut registration, &Waker::from(Arc::clone(&a)));
        list.register(&mut registration, &Waker::from(Arc::clone(&b)));
        list.wake_all();
        assert_eq!((woken(&a), woken(&b)), (0, 1));
    }
}

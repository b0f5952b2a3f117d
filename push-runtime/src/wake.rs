//! Wake-ups for many waiters of one signal (a topic's appends, the hub's
//! shutdown), cheap on the hot path and in the order the waiters came.
//!
//! Each waiter keeps a [`Registration`] of its own across polls: registering
//! again before the next signal only compares a generation number, and a
//! signal takes the whole list of wakers at once and wakes them outside the
//! lock. Compared with `tokio::sync::Notify`, where every wait is a new
//! future linked into the list and unlinked again, this halves the
//! instructions a subscriber spends per woken event (see `.ci/callgrind-delivery`).
//!
//! # Order
//!
//! Waiters are woken first come, first woken, and the wake-ups are handed to
//! the scheduler so that it also *runs* them in that order (the first to
//! wait is the first to be written to):
//!
//! - tokio's multi-thread scheduler runs a task woken from one of its own
//!   workers before the others (the worker's "LIFO slot"), and when one wake
//!   call makes more than its local queue holds (256) it moves the oldest to
//!   the shared queue, which it reads last. So a long list
//!   ([`WAKE_HERE_AT_MOST`] waiters or more) is woken from a thread of its
//!   own (`push-wake`, started on first use): wake-ups that come from outside
//!   the runtime go to its shared queue, which is first in, first out, and
//!   the workers start writing while the rest are still being woken. A short
//!   list is woken in place, its first waiter last, so that the LIFO slot
//!   holds the first waiter and the local queue the others in order.
//! - Elsewhere (a current-thread runtime, whose queue is first in, first
//!   out; a thread outside any runtime) the list is woken in place, in order.

use slab::Slab;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::Waker;

/// The longest list of waiters woken on the signalling thread itself when
/// that thread is a worker of tokio's multi-thread runtime (see the module's
/// "Order"); longer ones are woken from the `push-wake` thread. Half of a
/// tokio worker's local queue, so that a list woken in place does not
/// overflow it.
pub(crate) const WAKE_HERE_AT_MOST: usize = 128;

/// The wakers waiting for the next signal.
#[derive(Debug, Default)]
pub(crate) struct WaitList {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Counts signals: a registration made before the last one is spent.
    generation: u64,
    /// Counts registrations: when each waiter began to wait.
    arrivals: u64,
    wakers: Slab<Waiter>,
    /// One past the highest slot taken since the last signal.
    top: usize,
    /// A registration took a slot below another's since the last signal:
    /// slot order is no longer arrival order.
    reordered: bool,
}

#[derive(Debug)]
struct Waiter {
    arrived: u64,
    waker: Waker,
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

    /// Makes sure `waker` is woken by the next signal. A waiter already
    /// registered keeps its place in line, whatever its waker now is.
    pub(crate) fn register(&self, registration: &mut Registration, waker: &Waker) {
        let mut inner = self.lock();
        if let Some((generation, key)) = registration.at
            && generation == inner.generation
            && let Some(registered) = inner.wakers.get_mut(key)
        {
            if !registered.waker.will_wake(waker) {
                registered.waker.clone_from(waker);
            }
            return;
        }
        let arrived = inner.arrivals;
        inner.arrivals = arrived.wrapping_add(1);
        let key = inner.wakers.insert(Waiter {
            arrived,
            waker: waker.clone(),
        });
        if key < inner.top {
            inner.reordered = true;
        } else {
            inner.top = key + 1;
        }
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

    /// Wakes every registered waker, first registered first (see the
    /// module's "Order"); later registrations wait for the next signal.
    pub(crate) fn wake_all(&self) {
        let (mut taken, reordered) = {
            let mut inner = self.lock();
            inner.generation = inner.generation.wrapping_add(1);
            inner.top = 0;
            let reordered = std::mem::take(&mut inner.reordered);
            if inner.wakers.is_empty() {
                return;
            }
            (std::mem::take(&mut inner.wakers), reordered)
        };
        if reordered || taken.len() >= WAKE_HERE_AT_MOST {
            let mut wakers: Vec<Waiter> = taken.drain().collect();
            if reordered {
                wakers.sort_unstable_by_key(|waiter| waiter.arrived);
            }
            wake_in_order(wakers.into_iter().map(|waiter| waiter.waker));
            return;
        }
        wake_in_order(taken.drain().map(|waiter| waiter.waker));
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

/// Where a list of wake-ups is being handed to the scheduler from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A task on tokio's multi-thread runtime (a worker).
    MultiThreadTask,
    /// Anywhere else: wake-ups are taken in the order they are made.
    InOrder,
}

fn place() -> Place {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle)
            if handle.runtime_flavor() == RuntimeFlavor::MultiThread
                && tokio::task::try_id().is_some() =>
        {
            Place::MultiThreadTask
        }
        _ => Place::InOrder,
    }
}

/// Wakes `wakers` so that the scheduler runs them in this order (see the
/// module's "Order").
fn wake_in_order<I>(wakers: I)
where
    I: ExactSizeIterator<Item = Waker>,
{
    if wakers.len() < 2 || place() == Place::InOrder {
        wakers.for_each(Waker::wake);
        return;
    }
    if wakers.len() >= WAKE_HERE_AT_MOST {
        match Offload::get() {
            Some(offload) => offload.push(wakers.collect()),
            None => wakers.for_each(Waker::wake),
        }
        return;
    }
    // The LIFO slot keeps the last one woken and runs it first: that is to
    // be the first waiter.
    let mut wakers = wakers;
    let first = wakers.next();
    wakers.for_each(Waker::wake);
    first.into_iter().for_each(Waker::wake);
}

/// The `push-wake` thread's queue of lists to wake.
struct Offload {
    lists: Mutex<VecDeque<Vec<Waker>>>,
    ready: Condvar,
}

impl Offload {
    /// The queue, its thread started on first use; `None` if no thread could
    /// be started (the lists are then woken in place).
    fn get() -> Option<&'static Offload> {
        static OFFLOAD: Offload = Offload {
            lists: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        };
        static STARTED: OnceLock<bool> = OnceLock::new();
        let started = STARTED.get_or_init(|| {
            std::thread::Builder::new()
                .name("push-wake".into())
                .spawn(|| OFFLOAD.run())
                .is_ok()
        });
        started.then_some(&OFFLOAD)
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Vec<Waker>>> {
        // Each update is one push or pop: a poisoned queue is consistent.
        self.lists
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn push(&self, list: Vec<Waker>) {
        self.lock().push_back(list);
        self.ready.notify_one();
    }

    fn run(&self) -> ! {
        loop {
            let list = {
                let mut lists = self.lock();
                loop {
                    match lists.pop_front() {
                        Some(list) => break list,
                        None => {
                            lists = self
                                .ready
                                .wait(lists)
                                .unwrap_or_else(|poison| poison.into_inner())
                        }
                    }
                }
            };
            list.into_iter().for_each(Waker::wake);
        }
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

    /// A waker that writes its name into a shared log when woken.
    struct Record(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl std::task::Wake for Record {
        fn wake(self: Arc<Self>) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    #[test]
    fn waiters_are_woken_in_the_order_they_came_even_into_a_freed_slot() {
        let list = WaitList::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let waker = |name| Waker::from(Arc::new(Record(name, Arc::clone(&log))));
        let mut registrations: Vec<Registration> =
            (0..4).map(|_| Registration::default()).collect();
        list.register(&mut registrations[0], &waker("a"));
        list.register(&mut registrations[1], &waker("b"));
        list.register(&mut registrations[2], &waker("c"));
        list.deregister(&mut registrations[1]);
        // `d` takes the slot `b` left, below `c`'s.
        list.register(&mut registrations[3], &waker("d"));
        // Registering again keeps one's place.
        list.register(&mut registrations[0], &waker("a"));
        list.wake_all();
        assert_eq!(*log.lock().unwrap(), ["a", "c", "d"]);
        log.lock().unwrap().clear();
        list.register(&mut registrations[1], &waker("b"));
        list.register(&mut registrations[0], &waker("a"));
        list.wake_all();
        assert_eq!(*log.lock().unwrap(), ["b", "a"], "a new round, a new order");
    }

    /// Waits on `list` once (registering on its first poll and saying so on
    /// `registered`), then writes `index` into `ran` when run after the signal.
    struct Waiting {
        list: Arc<WaitList>,
        registration: Registration,
        signalled: Arc<std::sync::atomic::AtomicBool>,
        registered: Option<tokio::sync::oneshot::Sender<()>>,
        index: usize,
        ran: Arc<Mutex<Vec<usize>>>,
    }

    impl std::future::Future for Waiting {
        type Output = ();

        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            if self.signalled.load(std::sync::atomic::Ordering::SeqCst) {
                self.ran.lock().unwrap().push(self.index);
                return std::task::Poll::Ready(());
            }
            let this = &mut *self;
            this.list.register(&mut this.registration, cx.waker());
            if let Some(registered) = this.registered.take() {
                let _ = registered.send(());
            }
            std::task::Poll::Pending
        }
    }

    /// On a multi-thread runtime of one worker: `waiters` tasks wait on one
    /// list, one after the other; the signal comes from a task (a worker)
    /// or from outside the runtime's tasks. Returns the order they ran in.
    fn order_run(waiters: usize, from_a_task: bool) -> Vec<usize> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        runtime.block_on(async {
            let list = Arc::new(WaitList::default());
            let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let ran = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for index in 0..waiters {
                let (registered, is_registered) = tokio::sync::oneshot::channel();
                tasks.push(tokio::spawn(Waiting {
                    list: Arc::clone(&list),
                    registration: Registration::default(),
                    signalled: Arc::clone(&signalled),
                    registered: Some(registered),
                    index,
                    ran: Arc::clone(&ran),
                }));
                is_registered.await.unwrap();
            }
            // The one worker takes tasks one at a time: once this one has
            // run, the last waiter's first poll is over (a waiter woken
            // during its own poll would be run again ahead of the others).
            tokio::spawn(async {}).await.unwrap();
            let signal = {
                let list = Arc::clone(&list);
                move || {
                    signalled.store(true, std::sync::atomic::Ordering::SeqCst);
                    list.wake_all();
                }
            };
            if from_a_task {
                tokio::spawn(async move { signal() }).await.unwrap();
            } else {
                signal();
            }
            for task in tasks {
                task.await.unwrap();
            }
            ran.lock().unwrap().clone()
        })
    }

    /// How far from its place in line the waiter that strayed furthest ran
    /// (0: in the order they came), checking that each ran once.
    fn furthest_from_place(order: &[usize]) -> usize {
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..order.len()).collect::<Vec<_>>(),
            "each runs once"
        );
        order
            .iter()
            .enumerate()
            .map(|(ran, came)| ran.abs_diff(*came))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn the_first_to_wait_runs_first_when_a_worker_signals_a_short_list() {
        let order = order_run(WAKE_HERE_AT_MOST - 1, true);
        assert_eq!(furthest_from_place(&order), 0, "{order:?}");
    }

    /// A long list: tokio's workers take what comes from outside in batches
    /// of up to 128 and now and then one task from the shared queue ahead of
    /// the batch, so a waiter may run up to a worker queue's length (256)
    /// from its place; woken in place from a worker, the last 256 waiters
    /// would run before all the others.
    #[test]
    fn the_first_to_wait_runs_first_when_a_worker_signals_a_long_list() {
        let order = order_run(2_000, true);
        assert!(furthest_from_place(&order) <= 256, "{order:?}");
        assert_eq!(order[0], 0);
    }

    #[test]
    fn the_first_to_wait_runs_first_when_the_signal_comes_from_outside() {
        let order = order_run(10, false);
        assert_eq!(furthest_from_place(&order), 0, "{order:?}");
        let order = order_run(2_000, false);
        assert!(furthest_from_place(&order) <= 256, "{order:?}");
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

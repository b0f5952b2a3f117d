//! A topic's bounded, cursor-indexed history and the subscriptions that read it.
//!
//! One ring per topic is both the replay buffer and the live fan-out queue: a
//! subscriber is only a sequence number into it, so a subscriber that stops
//! reading costs no memory at all, and one that falls behind the ring's start
//! receives an explicit [`Gap`] instead of a silent hole.
//!
//! A ring is bounded twice: in events (its capacity) and in bytes (a
//! [`HistoryBudget`], per topic and across the topics that share it). The
//! bytes counted are each retained event's JSON payload and every framed
//! copy of it cached for a transport; see [`HistoryBudget`].

use crate::cursor::Cursor;
use crate::pace::Pacing;
use crate::wake::{Registration, WaitList};
use bytes::Bytes;
use std::any::Any;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};

/// One published event, encoded once and shared by every subscriber.
///
/// The JSON payload is produced once per publish; each way of framing it on
/// the wire is built lazily, on first delivery, and its frame is kept and
/// shared too when the topic's [`HistoryBudget`] has room for it (otherwise
/// it is built for each delivery and not kept).
pub struct EncodedEvent {
    cursor: Cursor,
    name: &'static str,
    kind_index: usize,
    data: Bytes,
    frames: [OnceLock<Box<dyn Any + Send + Sync>>; FRAME_SLOTS],
    /// The topic's byte account, charged with the payload while the event
    /// is in the ring and with each frame kept.
    account: Arc<Account>,
    /// The bytes of the frames kept, charged to `account`; [`RETIRED`] once
    /// the event has left the ring (its bytes given back, no frame charged
    /// any more).
    charged: AtomicUsize,
}

/// The bit of [`EncodedEvent::charged`] set when the event leaves the ring.
const RETIRED: usize = 1 << (usize::BITS - 1);

impl std::fmt::Debug for EncodedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedEvent")
            .field("cursor", &self.cursor)
            .field("name", &self.name)
            .field("kind_index", &self.kind_index)
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

/// How many framings an event caches at most (see [`FrameSlot`]).
const FRAME_SLOTS: usize = 4;

/// Where an event caches one [`Framing`]'s frame. The history knows no
/// transport: each framing claims a slot of its own
/// (`transport::tests::frame_slots_are_distinct` checks that no two share one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameSlot(usize);

impl FrameSlot {
    /// The slot `index`; fails to compile in a `const` past the last slot.
    pub(crate) const fn new(index: usize) -> Self {
        assert!(
            index < FRAME_SLOTS,
            "an event has only FRAME_SLOTS frame slots"
        );
        Self(index)
    }
}

/// One way of writing an event on the wire (an SSE block, a JSON message,
/// a `<script>` item…), built once per event and then shared.
pub(crate) trait Framing {
    /// The framed event: cheap to clone (shared bytes), its bytes behind
    /// `Deref` (they are what the history's byte budget counts).
    type Frame: Clone + Send + Sync + Deref + 'static;
    /// Where events cache this framing.
    const SLOT: FrameSlot;
    /// Frames `event`.
    fn frame(event: &EncodedEvent) -> Self::Frame;
}

impl EncodedEvent {
    /// The event's position in its topic.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The event's wire name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The position of the event's kind in its channel's declaration order.
    pub fn kind_index(&self) -> usize {
        self.kind_index
    }

    /// The event as JSON, exactly as `serde_json` serialized it.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The event framed by `F`: built on first use, then shared if the
    /// topic's byte budget has room for it, else built again for each use.
    #[inline]
    pub(crate) fn frame<F: Framing>(&self) -> F::Frame {
        match self.frames[F::SLOT.0].get() {
            Some(cached) => match cached.downcast_ref::<F::Frame>() {
                Some(frame) => frame.clone(),
                None => {
                    // Two framings share a slot: a bug, caught by a test;
                    // still frame correctly, uncached.
                    debug_assert!(false, "two framings share frame slot {}", F::SLOT.0);
                    F::frame(self)
                }
            },
            None => self.frame_and_keep::<F>(),
        }
    }

    /// Builds `F`'s frame and keeps it if the budget has room (once per
    /// event and framing while there is room).
    #[inline(never)]
    fn frame_and_keep<F: Framing>(&self) -> F::Frame {
        let frame = F::frame(self);
        let size = std::mem::size_of_val::<<F::Frame as Deref>::Target>(&*frame);
        if self.charge(size) && self.frames[F::SLOT.0].set(Box::new(frame.clone())).is_err() {
            // Another delivery kept its copy first: give this one's bytes back.
            self.uncharge(size);
        }
        frame
    }

    /// Charges `size` frame bytes to the topic and the total, if both have
    /// room and the event is still in the ring.
    fn charge(&self, size: usize) -> bool {
        if !self.account.reserve(size) {
            return false;
        }
        let recorded = self
            .charged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |charged| {
                (charged & RETIRED == 0).then_some(charged + size)
            });
        if recorded.is_err() {
            // Left the ring meanwhile: not kept.
            self.account.release(size);
        }
        recorded.is_ok()
    }

    /// Gives back `size` bytes charged by [`EncodedEvent::charge`], unless
    /// the event left the ring meanwhile (which gave them back).
    fn uncharge(&self, size: usize) {
        let recorded = self
            .charged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |charged| {
                (charged & RETIRED == 0).then(|| charged - size)
            });
        if recorded.is_ok() {
            self.account.release(size);
        }
    }

    /// The event leaves the ring: its payload and kept frames are given
    /// back, and no frame is charged for it any more.
    fn retire(&self) {
        let frames = self.charged.fetch_or(RETIRED, Ordering::AcqRel) & !RETIRED;
        self.account.release(self.data.len() + frames);
    }
}

/// The bytes that topics' histories may hold: a limit per topic and one in
/// total, across every topic whose [`TopicLog`] was made with this budget
/// (clones share the total).
///
/// What is counted, for each event in a ring: its JSON payload, and each
/// framed copy of it kept for a transport (the SSE block, the JSON message
/// that long polls and WebSocket send, the WebSocket text frame, the forever
/// frame's `<script>` item), each at its full length, even where two share
/// bytes (so the count is an upper bound of what they hold). Not counted:
/// the fixed size of an event and its ring slot (about 200 bytes, bounded by
/// the ring's capacity in events), events that left the ring but are still
/// being written to a connection, and per-connection buffers (bounded by
/// `Limits::max_buffered_per_connection`).
///
/// How the bounds hold:
/// - an append drops the topic's oldest events (subscribers behind get a
///   [`Gap`]) until the new payload fits the topic's limit and the total;
///   the newest event is always kept, so a topic holds at most the larger
///   of its limit and one event;
/// - when the total has no room for the payload even once this topic's own
///   history is dropped, the event is not kept ([`TopicLog::try_append`]
///   refuses it, [`TopicLog::append`] and [`TopicLog::append_at`] keep its
///   position as a lost event: a gap of one);
/// - a frame is kept only if the topic's limit and the total both have room
///   for it; otherwise it is built for each delivery and not kept (delivery
///   is the same, only slower);
/// - an event's bytes are given back when it leaves the ring (trimmed,
///   skipped, or its log dropped).
#[derive(Clone, Debug)]
pub struct HistoryBudget {
    per_topic: usize,
    total: Arc<Total>,
}

#[derive(Debug)]
struct Total {
    used: AtomicUsize,
    limit: usize,
}

/// The largest history of one topic by default, in bytes: 64 MiB (payloads
/// and kept frames; see [`HistoryBudget`]).
pub const DEFAULT_MAX_HISTORY_BYTES: usize = 64 * 1024 * 1024;

/// The largest history of all topics together by default, in bytes: 1 GiB.
pub const DEFAULT_MAX_TOTAL_HISTORY_BYTES: usize = 1024 * 1024 * 1024;

impl Default for HistoryBudget {
    /// [`DEFAULT_MAX_HISTORY_BYTES`] per topic, [`DEFAULT_MAX_TOTAL_HISTORY_BYTES`] in total.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HISTORY_BYTES, DEFAULT_MAX_TOTAL_HISTORY_BYTES)
    }
}

impl HistoryBudget {
    /// At most `per_topic` bytes per topic and `total` bytes across topics.
    pub fn new(per_topic: usize, total: usize) -> Self {
        Self {
            per_topic,
            total: Arc::new(Total {
                used: AtomicUsize::new(0),
                limit: total,
            }),
        }
    }

    /// No limit in bytes: only the rings' capacities in events bound them.
    pub fn unlimited() -> Self {
        Self::new(usize::MAX, usize::MAX)
    }

    /// The limit per topic, in bytes.
    pub fn per_topic(&self) -> usize {
        self.per_topic
    }

    /// The limit across topics, in bytes.
    pub fn total(&self) -> usize {
        self.total.limit
    }

    /// The bytes counted now, across the topics that share this budget.
    pub fn used(&self) -> usize {
        self.total.used.load(Ordering::Relaxed)
    }

    fn account(&self) -> Arc<Account> {
        Arc::new(Account {
            used: AtomicUsize::new(0),
            limit: self.per_topic,
            total: Arc::clone(&self.total),
        })
    }
}

/// One topic's bytes, and the total they count in.
#[derive(Debug)]
struct Account {
    used: AtomicUsize,
    limit: usize,
    total: Arc<Total>,
}

/// Adds `size` to `counter` if it stays within `limit`.
fn reserve(counter: &AtomicUsize, size: usize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(size).filter(|&after| after <= limit)
        })
        .is_ok()
}

impl Account {
    /// Adds `size` to the topic and the total if both have room.
    fn reserve(&self, size: usize) -> bool {
        if !reserve(&self.used, size, self.limit) {
            return false;
        }
        if !reserve(&self.total.used, size, self.total.limit) {
            self.used.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn release(&self, size: usize) {
        self.used.fetch_sub(size, Ordering::Relaxed);
        self.total.used.fetch_sub(size, Ordering::Relaxed);
    }
}

/// Why [`TopicLog::try_append`] did not keep an event: the histories
/// sharing its [`HistoryBudget`] hold the total, and dropping this topic's
/// own history would not make room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the topics' histories hold {used} of their {limit} bytes: no room for an event of {size} bytes"
)]
pub struct HistoryFull {
    /// The event's payload, in bytes.
    pub size: usize,
    /// The bytes the histories held.
    pub used: usize,
    /// The budget's total ([`HistoryBudget::total`]).
    pub limit: usize,
}

/// The largest event payload (its JSON, in bytes) a hub accepts by default:
/// 1 MiB, the same as the Redis broker's default limit.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 1024 * 1024;

/// What a publisher hands to a broker: the event, already encoded.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The wire name.
    pub name: &'static str,
    /// The position of the event's kind in its channel's declaration order.
    pub kind_index: usize,
    /// The JSON payload.
    pub data: Bytes,
}

/// Events between two cursors that a subscriber will never receive.
///
/// Delivered in-band, in order, where the hole is: the events that follow are
/// the ones after [`Gap::to`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    /// The last position the subscriber had.
    pub from: Cursor,
    /// The position delivery resumes after.
    pub to: Cursor,
    /// How many events were lost, when it is known (not across epochs).
    pub missed: Option<u64>,
}

/// One item a subscription yields.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// An event.
    Event(Arc<EncodedEvent>),
    /// A hole in the history: events the subscriber will never get.
    Gap(Gap),
}

impl Delivery {
    /// Where a client stands once it has this item: the event's cursor, or
    /// the position after the gap.
    pub fn cursor(&self) -> Cursor {
        match self {
            Delivery::Event(event) => event.cursor(),
            Delivery::Gap(gap) => gap.to,
        }
    }
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// With the next event published.
    Now,
    /// With the first event after this cursor.
    After(Cursor),
}

/// Why a subscription could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The cursor is in the topic's current epoch but beyond its newest event.
    #[error("cursor `{requested}` is ahead of the newest event of the topic (`{newest}`)")]
    Ahead {
        /// The cursor asked for.
        requested: Cursor,
        /// The topic's newest position.
        newest: Cursor,
    },
}

struct Ring {
    /// The sequence number of the newest event (0: none yet).
    head: u64,
    /// The retained events, oldest first, one per sequence number; `None`
    /// for an event known lost ([`TopicLog::lose_at`]).
    entries: VecDeque<Option<Arc<EncodedEvent>>>,
    capacity: usize,
}

impl Ring {
    /// The sequence number of the oldest retained event (`head + 1` when empty).
    fn oldest(&self) -> u64 {
        self.head + 1 - self.entries.len() as u64
    }

    /// Drops the oldest event, giving its bytes back; `false` if empty.
    fn pop_oldest(&mut self) -> bool {
        match self.entries.pop_front() {
            Some(slot) => {
                if let Some(event) = slot {
                    event.retire();
                }
                true
            }
            None => false,
        }
    }

    /// Drops every event, giving their bytes back.
    fn clear(&mut self) {
        while self.pop_oldest() {}
    }
}

/// What [`TopicLog::append_at`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum AppendAt {
    /// The event was the next one: it is now the newest.
    Appended,
    /// The log already holds this position: nothing changed.
    Duplicate,
    /// Events are missing before this one: nothing changed (see [`TopicLog::skip_to`]).
    NotNext,
}

/// The history of one topic: a bounded ring of events plus a wake-up signal.
///
/// A log mirrored from a shared store may be replaced by one of a new epoch
/// (the store lost its data); its subscriptions then move on to the
/// successor, after a gap.
pub struct TopicLog {
    epoch: u64,
    ring: RwLock<Ring>,
    /// The bytes the ring's events hold, and the total they count in.
    account: Arc<Account>,
    /// `ring.head`, readable without the lock: a subscriber that is up to
    /// date finds out it has nothing to read with one load.
    head: AtomicU64,
    published: WaitList,
    /// Who each next event waits for, for paced publishers.
    pacing: Pacing,
    successor: OnceLock<Arc<TopicLog>>,
}

impl Drop for TopicLog {
    fn drop(&mut self) {
        self.ring
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner())
            .clear();
    }
}

impl std::fmt::Debug for TopicLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicLog")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// A fresh epoch: unpredictable, different for every topic log created.
///
/// Kept below 2^53 so that clients in languages with only doubles can still
/// compare epochs as numbers if they choose to.
pub fn fresh_epoch() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() & ((1 << 53) - 1)).max(1)
}

impl TopicLog {
    /// An empty history keeping at most `capacity` events (at least 1), in
    /// `epoch`, with no limit in bytes ([`HistoryBudget::unlimited`]).
    pub fn new(epoch: u64, capacity: usize) -> Self {
        Self::with_budget(epoch, capacity, &HistoryBudget::unlimited())
    }

    /// An empty history keeping at most `capacity` events (at least 1), in
    /// `epoch`, within `budget` (per topic, and in total with every other
    /// log made with it or its clones).
    pub fn with_budget(epoch: u64, capacity: usize, budget: &HistoryBudget) -> Self {
        let capacity = capacity.max(1);
        Self {
            epoch,
            ring: RwLock::new(Ring {
                head: 0,
                entries: VecDeque::with_capacity(capacity.min(1024)),
                capacity,
            }),
            account: budget.account(),
            head: AtomicU64::new(0),
            published: WaitList::default(),
            pacing: Pacing::default(),
            successor: OnceLock::new(),
        }
    }

    /// The epoch of this history.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The position of the newest event.
    pub fn newest(&self) -> Cursor {
        Cursor::new(self.epoch, self.read().head)
    }

    /// Number of events currently retained.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether no event is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes this history counts now against its [`HistoryBudget`]:
    /// its events' payloads and the frames kept with them.
    pub fn bytes(&self) -> usize {
        self.account.used.load(Ordering::Relaxed)
    }

    // A poisoned lock only means another thread panicked while holding it;
    // the ring is updated in steps that leave it consistent, so keep going.
    fn read(&self) -> RwLockReadGuard<'_, Ring> {
        self.ring
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends an event with the next sequence number and wakes every
    /// waiting subscriber. When the budget's total has no room for it
    /// ([`TopicLog::try_append`] would refuse it), its position is kept as a
    /// lost event: subscribers get a gap of one.
    pub fn append(&self, event: Outgoing) -> Cursor {
        let cursor = {
            let mut ring = self.write();
            let seq = ring.head + 1;
            if let Err(event) = self.push(&mut ring, seq, event) {
                self.push_lost(&mut ring, seq, &event);
            }
            Cursor::new(self.epoch, seq)
        };
        self.published.wake_all();
        cursor
    }

    /// Appends an event with the next sequence number and wakes every
    /// waiting subscriber, dropping this topic's oldest events as the byte
    /// budget requires; refuses it, changing nothing, when the budget's
    /// total has no room for it even without this topic's history.
    pub fn try_append(&self, event: Outgoing) -> Result<Cursor, HistoryFull> {
        let cursor = {
            let mut ring = self.write();
            let seq = ring.head + 1;
            let total = &self.account.total;
            self.push(&mut ring, seq, event)
                .map_err(|event| HistoryFull {
                    size: event.data.len(),
                    used: total.used.load(Ordering::Relaxed),
                    limit: total.limit,
                })?
        };
        self.published.wake_all();
        Ok(cursor)
    }

    /// Appends an event whose sequence number was assigned elsewhere (by a
    /// shared store), if it is the next one, and wakes every waiting subscriber.
    pub fn append_at(&self, seq: u64, event: Outgoing) -> AppendAt {
        self.put_at(seq, Some(event))
    }

    /// Declares the event at `seq` lost, if it is the next one (a shared
    /// store holds something at that position that may not be delivered):
    /// subscribers get a gap of one event where it stands, and the events
    /// around it stay. Wakes every waiting subscriber.
    pub fn lose_at(&self, seq: u64) -> AppendAt {
        self.put_at(seq, None)
    }

    /// The event (`None`: a lost one) at `seq`, if it is the next one.
    fn put_at(&self, seq: u64, event: Option<Outgoing>) -> AppendAt {
        let outcome = {
            let mut ring = self.write();
            if seq <= ring.head {
                AppendAt::Duplicate
            } else if seq > ring.head + 1 {
                AppendAt::NotNext
            } else {
                match event {
                    Some(event) => {
                        if let Err(event) = self.push(&mut ring, seq, event) {
                            self.push_lost(&mut ring, seq, &event);
                        }
                    }
                    None => self.push_slot(&mut ring, seq, None),
                }
                AppendAt::Appended
            }
        };
        if outcome == AppendAt::Appended {
            self.published.wake_all();
        }
        outcome
    }

    /// Declares every event up to `seq` lost: the ring is emptied and the
    /// next event expected is `seq + 1`. Subscribers that had not read them
    /// receive a gap. Does nothing if `seq` is not ahead of the newest event.
    pub fn skip_to(&self, seq: u64) {
        {
            let mut ring = self.write();
            if seq <= ring.head {
                return;
            }
            ring.clear();
            ring.head = seq;
            self.head.store(seq, Ordering::Release);
        }
        self.published.wake_all();
    }

    /// Ends this history: its subscriptions read what is left, then receive a
    /// gap and continue in `next` (of another epoch). Only the first call counts.
    pub fn supersede(&self, next: Arc<TopicLog>) {
        let _ = self.successor.set(next);
        self.published.wake_all();
    }

    /// The history that replaced this one, if any.
    pub fn successor(&self) -> Option<&Arc<TopicLog>> {
        self.successor.get()
    }

    /// Counts, from now on, which subscribers each next event waits for
    /// ([`TopicLog::wait_taken`]). Costs each of this topic's subscribers
    /// a lock per batch from then on; nothing until it is called.
    pub fn pace(&self) {
        self.pacing.track();
    }

    /// Waits, at most `max_wait`, until every subscriber that had read
    /// everything when an event up to `seq` was appended (waiting, or busy
    /// writing what it read) has taken that event or gone away. One behind
    /// or stalled then is not waited for. Returns `false` if `max_wait` ran
    /// out: those not back by then are not waited for again for these
    /// events. Counts only subscribers that read after [`TopicLog::pace`].
    pub async fn wait_taken(&self, seq: u64, max_wait: std::time::Duration) -> bool {
        let drained = std::future::poll_fn(|cx| self.pacing.poll_drained(cx, seq));
        match tokio::time::timeout(max_wait, drained).await {
            Ok(()) => true,
            Err(_) => {
                self.pacing.abandon(seq);
                false
            }
        }
    }

    /// Makes room for `event` (dropping the oldest events as the budget
    /// requires) and appends it; gives it back, the ring unchanged, if the
    /// total has no room for it even without this ring's events.
    fn push(&self, ring: &mut Ring, seq: u64, event: Outgoing) -> Result<Cursor, Outgoing> {
        let size = event.data.len();
        let account = &self.account;
        let others = (account.total.used.load(Ordering::Relaxed))
            .saturating_sub(account.used.load(Ordering::Relaxed));
        if others.saturating_add(size) > account.total.limit {
            return Err(event);
        }
        // The topic's limit: the newest event is always kept.
        while !reserve(&account.used, size, account.limit) {
            if !ring.pop_oldest() {
                account.used.fetch_add(size, Ordering::Relaxed);
                break;
            }
        }
        while !reserve(&account.total.used, size, account.total.limit) {
            if !ring.pop_oldest() {
                account.used.fetch_sub(size, Ordering::Relaxed);
                return Err(event);
            }
        }
        let cursor = Cursor::new(self.epoch, seq);
        let event = Arc::new(EncodedEvent {
            cursor,
            name: event.name,
            kind_index: event.kind_index,
            data: event.data,
            frames: Default::default(),
            account: Arc::clone(account),
            charged: AtomicUsize::new(0),
        });
        self.push_slot(ring, seq, Some(event));
        Ok(cursor)
    }

    /// Keeps `seq` as a lost event: `event` found no room in the total.
    #[cold]
    fn push_lost(&self, ring: &mut Ring, seq: u64, event: &Outgoing) {
        tracing::warn!(
            size = event.data.len(),
            limit = self.account.total.limit,
            "the topics' histories hold their total byte budget: an event is kept as a gap of one"
        );
        self.push_slot(ring, seq, None);
    }

    fn push_slot(&self, ring: &mut Ring, seq: u64, slot: Option<Arc<EncodedEvent>>) {
        ring.head = seq;
        self.head.store(seq, Ordering::Release);
        if ring.entries.len() == ring.capacity {
            ring.pop_oldest();
        }
        ring.entries.push_back(slot);
    }

    /// A reader positioned at `start`.
    pub fn subscribe(self: &Arc<Self>, start: Start) -> Result<Subscription, StartError> {
        let ring = self.read();
        let (next_seq, gap) = match start {
            Start::Now => (ring.head + 1, None),
            Start::After(requested) => {
                let oldest = ring.oldest();
                let resume = Cursor::new(self.epoch, oldest - 1);
                if requested.epoch() != self.epoch {
                    let gap = Gap {
                        from: requested,
                        to: resume,
                        missed: None,
                    };
                    (oldest, Some(gap))
                } else if requested.seq() > ring.head {
                    return Err(StartError::Ahead {
                        requested,
                        newest: Cursor::new(self.epoch, ring.head),
                    });
                } else if requested.seq() + 1 < oldest {
                    let missed = Some(oldest - 1 - requested.seq());
                    (
                        oldest,
                        Some(Gap {
                            from: requested,
                            to: resume,
                            missed,
                        }),
                    )
                } else {
                    (requested.seq() + 1, None)
                }
            }
        };
        // Up to date from the start: it waits for the next event.
        let joined = self.pacing.is_tracking() && gap.is_none() && next_seq > ring.head;
        if joined {
            self.pacing.step(None, Some(next_seq));
        }
        drop(ring);
        Ok(Subscription {
            log: Arc::clone(self),
            next_seq,
            pending_gap: gap,
            filter: None,
            waiting: Registration::default(),
            counts: None,
            joined,
        })
    }
}

/// A set of event kinds, by their index in the channel's declaration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindFilter {
    bits: Box<[u64]>,
}

impl KindFilter {
    /// The set holding exactly these kind indices.
    pub fn from_indices(indices: impl IntoIterator<Item = usize>) -> Self {
        let mut bits: Vec<u64> = Vec::new();
        for index in indices {
            let word = index / 64;
            if bits.len() <= word {
                bits.resize(word + 1, 0);
            }
            bits[word] |= 1 << (index % 64);
        }
        Self {
            bits: bits.into_boxed_slice(),
        }
    }

    /// Whether the set holds the kind at `index`.
    pub fn contains(&self, index: usize) -> bool {
        self.bits
            .get(index / 64)
            .is_some_and(|word| word & (1 << (index % 64)) != 0)
    }
}

/// Why a subscriber got a gap, for the counts of [`DeliveryCounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GapCause {
    /// It fell behind: the ring overtook its position.
    SlowClient,
    /// It resumed from before the oldest event kept.
    TrimmedHistory,
    /// It resumed from another epoch, or its topic's history was replaced
    /// by one of a new epoch while it read.
    EpochChange,
    /// An event found no room in the histories' byte budget (or, with the
    /// Redis broker, was invalid) and was kept as a gap of one.
    Lost,
}

impl GapCause {
    /// Every cause, in the order of the slots of [`DeliveryCounts`].
    pub(crate) const ALL: [GapCause; 4] = [
        GapCause::SlowClient,
        GapCause::TrimmedHistory,
        GapCause::EpochChange,
        GapCause::Lost,
    ];

    #[cfg(feature = "metrics")]
    /// The cause's label value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GapCause::SlowClient => "slow_client",
            GapCause::TrimmedHistory => "trimmed_history",
            GapCause::EpochChange => "epoch_change",
            GapCause::Lost => "lost",
        }
    }
}

/// What the subscriptions of one hub took from their histories: items
/// (events and gaps) and gaps by cause. Counted once per batch taken, and
/// where a gap is made (rare), never per event.
#[derive(Debug, Default)]
pub(crate) struct DeliveryCounts {
    items: AtomicU64,
    gaps: [AtomicU64; GapCause::ALL.len()],
}

impl DeliveryCounts {
    #[cfg(feature = "metrics")]
    /// Gaps delivered for `cause`.
    pub(crate) fn gaps(&self, cause: GapCause) -> u64 {
        self.gaps[cause as usize].load(Ordering::Relaxed)
    }

    #[cfg(feature = "metrics")]
    /// Events delivered: every item taken that was not a gap.
    pub(crate) fn events(&self) -> u64 {
        // Gaps are counted before the items of their batch: read the items
        // last so that the difference never goes below zero.
        let gaps: u64 = GapCause::ALL.iter().map(|&cause| self.gaps(cause)).sum();
        self.items.load(Ordering::Relaxed).saturating_sub(gaps)
    }

    fn gap(&self, cause: GapCause) {
        self.gaps[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back items taken but not sent (a poll's look-ahead item).
    fn untake(&self, items: u64) {
        self.items.fetch_sub(items, Ordering::Relaxed);
    }
}

/// While a publisher paces on a topic: a subscription that was at `from`
/// (in its round if `joined`) and is now at `next_seq` leaves the round of
/// the event it took, and joins the next event's if it has read everything
/// (`all_read`, known under the ring's lock, so that event is not appended
/// meanwhile). Out of the way of the common case.
#[cold]
#[inline(never)]
fn step_rounds(pacing: &Pacing, joined: &mut bool, from: u64, next_seq: u64, all_read: bool) {
    let left = (*joined && next_seq > from).then_some(from);
    let still = *joined && left.is_none();
    let joins = (all_read && !still).then_some(next_seq);
    if left.is_some() || joins.is_some() {
        pacing.step(left, joins);
    }
    *joined = still || joins.is_some();
}

/// A reader of one topic's history, live or catching up.
///
/// It holds only a position: the events themselves stay in the topic's ring,
/// shared with every other subscriber.
#[derive(Debug)]
pub struct Subscription {
    log: Arc<TopicLog>,
    next_seq: u64,
    pending_gap: Option<Gap>,
    filter: Option<KindFilter>,
    /// In `log`'s list of waiters, kept across polls.
    waiting: Registration,
    /// Where what it takes is counted, if anywhere.
    counts: Option<Arc<DeliveryCounts>>,
    /// Whether it is in a round of paced publishing (see [`Pacing`]):
    /// that of `next_seq`, as a subscription in a round has not moved since
    /// it joined.
    joined: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.log.published.deregister(&mut self.waiting);
        self.leave_round();
    }
}

impl Subscription {
    /// Delivers only events whose kind is in `filter` (gaps are always delivered).
    pub fn set_filter(&mut self, filter: Option<KindFilter>) {
        self.filter = filter;
    }

    /// Counts what this subscription takes into `counts`.
    pub(crate) fn count_into(&mut self, counts: Arc<DeliveryCounts>) {
        self.counts = Some(counts);
    }

    /// Uncounts an item taken but not sent after all (a poll's look-ahead
    /// item), if it is an event. A gap stays counted as made (and as an
    /// item, so the count of events stays exact): the next poll makes it
    /// again, and counts it again.
    pub(crate) fn untake(&self, item: &Delivery) {
        if let (Some(counts), Delivery::Event(_)) = (&self.counts, item) {
            counts.untake(1);
        }
    }

    /// Joins the round of the next event if it has read everything and
    /// its topic is paced (a subscription made before the topic was).
    pub(crate) fn join_round(&mut self) {
        if self.pending_gap.is_none() && !self.joined && self.log.pacing.is_tracking() {
            let ring = self.log.read();
            if self.next_seq > ring.head {
                self.log.pacing.step(None, Some(self.next_seq));
                self.joined = true;
            }
        }
    }

    /// Leaves the round it is in, if any: it went away, or to another log.
    fn leave_round(&mut self) {
        if std::mem::take(&mut self.joined) {
            let seq = self.next_seq;
            self.log.pacing.step(Some(seq), None);
        }
    }

    /// Counts a gap made for `cause`. Out of the way of the common case.
    #[cold]
    #[inline(never)]
    fn count_gap(&self, cause: GapCause) {
        if let Some(counts) = &self.counts {
            counts.gap(cause);
        }
    }

    /// The position of everything delivered or skipped so far: resuming after
    /// it loses nothing.
    pub fn position(&self) -> Cursor {
        Cursor::new(self.log.epoch, self.next_seq - 1)
    }

    /// Where this subscription stands for a client: the position it started
    /// from while a gap at its start is still undelivered, else [`Subscription::position`].
    ///
    /// Transports announce it first (`push.ready`), so a client that
    /// reconnects before seeing the gap is told about the gap again.
    pub fn resume_point(&self) -> Cursor {
        self.pending_gap
            .map_or_else(|| self.position(), |gap| gap.from)
    }

    /// Appends to `out` what is available now, at most `max` items (at least 1);
    /// returns how many it appended.
    pub fn fill(&mut self, out: &mut Vec<Delivery>, max: usize) -> usize {
        let max = max.max(1);
        let before = out.len();
        if let Some(gap) = self.pending_gap.take() {
            self.count_gap(if gap.from.epoch() == gap.to.epoch() {
                GapCause::TrimmedHistory
            } else {
                GapCause::EpochChange
            });
            out.push(Delivery::Gap(gap));
        }
        loop {
            // Looked up before reading the ring: a superseded log gets no more
            // events, so once this is set the ring below is final.
            let successor = self.log.successor().cloned();
            let all_read = self.fill_from_ring(out, before, max);
            match successor {
                Some(next) if all_read && out.len() - before < max => self.move_to(next, out),
                _ => break,
            }
        }
        let taken = out.len() - before;
        if let Some(counts) = &self.counts {
            counts.items.fetch_add(taken as u64, Ordering::Relaxed);
        }
        taken
    }

    /// Appends from the current ring; returns whether nothing is left in it.
    fn fill_from_ring(&mut self, out: &mut Vec<Delivery>, before: usize, max: usize) -> bool {
        let from = self.next_seq;
        let ring = self.log.read();
        let oldest = ring.oldest();
        if self.next_seq < oldest {
            // Overtaken by the ring: the events in between are gone.
            self.count_gap(GapCause::SlowClient);
            let from = Cursor::new(self.log.epoch, self.next_seq - 1);
            let to = Cursor::new(self.log.epoch, oldest - 1);
            out.push(Delivery::Gap(Gap {
                from,
                to,
                missed: Some(oldest - self.next_seq),
            }));
            self.next_seq = oldest;
        }
        let skip = (self.next_seq - oldest) as usize;
        for slot in ring.entries.iter().skip(skip) {
            match slot {
                Some(event) => {
                    if out.len() - before >= max {
                        break;
                    }
                    if self
                        .filter
                        .as_ref()
                        .is_none_or(|f| f.contains(event.kind_index))
                    {
                        out.push(Delivery::Event(Arc::clone(event)));
                    }
                }
                None => {
                    if !self.lost(out, before, max) {
                        break;
                    }
                }
            }
            self.next_seq += 1;
        }
        let all_read = self.next_seq > ring.head;
        if self.log.pacing.is_tracking() {
            step_rounds(
                &self.log.pacing,
                &mut self.joined,
                from,
                self.next_seq,
                all_read,
            );
        }
        all_read
    }

    /// Reports the lost event at `next_seq`: one more in the gap `out` ends
    /// with if that gap ends right before it (it takes no room), or a gap of
    /// its own; `false` if that needs room `out` has not. Kept out of the
    /// loop's way: events are the common case.
    #[cold]
    #[inline(never)]
    fn lost(&self, out: &mut Vec<Delivery>, before: usize, max: usize) -> bool {
        let epoch = self.log.epoch;
        let seq = self.next_seq;
        if let Some(Delivery::Gap(gap)) = out.get_mut(before..).and_then(<[Delivery]>::last_mut)
            && gap.to == Cursor::new(epoch, seq - 1)
        {
            gap.to = Cursor::new(epoch, seq);
            gap.missed = gap.missed.map(|missed| missed + 1);
            return true;
        }
        if out.len() - before >= max {
            return false;
        }
        self.count_gap(GapCause::Lost);
        out.push(Delivery::Gap(Gap {
            from: Cursor::new(epoch, seq - 1),
            to: Cursor::new(epoch, seq),
            missed: Some(1),
        }));
        true
    }

    /// Continues in the history that replaced this one, after a gap of unknown size.
    fn move_to(&mut self, next: Arc<TopicLog>, out: &mut Vec<Delivery>) {
        let oldest = next.read().oldest();
        self.count_gap(GapCause::EpochChange);
        out.push(Delivery::Gap(Gap {
            from: self.position(),
            to: Cursor::new(next.epoch, oldest - 1),
            missed: None,
        }));
        self.log.published.deregister(&mut self.waiting);
        self.leave_round();
        self.log = next;
        self.next_seq = oldest;
    }

    /// Waits until something is available, then appends it to `out` as [`Subscription::fill`] does.
    ///
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next_batch(&mut self, out: &mut Vec<Delivery>, max: usize) -> usize {
        std::future::poll_fn(|cx| self.poll_next_batch(cx, out, max)).await
    }

    /// The poll form of [`Subscription::next_batch`]: appends what is
    /// available now, or arranges for `cx` to be woken by the next append.
    pub fn poll_next_batch(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Delivery>,
        max: usize,
    ) -> Poll<usize> {
        let appended = self.fill_if_any(out, max);
        if appended > 0 {
            return Poll::Ready(appended);
        }
        // Register, then look again, so an append in between is not missed:
        // an append that takes the list after the registration wakes `cx`,
        // one that took it before has stored its head before (the list's
        // lock orders the two). Moving to a successor log always appends a
        // gap, so the log registered with is the one that was looked at.
        self.log.published.register(&mut self.waiting, cx.waker());
        match self.fill_if_any(out, max) {
            0 => Poll::Pending,
            appended => Poll::Ready(appended),
        }
    }

    /// [`Subscription::fill`], after a check without locks that there is
    /// something to fill.
    fn fill_if_any(&mut self, out: &mut Vec<Delivery>, max: usize) -> usize {
        let up_to_date = self.pending_gap.is_none()
            && self.next_seq > self.log.head.load(Ordering::Acquire)
            && self.log.successor().is_none();
        if up_to_date { 0 } else { self.fill(out, max) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(n: u8) -> Outgoing {
        Outgoing {
            name: "e",
            kind_index: usize::from(n % 2),
            data: Bytes::from(vec![n]),
        }
    }

    /// Whether no round of paced publishing at or before `seq` has members.
    fn drained(log: &TopicLog, seq: u64) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        log.pacing.poll_drained(&mut cx, seq).is_ready()
    }

    /// The round of an event is the readers that had read everything when
    /// it was appended; each leaves it by taking the event, skipping it
    /// (a filter), being overtaken (a gap), moving to a successor log or
    /// going away. A reader behind when the event came is not in it.
    #[test]
    fn paced_rounds_hold_the_readers_that_had_read_everything() {
        let log = Arc::new(TopicLog::new(1, 4));
        log.pace();
        let mut out = Vec::new();
        let mut reader = log.subscribe(Start::Now).unwrap();
        let mut filtered = log.subscribe(Start::Now).unwrap();
        filtered.set_filter(Some(KindFilter::from_indices([0])));
        let mut overtaken = log.subscribe(Start::Now).unwrap();
        let gone = log.subscribe(Start::Now).unwrap();
        log.append(outgoing(1));
        assert!(drained(&log, 0));
        assert!(!drained(&log, 1));
        reader.fill(&mut out, 16);
        assert_eq!(filtered.fill(&mut out, 16), 0, "event 1 is of kind 1");
        drop(gone);
        assert!(!drained(&log, 1), "one reader has not taken event 1");
        // `overtaken` stops reading: events 2 to 6 push event 1 out of the ring.
        for n in 2..=6 {
            log.append(outgoing(n));
            reader.fill(&mut out, 16);
            filtered.fill(&mut out, 16);
        }
        assert!(!drained(&log, 6));
        out.clear();
        overtaken.fill(&mut out, 16);
        assert!(matches!(out[0], Delivery::Gap(_)), "{out:?}");
        assert!(
            drained(&log, 6),
            "the overtaken reader was in round 1 only, and left it"
        );
        // All three have read everything: they are in round 7.
        log.append(outgoing(7));
        assert!(!drained(&log, 7));
        let next = Arc::new(TopicLog::new(2, 4));
        log.supersede(Arc::clone(&next));
        for sub in [&mut reader, &mut filtered, &mut overtaken] {
            sub.fill(&mut out, 16);
        }
        assert!(drained(&log, 7), "the readers took 7 and moved on");
        assert!(drained(&next, u64::MAX), "the successor was never paced");
    }

    fn seqs(items: &[Delivery]) -> Vec<String> {
        items
            .iter()
            .map(|d| match d {
                Delivery::Event(e) => e.cursor().seq().to_string(),
                Delivery::Gap(g) => format!("gap {}..{} {:?}", g.from.seq(), g.to.seq(), g.missed),
            })
            .collect()
    }

    #[test]
    fn replays_from_a_cursor_and_reports_gaps() {
        let log = Arc::new(TopicLog::new(7, 3));
        for n in 1..=5 {
            log.append(outgoing(n));
        }
        let mut out = Vec::new();
        let mut sub = log.subscribe(Start::After(Cursor::new(7, 3))).unwrap();
        sub.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["4", "5"]);

        out.clear();
        let mut sub = log.subscribe(Start::After(Cursor::new(7, 0))).unwrap();
        sub.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["gap 0..2 Some(2)", "3", "4", "5"]);

        out.clear();
        let mut sub = log.subscribe(Start::After(Cursor::new(8, 1))).unwrap();
        sub.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["gap 1..2 None", "3", "4", "5"]);
        assert_eq!(sub.position(), Cursor::new(7, 5));

        assert!(matches!(
            log.subscribe(Start::After(Cursor::new(7, 6))),
            Err(StartError::Ahead { .. })
        ));
    }

    #[test]
    fn a_slow_reader_is_overtaken_with_a_gap() {
        let log = Arc::new(TopicLog::new(1, 2));
        let mut sub = log.subscribe(Start::Now).unwrap();
        for n in 1..=5 {
            log.append(outgoing(n));
        }
        let mut out = Vec::new();
        sub.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["gap 0..3 Some(3)", "4", "5"]);
    }

    #[test]
    fn batches_are_bounded_and_filters_skip_but_advance() {
        let log = Arc::new(TopicLog::new(1, 100));
        let mut sub = log.subscribe(Start::Now).unwrap();
        sub.set_filter(Some(KindFilter::from_indices([1])));
        for n in 1..=6 {
            log.append(outgoing(n));
        }
        let mut out = Vec::new();
        sub.fill(&mut out, 2);
        assert_eq!(seqs(&out), ["1", "3"]);
        out.clear();
        sub.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["5"]);
        assert_eq!(sub.position(), Cursor::new(1, 6));
    }

    #[tokio::test]
    async fn wakes_on_publish() {
        let log = Arc::new(TopicLog::new(1, 8));
        let mut sub = log.subscribe(Start::Now).unwrap();
        let writer = Arc::clone(&log);
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            sub.next_batch(&mut out, 8).await;
            seqs(&out)
        });
        tokio::task::yield_now().await;
        writer.append(outgoing(1));
        assert_eq!(task.await.unwrap(), ["1"]);
    }

    #[test]
    fn appends_at_assigned_positions_and_skips_holes() {
        let log = Arc::new(TopicLog::new(3, 4));
        let mut sub = log.subscribe(Start::Now).unwrap();
        assert_eq!(log.append_at(1, outgoing(1)), AppendAt::Appended);
        assert_eq!(log.append_at(1, outgoing(1)), AppendAt::Duplicate);
        assert_eq!(log.append_at(2, outgoing(2)), AppendAt::Appended);
        assert_eq!(log.append_at(5, outgoing(5)), AppendAt::NotNext);
        let mut out = Vec::new();
        sub.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["1", "2"]);
        assert_eq!(log.append_at(3, outgoing(3)), AppendAt::Appended);
        log.skip_to(4);
        assert_eq!(log.append_at(5, outgoing(5)), AppendAt::Appended);
        out.clear();
        sub.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["gap 2..4 Some(2)", "5"]);
        log.skip_to(1);
        assert_eq!(log.newest(), Cursor::new(3, 5));
    }

    #[tokio::test]
    async fn a_superseded_log_hands_its_readers_over_after_a_gap() {
        let old = Arc::new(TopicLog::new(1, 8));
        let mut sub = old.subscribe(Start::Now).unwrap();
        old.append(outgoing(1));
        let new = Arc::new(TopicLog::new(2, 8));
        new.append(outgoing(7));
        let waiter = {
            let old = Arc::clone(&old);
            let new = Arc::clone(&new);
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut idle = old.subscribe(Start::Now).unwrap();
                idle.next_batch(&mut out, 8).await;
                drop(new);
                (seqs(&out), out.len())
            })
        };
        tokio::task::yield_now().await;
        old.supersede(Arc::clone(&new));
        let (woken, _) = waiter.await.unwrap();
        assert_eq!(woken, ["gap 1..0 None", "1"]);

        let mut out = Vec::new();
        sub.fill(&mut out, 1);
        assert_eq!(seqs(&out), ["1"]);
        out.clear();
        sub.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["gap 1..0 None", "1"]);
        assert!(
            matches!(out[0], Delivery::Gap(Gap { from, to, .. }) if from == Cursor::new(1, 1) && to == Cursor::new(2, 0))
        );
        assert_eq!(sub.position(), Cursor::new(2, 1));
        new.append(outgoing(8));
        out.clear();
        sub.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["2"]);
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn counts_items_and_gaps_by_cause_once_each() {
        let counts = Arc::new(DeliveryCounts::default());
        let log = Arc::new(TopicLog::new(2, 8));
        let mut sub = log.subscribe(Start::Now).unwrap();
        sub.count_into(Arc::clone(&counts));
        assert_eq!(log.append_at(1, outgoing(1)), AppendAt::Appended);
        assert_eq!(log.lose_at(2), AppendAt::Appended);
        assert_eq!(log.lose_at(3), AppendAt::Appended);
        assert_eq!(log.append_at(4, outgoing(4)), AppendAt::Appended);
        let mut out = Vec::new();
        sub.fill(&mut out, 10);
        // Two lost events in a row are one gap.
        assert_eq!(seqs(&out), ["1", "gap 1..3 Some(2)", "4"]);
        assert_eq!(counts.gaps(GapCause::Lost), 1);
        assert_eq!(counts.events(), 2);
        // Overtaken by the ring of 8: a slow client's gap.
        for seq in 5..=20 {
            assert_eq!(log.append_at(seq, outgoing(1)), AppendAt::Appended);
        }
        out.clear();
        sub.fill(&mut out, 3);
        assert_eq!(counts.gaps(GapCause::SlowClient), 1);
        assert_eq!(counts.events(), 4);
        // A poll's look-ahead event, not sent, is taken back; a gap is not.
        sub.untake(&out[2]);
        sub.untake(&out[0]);
        assert_eq!(counts.events(), 3);
        assert_eq!(counts.gaps(GapCause::TrimmedHistory), 0);
        assert_eq!(counts.gaps(GapCause::EpochChange), 0);
    }

    #[test]
    fn a_lost_event_is_a_gap_of_one_where_it_stands() {
        let log = Arc::new(TopicLog::new(2, 8));
        let mut sub = log.subscribe(Start::Now).unwrap();
        assert_eq!(log.append_at(1, outgoing(1)), AppendAt::Appended);
        assert_eq!(log.lose_at(2), AppendAt::Appended);
        assert_eq!(log.lose_at(3), AppendAt::Appended);
        assert_eq!(log.lose_at(3), AppendAt::Duplicate);
        assert_eq!(log.lose_at(9), AppendAt::NotNext);
        assert_eq!(log.append_at(4, outgoing(4)), AppendAt::Appended);
        assert_eq!(log.lose_at(5), AppendAt::Appended);
        let mut out = Vec::new();
        sub.fill(&mut out, 10);
        assert_eq!(
            seqs(&out),
            ["1", "gap 1..3 Some(2)", "4", "gap 4..5 Some(1)"]
        );
        assert_eq!(sub.position(), Cursor::new(2, 5));
        // A reader catching up later sees the same, and the events around
        // the lost ones stay in the ring.
        let mut late = log.subscribe(Start::After(Cursor::new(2, 0))).unwrap();
        out.clear();
        late.fill(&mut out, 2);
        assert_eq!(seqs(&out), ["1", "gap 1..3 Some(2)"]);
        assert_eq!(log.len(), 5);
    }

    /// An event of `size` bytes of JSON (a string), numbered `n`.
    fn large(n: usize, size: usize) -> Outgoing {
        let mut data = format!("\"{n:06}");
        data.extend(std::iter::repeat_n('x', size - data.len() - 1));
        data.push('"');
        Outgoing {
            name: "e",
            kind_index: 0,
            data: Bytes::from(data),
        }
    }

    /// The bytes a log really holds: its events' payloads and their kept
    /// frames, read from the ring itself.
    fn held(log: &TopicLog) -> usize {
        let ring = log.read();
        ring.entries
            .iter()
            .flatten()
            .map(|event| {
                let frames: usize = event
                    .frames
                    .iter()
                    .filter_map(OnceLock::get)
                    .map(|frame| {
                        if let Some(bytes) = frame.downcast_ref::<Bytes>() {
                            bytes.len()
                        } else if let Some(text) =
                            frame.downcast_ref::<axum::extract::ws::Utf8Bytes>()
                        {
                            text.len()
                        } else {
                            panic!("a frame of an unknown type")
                        }
                    })
                    .sum();
                event.data.len() + frames
            })
            .sum()
    }

    /// Frames `event` every way a transport does; checks each frame is the
    /// one built afresh (intact, kept or not); returns their total length.
    fn frame_every_way(event: &EncodedEvent) -> usize {
        use crate::transport::{iframe::Script, sse::Block, ws::Text};
        use crate::wire::Message;
        fn one<F: Framing>(event: &EncodedEvent) -> usize
        where
            F::Frame: PartialEq + std::fmt::Debug,
        {
            let frame = event.frame::<F>();
            assert_eq!(frame, F::frame(event), "a frame differs from a fresh one");
            std::mem::size_of_val::<<F::Frame as Deref>::Target>(&*frame)
        }
        one::<Message>(event) + one::<Block>(event) + one::<Script>(event) + one::<Text>(event)
    }

    #[test]
    fn histories_hold_their_byte_budget_framed_copies_included() {
        const BUDGET: usize = 64 * 1024;
        let budget = HistoryBudget::new(BUDGET, usize::MAX);
        let log = Arc::new(TopicLog::with_budget(1, 1024, &budget));
        let mut sub = log.subscribe(Start::Now).unwrap();
        let mut out = Vec::new();
        let mut delivered = 0;
        let mut most = 0;
        for n in 1..=200 {
            log.append(large(n, 1000 + 37 * n));
            out.clear();
            sub.fill(&mut out, usize::MAX);
            for delivery in &out {
                let Delivery::Event(event) = delivery else {
                    panic!("a live reader that keeps up gets no gap: {out:?}");
                };
                frame_every_way(event);
                delivered += 1;
            }
            assert_eq!(log.bytes(), held(&log), "the count is what the ring holds");
            if n == 1 {
                assert!(log.bytes() > 5 * 1037, "the first event's frames were kept");
            }
            assert!(log.bytes() <= BUDGET, "{} bytes held", log.bytes());
            assert_eq!(budget.used(), log.bytes());
            most = most.max(log.bytes());
        }
        assert_eq!(delivered, 200);
        assert!(most > BUDGET / 2, "the budget is used: {most}");
        // The framed copies are counted: the first event of a fresh log with
        // every framing kept counts its payload and its four frames.
        let log = Arc::new(TopicLog::with_budget(1, 1024, &budget));
        log.append(large(1, 1000));
        let event = log.subscribe(Start::After(Cursor::new(1, 0))).unwrap();
        let mut out = Vec::new();
        let mut event_sub = event;
        event_sub.fill(&mut out, 1);
        let Delivery::Event(event) = &out[0] else {
            panic!("an event")
        };
        let frames = frame_every_way(event);
        assert!(frames > 4 * 1000);
        assert_eq!(log.bytes(), 1000 + frames);
        // Bytes are given back when events leave the ring, and with the log.
        log.skip_to(5);
        assert_eq!(log.bytes(), 0);
        drop(out);
        drop(sub);
    }

    #[test]
    fn a_reader_behind_the_byte_budget_gets_a_gap() {
        let budget = HistoryBudget::new(3 * 1000, usize::MAX);
        let log = Arc::new(TopicLog::with_budget(1, 1024, &budget));
        let mut sub = log.subscribe(Start::Now).unwrap();
        for n in 1..=10 {
            log.append(large(n, 1000));
        }
        assert_eq!(log.len(), 3);
        let mut out = Vec::new();
        sub.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["gap 0..7 Some(7)", "8", "9", "10"]);
        // Resuming from before the oldest event: the same gap.
        let mut late = log.subscribe(Start::After(Cursor::new(1, 2))).unwrap();
        out.clear();
        late.fill(&mut out, 10);
        assert_eq!(seqs(&out), ["gap 2..7 Some(5)", "8", "9", "10"]);
    }

    #[test]
    fn a_frame_over_the_budget_is_delivered_intact_and_not_kept() {
        // Room for the payload only; and one event larger than the budget
        // alone, kept all the same (the newest event always is).
        for size in [5000, 9000] {
            let budget = HistoryBudget::new(5100, usize::MAX);
            let log = Arc::new(TopicLog::with_budget(1, 8, &budget));
            log.append(large(1, 3000));
            log.append(large(2, size));
            assert_eq!(seqs_of(&log), ["2"], "the newest event is kept");
            let mut sub = log.subscribe(Start::After(Cursor::new(1, 1))).unwrap();
            let mut out = Vec::new();
            sub.fill(&mut out, 8);
            let Delivery::Event(event) = &out[0] else {
                panic!("an event")
            };
            // Twice: built afresh each time, identical, never kept.
            for _ in 0..2 {
                frame_every_way(event);
                assert!(event.frames.iter().all(|frame| frame.get().is_none()));
                assert_eq!(log.bytes(), size);
            }
        }
    }

    fn seqs_of(log: &Arc<TopicLog>) -> Vec<String> {
        let mut out = Vec::new();
        let mut sub = log
            .subscribe(Start::After(Cursor::new(log.epoch(), 0)))
            .unwrap();
        sub.fill(&mut out, usize::MAX);
        seqs(&out)
            .into_iter()
            .filter(|item| !item.starts_with("gap"))
            .collect()
    }

    #[test]
    fn the_total_budget_holds_across_topics() {
        const E: usize = 1000;
        let budget = HistoryBudget::new(usize::MAX, 3 * E);
        let a = Arc::new(TopicLog::with_budget(1, 64, &budget));
        let b = Arc::new(TopicLog::with_budget(2, 64, &budget));
        let c = Arc::new(TopicLog::with_budget(3, 64, &budget));
        a.append(large(1, E));
        a.append(large(2, E));
        b.append(large(1, E));
        assert_eq!(budget.used(), 3 * E);
        // `b` makes room by dropping its own oldest event.
        assert!(b.try_append(large(2, E)).is_ok());
        assert_eq!(
            (seqs_of(&a), seqs_of(&b)),
            (vec!["1".into(), "2".into()], vec!["2".to_owned()])
        );
        // A frame finds no room in the total: delivered, not kept.
        let mut out = Vec::new();
        b.subscribe(Start::After(Cursor::new(2, 1)))
            .unwrap()
            .fill(&mut out, 1);
        let Delivery::Event(event) = &out[0] else {
            panic!("an event")
        };
        frame_every_way(event);
        assert_eq!(budget.used(), 3 * E);
        // `c` cannot make room: refused, nothing changed…
        let mut reader = c.subscribe(Start::Now).unwrap();
        let full = c.try_append(large(1, E)).unwrap_err();
        assert_eq!((full.size, full.limit), (E, 3 * E));
        assert_eq!((c.newest().seq(), budget.used()), (0, 3 * E));
        // …or, by `append`, kept as a gap of one, the others untouched.
        assert_eq!(c.append(large(1, E)), Cursor::new(3, 1));
        out.clear();
        reader.fill(&mut out, 8);
        assert_eq!(seqs(&out), ["gap 0..1 Some(1)"]);
        assert_eq!(c.append_at(2, large(2, E)), AppendAt::Appended);
        out.clear();
        reader.fill(&mut out, 8);
        assert_eq!(seqs(&out), ["gap 1..2 Some(1)"]);
        assert_eq!(budget.used(), 3 * E);
        assert_eq!(a.bytes() + b.bytes() + c.bytes(), budget.used());
        // A dropped log gives its bytes back: room again.
        drop(a);
        assert_eq!(budget.used(), E);
        assert!(c.try_append(large(3, E)).is_ok());
        assert_eq!(budget.used(), 2 * E);
    }

    #[test]
    fn concurrent_framing_and_trimming_count_exactly() {
        const BUDGET: usize = 40 * 1024;
        let budget = HistoryBudget::new(BUDGET, 3 * BUDGET / 2);
        let log = Arc::new(TopicLog::with_budget(1, 1024, &budget));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut sub = log.subscribe(Start::Now).unwrap();
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    let mut read = 0;
                    while read < 300 {
                        out.clear();
                        sub.fill(&mut out, 16);
                        for delivery in &out {
                            if let Delivery::Event(event) = delivery {
                                frame_every_way(event);
                            }
                            read = delivery.cursor().seq();
                        }
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        for n in 1..=300 {
            log.append(large(n, 500 + 7 * n));
            assert!(log.bytes() <= BUDGET);
        }
        for reader in readers {
            reader.join().unwrap();
        }
        assert_eq!(log.bytes(), held(&log));
        assert_eq!(budget.used(), log.bytes());
        drop(log);
        assert_eq!(budget.used(), 0, "every byte given back");
    }

    #[test]
    fn filter_sets() {
        let f = KindFilter::from_indices([0, 65, 200]);
        assert!(f.contains(0) && f.contains(65) && f.contains(200));
        assert!(!f.contains(1) && !f.contains(64) && !f.contains(1000));
    }
}

//! The checker: what each client recorded against what the publishers were
//! told. Pure (no I/O, no clock), so its rules are unit-tested below.
//!
//! For each client, given its updates and every acknowledged publish:
//!
//! - **duplicates**: an id delivered more than once (each extra delivery counts);
//! - **reorders**: within one epoch, an event whose seq is not above the
//!   client's position in that epoch (the last event or gap end seen in it);
//! - **silent losses**: an acknowledged publish after the client's start (its
//!   first `Ready`) that the client neither received nor had covered by a gap.
//!   "After the start": in the start's epoch, a higher seq; in another epoch,
//!   one first seen later in the run than the start's epoch. A gap within
//!   one epoch with a known count covers the seqs in `(from.seq, to.seq]`;
//!   a gap across epochs (or with `missed: None`) covers everything in
//!   `from`'s epoch after `from.seq`, and, across epochs, the seqs up to
//!   `to.seq` in `to`'s epoch (the protocol: "everything up to `to` is gone"),
//!   and every event of an epoch the client never saw that came and went
//!   between the two (first seen in the run after `from`'s epoch and before
//!   `to`'s): a Redis that went back in time twice in a row leaves such an
//!   epoch behind, and each epoch change empties the topic's stream, so its
//!   events are gone for every client that was not reading it then.
//!
//! Across all clients and publishers, **cursor conflicts**: one cursor that
//! names two different ids.
//!
//! A run with several topics (`--cluster` spreads them over the shards) is
//! checked one topic at a time ([`check_topics`]): a client is owed the
//! publishes to its own topic, and a cursor conflicts only with one of the
//! same topic (each topic has its own epochs and sequence numbers).

use push_runtime::Cursor;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A publish the server acknowledged with its cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The topic's index in the run's list of topics.
    pub topic: usize,
    pub cursor: Cursor,
    pub id: u64,
    /// Milliseconds since the run started, when the answer arrived.
    pub at_ms: u64,
}

/// One update a client received, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Ready(Cursor),
    Event {
        cursor: Cursor,
        id: u64,
    },
    Gap {
        from: Cursor,
        to: Cursor,
        missed: Option<u64>,
    },
    Reconnecting,
    /// An error item (the stream ends after a permanent one).
    Error(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    pub seen: Seen,
}

/// What the checker found for one client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientVerdict {
    pub started: Option<Cursor>,
    pub last: Option<Cursor>,
    pub readies: usize,
    pub deliveries: usize,
    pub gaps: usize,
    pub reconnects: usize,
    pub errors: usize,
    pub duplicates: usize,
    pub reorders: usize,
    pub silent_losses: usize,
    /// A few of the lost publishes, for the report.
    pub lost_sample: Vec<Cursor>,
    /// Events delivered whose publish was not acknowledged (failed, may be stored).
    pub unacked_deliveries: usize,
    /// Owed publishes not received but covered by a gap: in all, and of
    /// those, how many only as the start of a new epoch a gap jumped into.
    pub covered: usize,
    pub covered_new_epoch: usize,
    /// Of those, how many in an epoch the client never saw, which a gap
    /// across epochs skipped.
    pub covered_skipped_epoch: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub clients: Vec<ClientVerdict>,
    /// Cursors that name two different ids, anywhere.
    pub cursor_conflicts: usize,
    pub conflict_sample: Vec<(Cursor, Vec<u64>)>,
}

impl Verdict {
    pub fn sum(&self, field: fn(&ClientVerdict) -> usize) -> usize {
        self.clients.iter().map(field).sum()
    }

    /// Whether nothing was lost silently, duplicated, reordered or reused,
    /// and every client got going.
    pub fn passed(&self) -> bool {
        self.cursor_conflicts == 0
            && self.clients.iter().all(|c| {
                c.started.is_some() && c.silent_losses == 0 && c.duplicates == 0 && c.reorders == 0
            })
    }
}

/// When each epoch was first seen in the run (by a publisher or a client).
fn epoch_order(acks: &[Ack], clients: &[Vec<Record>]) -> HashMap<u64, u64> {
    let mut first: HashMap<u64, u64> = HashMap::new();
    let mut see = |cursor: Cursor, at: u64| {
        let slot = first.entry(cursor.epoch()).or_insert(at);
        *slot = (*slot).min(at);
    };
    for ack in acks {
        see(ack.cursor, ack.at_ms);
    }
    for records in clients {
        for record in records {
            match record.seen {
                Seen::Ready(cursor) | Seen::Event { cursor, .. } => see(cursor, record.at_ms),
                Seen::Gap { from, to, .. } => {
                    see(from, record.at_ms);
                    see(to, record.at_ms);
                }
                Seen::Reconnecting | Seen::Error(_) => {}
            }
        }
    }
    first
}

struct GapRange {
    from: Cursor,
    to: Cursor,
    missed: Option<u64>,
}

impl GapRange {
    fn covers(&self, cursor: Cursor) -> bool {
        let (from, to) = (self.from, self.to);
        if from.epoch() == to.epoch() && self.missed.is_some() {
            return cursor.epoch() == from.epoch()
                && cursor.seq() > from.seq()
                && cursor.seq() <= to.seq();
        }
        (cursor.epoch() == from.epoch() && cursor.seq() > from.seq()) || self.starts_at(cursor)
    }

    /// Covers an event of an epoch the client never saw, which came and went
    /// between the two epochs this gap joins.
    fn skips(&self, epoch: u64, first_seen: &HashMap<u64, u64>) -> bool {
        let seen = |e: u64| first_seen.get(&e).copied();
        self.from.epoch() != self.to.epoch()
            && matches!(
                (seen(self.from.epoch()), seen(epoch), seen(self.to.epoch())),
                (Some(from), Some(between), Some(to)) if from < between && between < to
            )
    }

    /// Covered as the start of the new epoch a gap across epochs jumps into.
    fn starts_at(&self, cursor: Cursor) -> bool {
        self.from.epoch() != self.to.epoch()
            && cursor.epoch() == self.to.epoch()
            && cursor.seq() <= self.to.seq()
    }
}

fn check_client(
    records: &[Record],
    acks: &[Ack],
    acked_ids: &HashSet<u64>,
    first_seen: &HashMap<u64, u64>,
) -> ClientVerdict {
    let mut verdict = ClientVerdict::default();
    let mut received: HashMap<u64, usize> = HashMap::new();
    let mut position: HashMap<u64, u64> = HashMap::new();
    // Every epoch the client heard of, in any form.
    let mut heard: HashSet<u64> = HashSet::new();
    let mut gaps = Vec::new();
    for record in records {
        match &record.seen {
            Seen::Ready(cursor) => {
                heard.insert(cursor.epoch());
                verdict.readies += 1;
                verdict.started.get_or_insert(*cursor);
                verdict.last = Some(*cursor);
            }
            Seen::Event { cursor, id } => {
                heard.insert(cursor.epoch());
                verdict.deliveries += 1;
                let count = received.entry(*id).or_default();
                *count += 1;
                if *count > 1 {
                    verdict.duplicates += 1;
                }
                if !acked_ids.contains(id) {
                    verdict.unacked_deliveries += 1;
                }
                let at = position.entry(cursor.epoch()).or_insert(0);
                if cursor.seq() <= *at && verdict.started.is_some() {
                    verdict.reorders += 1;
                }
                *at = (*at).max(cursor.seq());
                verdict.last = Some(*cursor);
            }
            Seen::Gap { from, to, missed } => {
                heard.extend([from.epoch(), to.epoch()]);
                verdict.gaps += 1;
                let at = position.entry(to.epoch()).or_insert(0);
                *at = (*at).max(to.seq());
                gaps.push(GapRange {
                    from: *from,
                    to: *to,
                    missed: *missed,
                });
                verdict.last = Some(*to);
            }
            Seen::Reconnecting => verdict.reconnects += 1,
            Seen::Error(_) => verdict.errors += 1,
        }
    }
    let Some(start) = verdict.started else {
        return verdict;
    };
    let start_seen = first_seen.get(&start.epoch()).copied().unwrap_or(0);
    let after_start = |cursor: Cursor| {
        if cursor.epoch() == start.epoch() {
            cursor.seq() > start.seq()
        } else {
            first_seen
                .get(&cursor.epoch())
                .is_some_and(|&seen| seen > start_seen)
        }
    };
    let mut lost: Vec<Cursor> = Vec::new();
    for ack in acks {
        if !after_start(ack.cursor) || received.contains_key(&ack.id) {
            continue;
        }
        let covering: Vec<&GapRange> = gaps.iter().filter(|g| g.covers(ack.cursor)).collect();
        if covering.is_empty() {
            let epoch = ack.cursor.epoch();
            if !heard.contains(&epoch) && gaps.iter().any(|g| g.skips(epoch, first_seen)) {
                verdict.covered += 1;
                verdict.covered_skipped_epoch += 1;
            } else {
                lost.push(ack.cursor);
            }
        } else {
            verdict.covered += 1;
            if covering.iter().all(|g| g.starts_at(ack.cursor)) {
                verdict.covered_new_epoch += 1;
            }
        }
    }
    lost.sort_by_key(|c| (first_seen.get(&c.epoch()).copied(), c.seq()));
    verdict.silent_losses = lost.len();
    lost.truncate(5);
    verdict.lost_sample = lost;
    verdict
}

/// Checks each topic apart: every client (its topic's index, its records)
/// against the acknowledged publishes to its topic; the verdicts of the
/// clients in the order given, the cursor conflicts of every topic.
pub fn check_topics(acks: &[Ack], clients: &[(usize, Vec<Record>)]) -> Verdict {
    let mut topics: Vec<usize> = clients.iter().map(|(topic, _)| *topic).collect();
    topics.extend(acks.iter().map(|ack| ack.topic));
    topics.sort_unstable();
    topics.dedup();
    let mut verdict = Verdict {
        clients: vec![ClientVerdict::default(); clients.len()],
        ..Verdict::default()
    };
    for topic in topics {
        let topic_acks: Vec<Ack> = acks.iter().filter(|a| a.topic == topic).copied().collect();
        let (indices, records): (Vec<usize>, Vec<Vec<Record>>) = clients
            .iter()
            .enumerate()
            .filter(|(_, (t, _))| *t == topic)
            .map(|(index, (_, records))| (index, records.clone()))
            .unzip();
        let topic_verdict = check(&topic_acks, &records);
        for (index, client) in indices.into_iter().zip(topic_verdict.clients) {
            verdict.clients[index] = client;
        }
        verdict.cursor_conflicts += topic_verdict.cursor_conflicts;
        verdict
            .conflict_sample
            .extend(topic_verdict.conflict_sample);
    }
    verdict.conflict_sample.truncate(5);
    verdict
}

/// Checks every client's records against the acknowledged publishes, all
/// of one topic.
pub fn check(acks: &[Ack], clients: &[Vec<Record>]) -> Verdict {
    let first_seen = epoch_order(acks, clients);
    let acked_ids: HashSet<u64> = acks.iter().map(|ack| ack.id).collect();
    let mut names: BTreeMap<Cursor, HashSet<u64>> = BTreeMap::new();
    for ack in acks {
        names.entry(ack.cursor).or_default().insert(ack.id);
    }
    for records in clients {
        for record in records {
            if let Seen::Event { cursor, id } = record.seen {
                names.entry(cursor).or_default().insert(id);
            }
        }
    }
    let conflicts: Vec<(Cursor, Vec<u64>)> = names
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(cursor, ids)| {
            let mut ids: Vec<u64> = ids.into_iter().collect();
            ids.sort_unstable();
            (cursor, ids)
        })
        .collect();
    Verdict {
        clients: clients
            .iter()
            .map(|records| check_client(records, acks, &acked_ids, &first_seen))
            .collect(),
        cursor_conflicts: conflicts.len(),
        conflict_sample: conflicts.into_iter().take(5).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(epoch: u64, seq: u64) -> Cursor {
        Cursor::new(epoch, seq)
    }

    fn ack(epoch: u64, seq: u64, id: u64, at_ms: u64) -> Ack {
        Ack {
            topic: 0,
            cursor: c(epoch, seq),
            id,
            at_ms,
        }
    }

    fn rec(at_ms: u64, seen: Seen) -> Record {
        Record { at_ms, seen }
    }

    fn ev(at_ms: u64, epoch: u64, seq: u64, id: u64) -> Record {
        rec(
            at_ms,
            Seen::Event {
                cursor: c(epoch, seq),
                id,
            },
        )
    }

    fn gap(at_ms: u64, from: Cursor, to: Cursor, missed: Option<u64>) -> Record {
        rec(at_ms, Seen::Gap { from, to, missed })
    }

    /// Acks of ids 1..=n at seqs 1..=n of epoch 7, acked at 100 ms each.
    fn acks(n: u64) -> Vec<Ack> {
        (1..=n).map(|i| ack(7, i, i, 100 * i)).collect()
    }

    #[test]
    fn everything_received_is_clean() {
        let client = vec![
            rec(0, Seen::Ready(c(7, 0))),
            ev(100, 7, 1, 1),
            ev(200, 7, 2, 2),
            ev(300, 7, 3, 3),
        ];
        let verdict = check(&acks(3), &[client]);
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!(verdict.clients[0].deliveries, 3);
    }

    #[test]
    fn a_missing_event_is_a_silent_loss() {
        let client = vec![
            rec(0, Seen::Ready(c(7, 0))),
            ev(100, 7, 1, 1),
            ev(300, 7, 3, 3),
        ];
        let verdict = check(&acks(3), &[client]);
        assert_eq!(verdict.clients[0].silent_losses, 1);
        assert_eq!(verdict.clients[0].lost_sample, [c(7, 2)]);
        assert!(!verdict.passed());
    }

    #[test]
    fn events_before_the_start_are_not_owed() {
        let client = vec![rec(250, Seen::Ready(c(7, 2))), ev(300, 7, 3, 3)];
        let verdict = check(&acks(3), &[client]);
        assert!(verdict.passed(), "{verdict:?}");
    }

    #[test]
    fn a_gap_in_one_epoch_covers_exactly_its_range() {
        let client = vec![
            rec(0, Seen::Ready(c(7, 0))),
            ev(100, 7, 1, 1),
            gap(400, c(7, 1), c(7, 3), Some(2)),
            ev(500, 7, 5, 5),
        ];
        // 2 and 3 are covered; 4 is not.
        let verdict = check(&acks(5), &[client]);
        assert_eq!(verdict.clients[0].silent_losses, 1);
        assert_eq!(verdict.clients[0].lost_sample, [c(7, 4)]);
    }

    #[test]
    fn a_gap_without_a_count_covers_the_rest_of_its_epoch() {
        let client = vec![
            rec(0, Seen::Ready(c(7, 0))),
            ev(100, 7, 1, 1),
            gap(400, c(7, 1), c(7, 2), None),
        ];
        let verdict = check(&acks(5), &[client]);
        assert!(verdict.passed(), "{verdict:?}");
    }

    #[test]
    fn a_gap_across_epochs_covers_the_old_tail_and_the_new_start() {
        let mut published = acks(3);
        published.extend([ack(9, 1, 11, 500), ack(9, 2, 12, 600), ack(9, 3, 13, 700)]);
        let client = vec![
            rec(0, Seen::Ready(c(7, 0))),
            ev(100, 7, 1, 1),
            gap(650, c(7, 1), c(9, 2), None),
            ev(700, 9, 3, 13),
        ];
        let verdict = check(&published, std::slice::from_ref(&client));
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!(verdict.clients[0].covered, 4, "7-2, 7-3, 9-1, 9-2");
        assert_eq!(verdict.clients[0].covered_new_epoch, 2, "9-1, 9-2");
        // Without the event after the gap, the new epoch's event is lost.
        let verdict = check(&published, &[client[..3].to_vec()]);
        assert_eq!(verdict.clients[0].lost_sample, [c(9, 3)]);
    }

    #[test]
    fn a_gap_across_epochs_covers_an_epoch_that_came_and_went_between() {
        // Epoch 8 lived between 7 and 9; the client, away meanwhile, never
        // heard of it, and its gap jumps from 7 to 9.
        let mut published = acks(1);
        published.extend([ack(8, 1, 81, 300), ack(8, 2, 82, 310)]);
        published.push(ack(9, 1, 91, 600));
        let client = vec![
            rec(0, Seen::Ready(c(7, 0))),
            ev(100, 7, 1, 1),
            gap(650, c(7, 1), c(9, 0), None),
            ev(700, 9, 1, 91),
        ];
        let verdict = check(&published, std::slice::from_ref(&client));
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!(verdict.clients[0].covered_skipped_epoch, 2);
        // A client that heard of epoch 8 is owed its events.
        let mut heard = client.clone();
        heard.insert(2, ev(305, 8, 1, 81));
        let verdict = check(&published, &[heard]);
        assert_eq!(verdict.clients[0].lost_sample, [c(8, 2)]);
        // A gap within epoch 7 covers nothing of epoch 8.
        let within = vec![
            rec(0, Seen::Ready(c(7, 0))),
            gap(650, c(7, 0), c(7, 1), Some(1)),
            ev(700, 9, 1, 91),
        ];
        let verdict = check(&published, &[within]);
        assert_eq!(verdict.clients[0].silent_losses, 2);
    }

    #[test]
    fn a_new_epoch_is_owed_an_older_one_is_not() {
        // Epoch 5 was seen before the client's start epoch: not owed.
        let mut published = vec![ack(5, 1, 50, 10)];
        published.extend(acks(2));
        published.push(ack(9, 1, 90, 900));
        let client = vec![
            rec(50, Seen::Ready(c(7, 0))),
            ev(100, 7, 1, 1),
            ev(200, 7, 2, 2),
        ];
        let verdict = check(&published, &[client]);
        assert_eq!(verdict.clients[0].lost_sample, [c(9, 1)]);
    }

    #[test]
    fn duplicates_and_reorders_are_counted() {
        let client = vec![
            rec(0, Seen::Ready(c(7, 0))),
            ev(100, 7, 1, 1),
            ev(300, 7, 3, 3),
            ev(310, 7, 2, 2),
            ev(320, 7, 3, 3),
        ];
        let verdict = check(&acks(3), &[client]);
        let client = &verdict.clients[0];
        assert_eq!((client.duplicates, client.reorders), (1, 2));
        assert_eq!(client.silent_losses, 0);
    }

    #[test]
    fn an_event_inside_a_gap_already_passed_is_a_reorder() {
        let client = vec![
            rec(0, Seen::Ready(c(7, 0))),
            gap(300, c(7, 0), c(7, 3), Some(3)),
            ev(310, 7, 2, 2),
        ];
        assert_eq!(check(&acks(3), &[client]).clients[0].reorders, 1);
    }

    #[test]
    fn one_cursor_naming_two_ids_is_a_conflict() {
        // A rolled-back Redis hands out 7-3 again, to another publish.
        let mut published = acks(3);
        published.push(ack(7, 3, 33, 900));
        let client = vec![rec(0, Seen::Ready(c(7, 0))), ev(100, 7, 1, 1)];
        let other = vec![rec(0, Seen::Ready(c(7, 0))), ev(100, 7, 1, 99)];
        let verdict = check(&published, &[client, other]);
        assert_eq!(verdict.cursor_conflicts, 2);
        assert_eq!(verdict.conflict_sample[0], (c(7, 1), vec![1, 99]));
        assert!(!verdict.passed());
    }

    #[test]
    fn a_client_that_never_started_fails_the_run() {
        let verdict = check(&acks(1), &[vec![rec(0, Seen::Reconnecting)]]);
        assert_eq!(verdict.clients[0].started, None);
        assert!(!verdict.passed());
    }

    #[test]
    fn a_delivered_failed_publish_is_counted_not_blamed() {
        let client = vec![
            rec(0, Seen::Ready(c(7, 0))),
            ev(100, 7, 1, 1),
            ev(150, 7, 2, 77),
        ];
        let mut published = acks(1);
        published.push(ack(7, 3, 3, 300));
        let client = [client, vec![ev(300, 7, 3, 3)]].concat();
        let verdict = check(&published, &[client]);
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!(verdict.clients[0].unacked_deliveries, 1);
    }

    #[test]
    fn topics_are_checked_apart() {
        // Topic 1 reuses topic 0's cursors for its own events: no conflict.
        let mut published = acks(2);
        published.extend(acks(2).into_iter().map(|a| Ack {
            topic: 1,
            id: a.id + 100,
            ..a
        }));
        let zero = vec![
            rec(0, Seen::Ready(c(7, 0))),
            ev(100, 7, 1, 1),
            ev(200, 7, 2, 2),
        ];
        let one = vec![rec(0, Seen::Ready(c(7, 0))), ev(100, 7, 1, 101)];
        let verdict = check_topics(&published, &[(0, zero.clone()), (1, one)]);
        assert_eq!(verdict.cursor_conflicts, 0);
        // Topic 0's client is owed nothing of topic 1; topic 1's misses 102.
        assert_eq!(verdict.clients[0].silent_losses, 0);
        assert_eq!(verdict.clients[1].lost_sample, [c(7, 2)]);
        assert!(!verdict.passed());
        // Within one topic the same cursors do conflict.
        let verdict = check(&published, &[zero]);
        assert_eq!(verdict.cursor_conflicts, 2);
    }
}

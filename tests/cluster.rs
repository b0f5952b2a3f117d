//! The Redis broker on a Redis Cluster, under faults: three nodes (each its
//! own broker and hub), subscribers to every topic on the first two, all
//! three publishing to topics spread over the shards without a break while
//! (a) a primary is killed and its replica promoted, (b) the slots of live
//! topics are migrated to another primary, (c) slots are migrated while the
//! nodes are idle, so that they publish next with a stale slot map
//! (`MOVED`). The third node has no reader and checks epochs rarely: only
//! the redirections its publishes get tell it of a migration. The
//! migration tests check (`INFO errorstats`) that publishes did meet
//! redirections.
//!
//! Each test checks what a subscriber relies on: every publish acknowledged
//! with a cursor reaches every subscriber as that event or inside an
//! explicit gap; no duplicate, no reorder, no cursor naming two events; and
//! after the fault, publishing works again within a bounded time and the
//! subscribers get the new events. Publishes refused while a shard has no
//! primary (`Unavailable`) were not acknowledged: nothing is owed for them.
//!
//! Each test starts its own cluster (3 primaries, 3 replicas: `redis-server`
//! and `redis-cli` from `PATH`); without them the tests print why and pass,
//! except under CI (`CI` set), where they fail.

mod support;

use push_runtime::broker::{BrokerErrorKind, RedisBroker, RedisConfig};
use push_runtime::{Channel, Cursor, Delivery, Gap, Hub, HubConfig, PublishError, Start};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::PATIENCE;
use support::channel::{TestEvent, note};
use support::redis_setup::{OwnCluster, admin};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const PREFIX: &str = "push-cluster-test";
/// Topics published to, spread over the shards by their names' slots.
const TOPICS: usize = 8;
/// Events kept per topic, in Redis and in each node's mirror.
const HISTORY: usize = 1024;
/// Between two publishes to one topic: keeps the load of the machine (and
/// so the cluster's failure detection, at 1 s) sane.
const PACE: Duration = Duration::from_millis(5);
/// Publishes acknowledged per topic before the fault, and after it.
const BEFORE: usize = 50;
const AFTER: usize = 50;

fn topic(i: usize) -> String {
    format!("t{i}")
}

/// The key of a topic's events (its slot is the topic's).
fn events_key(i: usize) -> String {
    format!("{PREFIX}:{{{}/{}}}:events", TestEvent::PATH, topic(i))
}

/// What was published to one topic.
#[derive(Default)]
struct Published {
    /// Publishes tried so far (`note(0)`, `note(1)`, …).
    tried: usize,
    /// Those acknowledged, in order: (note, cursor).
    acked: Vec<(usize, Cursor)>,
    /// Refused as `Unavailable`.
    refused: usize,
    /// Any other failure: the test fails with it.
    failures: Vec<String>,
}

/// One item a subscriber got: an event (cursor, note) or a gap.
#[derive(Clone, Copy, Debug)]
enum Seen {
    Event(Cursor, usize),
    Gap(Gap),
}

fn seen(delivery: &Delivery) -> Seen {
    match delivery {
        Delivery::Event(event) => {
            let decoded: TestEvent =
                serde_json::from_slice(event.data()).expect("the payload decodes");
            let TestEvent::Note(text) = &decoded else {
                panic!("not a note: {decoded:?}");
            };
            let n = text.strip_prefix('n').and_then(|n| n.parse().ok());
            Seen::Event(event.cursor(), n.expect("a numbered note"))
        }
        Delivery::Gap(gap) => Seen::Gap(*gap),
    }
}

/// A subscriber to one topic on one node, read as it goes by a task.
struct Reader {
    node: usize,
    topic: usize,
    /// Its position when it subscribed.
    start: Cursor,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

/// Three nodes on a cluster, a subscriber on the first two to every topic,
/// and a publisher per topic going round the three.
struct Run {
    cluster: OwnCluster,
    hubs: Vec<Hub<TestEvent>>,
    published: Arc<Vec<Mutex<Published>>>,
    readers: Vec<Reader>,
    stop: Arc<AtomicBool>,
    publishers: Vec<JoinHandle<()>>,
}

impl Run {
    async fn start(cluster: OwnCluster) -> Self {
        let mut hubs = Vec::new();
        // The third node only publishes and checks epochs rarely: no reader
        // and no check tells it of a change, its slot map learns only from
        // the redirections its publishes get.
        for epoch_check in [200, 200, 60_000] {
            let config = RedisConfig::cluster(cluster.urls())
                .key_prefix(PREFIX)
                .history_len(HISTORY)
                .command_timeout(Duration::from_secs(1))
                .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
                .epoch_check_interval(Duration::from_millis(epoch_check));
            let broker = RedisBroker::connect(config)
                .await
                .expect("connect to the cluster");
            let mut hub_config = HubConfig::default();
            hub_config.history_len = HISTORY;
            hubs.push(Hub::with_broker(Arc::new(broker), hub_config));
        }
        let mut readers = Vec::new();
        for (node, hub) in hubs.iter().enumerate().take(2) {
            for topic_index in 0..TOPICS {
                let mut subscription = hub
                    .subscribe(&topic(topic_index), Start::Now, None)
                    .await
                    .expect("subscribe");
                let start = subscription.position();
                let log = Arc::new(Mutex::new(Vec::new()));
                let into = Arc::clone(&log);
                let task = tokio::spawn(async move {
                    let mut batch = Vec::new();
                    loop {
                        subscription.next_batch(&mut batch, 64).await;
                        let mut into = into.lock().expect("seen");
                        into.extend(batch.drain(..).map(|d| seen(&d)));
                    }
                });
                readers.push(Reader {
                    node,
                    topic: topic_index,
                    start,
                    seen: log,
                    task,
                });
            }
        }
        let mut run = Self {
            cluster,
            hubs,
            published: Arc::new((0..TOPICS).map(|_| Mutex::default()).collect()),
            readers,
            stop: Arc::new(AtomicBool::new(false)),
            publishers: Vec::new(),
        };
        run.resume_publishing();
        run
    }

    /// Starts a publisher per topic, each going on from its last note.
    fn resume_publishing(&mut self) {
        self.stop.store(false, Ordering::Relaxed);
        for topic_index in 0..TOPICS {
            let hubs = self.hubs.clone();
            let published = Arc::clone(&self.published);
            let stop = Arc::clone(&self.stop);
            self.publishers.push(tokio::spawn(async move {
                let record = &published[topic_index];
                while !stop.load(Ordering::Relaxed) {
                    let n = {
                        let mut record = record.lock().expect("published");
                        record.tried += 1;
                        record.tried - 1
                    };
                    let node = n % hubs.len();
                    let outcome = hubs[node].publish(&topic(topic_index), note(n)).await;
                    {
                        let mut record = record.lock().expect("published");
                        match outcome {
                            Ok(cursor) => record.acked.push((n, cursor)),
                            Err(PublishError::Broker(error))
                                if error.kind() == BrokerErrorKind::Unavailable =>
                            {
                                record.refused += 1;
                            }
                            Err(error) => record
                                .failures
                                .push(format!("note {n} on node {node}: {error}")),
                        }
                    }
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
    }

    /// Stops the publishers, once their publish in flight has an answer.
    async fn pause_publishing(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for publisher in self.publishers.drain(..) {
            tokio::time::timeout(PATIENCE, publisher)
                .await
                .expect("a publish answered in time")
                .expect("the publisher ran");
        }
    }

    /// Notes tried so far, per topic: what comes after is "after now".
    fn marks(&self) -> Vec<usize> {
        self.published
            .iter()
            .map(|p| p.lock().expect("published").tried)
            .collect()
    }

    /// Waits (bounded) until every topic has `count` publishes acknowledged
    /// of those tried after `marks`.
    async fn until_acked(&self, marks: &[usize], count: usize, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut behind = Vec::new();
            for (i, record) in self.published.iter().enumerate() {
                let record = record.lock().expect("published");
                let failures = record.failures.clone();
                if !failures.is_empty() {
                    drop(record);
                    panic!("{what}: {failures:?}");
                }
                let acked = record.acked.iter().filter(|(n, _)| *n >= marks[i]).count();
                if acked < count {
                    behind.push(format!(
                        "{}: {acked} acked, {} refused",
                        topic(i),
                        record.refused
                    ));
                }
            }
            if behind.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not {count} publishes per topic in {PATIENCE:?}: {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops publishing, waits until every subscriber got the last event
    /// of its topic, and checks what each got; returns what was published.
    async fn finish(mut self) -> (OwnCluster, Vec<Published>) {
        self.pause_publishing().await;
        let published: Vec<Published> = self
            .published
            .iter()
            .map(|p| std::mem::take(&mut *p.lock().expect("published")))
            .collect();
        for record in &published {
            assert!(record.failures.is_empty(), "{:?}", record.failures);
        }
        let deadline = Instant::now() + PATIENCE;
        for reader in &mut self.readers {
            let last = published[reader.topic].acked.last().expect("acked").1;
            loop {
                let got = reader
                    .seen
                    .lock()
                    .expect("seen")
                    .iter()
                    .any(|s| matches!(s, Seen::Event(cursor, _) if *cursor == last));
                if got {
                    break;
                }
                if reader.task.is_finished() {
                    (&mut reader.task).await.expect("the reader ran");
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} did not get {last} of {} in time",
                    reader.node,
                    topic(reader.topic)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            reader.task.abort();
        }
        for (i, record) in published.iter().enumerate() {
            let mut names: HashMap<Cursor, usize> = HashMap::new();
            for &(n, cursor) in &record.acked {
                if let Some(other) = names.insert(cursor, n) {
                    panic!(
                        "{}: {cursor} acknowledged for notes {other} and {n}",
                        topic(i)
                    );
                }
            }
            let mut gaps = Vec::new();
            for reader in self.readers.iter().filter(|r| r.topic == i) {
                let what = format!("{} on node {}", topic(i), reader.node);
                let seen = reader.seen.lock().expect("seen");
                check(&what, reader.start, &seen, record);
                gaps.push(seen.iter().filter(|s| matches!(s, Seen::Gap(_))).count());
                // Events not acknowledged (refused, yet written) too: one
                // cursor, one event, whichever node delivered it.
                for item in seen.iter() {
                    if let Seen::Event(cursor, n) = *item {
                        let named = *names.entry(cursor).or_insert(n);
                        assert_eq!(named, n, "{what}: {cursor} names notes {named} and {n}");
                    }
                }
            }
            eprintln!(
                "{}: {} acknowledged, {} refused, {} epoch(s); gaps seen per node: {gaps:?}",
                topic(i),
                record.acked.len(),
                record.refused,
                epochs(record).len()
            );
        }
        (self.cluster, published)
    }
}

/// Checks what one subscriber, positioned at `start`, got: a gap starts
/// where the subscriber stood, an event is the one right after where it
/// stood (so no hole, duplicate or reorder goes unannounced), a cursor
/// names the event that was acknowledged with it, and every acknowledged
/// publish was delivered or lies inside a gap.
fn check(what: &str, start: Cursor, seen: &[Seen], published: &Published) {
    let acked: HashMap<Cursor, usize> = published.acked.iter().map(|&(n, c)| (c, n)).collect();
    let mut position = start;
    let mut gap_since_event = false;
    let mut last_note: Option<usize> = None;
    // note -> (cursor, whether a gap came right before it)
    let mut delivered: BTreeMap<usize, (Cursor, bool)> = BTreeMap::new();
    for item in seen {
        match *item {
            Seen::Gap(gap) => {
                assert_eq!(gap.from, position, "{what}: {gap:?} while at {position}");
                if gap.from.epoch() == gap.to.epoch() {
                    assert!(gap.to.seq() > gap.from.seq(), "{what}: {gap:?} goes back");
                    if let Some(missed) = gap.missed {
                        assert_eq!(missed, gap.to.seq() - gap.from.seq(), "{what}: {gap:?}");
                    }
                }
                position = gap.to;
                gap_since_event = true;
            }
            Seen::Event(cursor, n) => {
                let next = Cursor::new(position.epoch(), position.seq() + 1);
                assert_eq!(
                    cursor, next,
                    "{what}: note {n} at {cursor} after {position}, no gap between"
                );
                assert!(n < published.tried, "{what}: note {n} was never published");
                if let Some(&m) = acked.get(&cursor) {
                    assert_eq!(
                        m, n,
                        "{what}: {cursor} was acknowledged for note {m}, not {n}"
                    );
                }
                if let Some(last) = last_note {
                    assert!(n > last, "{what}: note {n} after note {last}");
                }
                delivered.insert(n, (cursor, gap_since_event));
                position = cursor;
                last_note = Some(n);
                gap_since_event = false;
            }
        }
    }
    for &(n, cursor) in &published.acked {
        if let Some((got, _)) = delivered.get(&n) {
            assert_eq!(*got, cursor, "{what}: note {n} acknowledged at {cursor}");
            continue;
        }
        match delivered.range(n + 1..).next() {
            Some((after, (_, gap_before))) => assert!(
                gap_before,
                "{what}: note {n} acknowledged at {cursor} is missing, and no gap before note {after}"
            ),
            None => panic!("{what}: note {n} acknowledged at {cursor} never came"),
        }
    }
}

/// The epochs a topic's acknowledged publishes went through, in order.
fn epochs(published: &Published) -> Vec<u64> {
    let mut epochs: Vec<u64> = Vec::new();
    for (_, cursor) in &published.acked {
        if epochs.last() != Some(&cursor.epoch()) {
            epochs.push(cursor.epoch());
        }
    }
    epochs
}

/// Whether the node at `port` holds topic `i`'s events (asked of the
/// node's own keys: `EXISTS` would answer `MOVED` where the slot is not).
async fn holds(cluster: &OwnCluster, port: u16, i: usize) -> bool {
    let slot = cluster.slot_of(&events_key(i)).await;
    let mut conn = admin(&format!("redis://127.0.0.1:{port}")).await;
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1000)
        .query_async(&mut conn)
        .await
        .expect("CLUSTER GETKEYSINSLOT");
    keys.contains(&events_key(i))
}

/// Where each topic lives, by primary.
async fn owners(cluster: &OwnCluster) -> Vec<u16> {
    let mut owners = Vec::new();
    for i in 0..TOPICS {
        owners.push(cluster.primary_of(&events_key(i)).await);
    }
    owners
}

/// (a) The primary of topic `t0` is killed while publishing; its replica
/// takes over. Its topics move to a new epoch (the promoted replica may
/// lag), the others keep theirs; publishing resumes, and goes on once the
/// killed node is back as a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_and_its_replica_promoted() {
    let Some(cluster) = OwnCluster::start("a_primary_killed_and_its_replica_promoted").await else {
        return;
    };
    let owners = owners(&cluster).await;
    let victim = owners[0];
    let run = Run::start(cluster).await;
    run.until_acked(&[0; TOPICS], BEFORE, "before the fault")
        .await;

    run.cluster.kill_primary(victim).await;
    run.until_acked(&run.marks(), AFTER, "after the failover")
        .await;
    run.cluster.restart_node(victim).await;
    run.until_acked(
        &run.marks(),
        AFTER,
        "with the old primary back as a replica",
    )
    .await;
    let (_cluster, published) = run.finish().await;

    for (i, record) in published.iter().enumerate() {
        let epochs = epochs(record);
        if owners[i] == victim {
            assert!(
                epochs.len() >= 2,
                "{}: no new epoch after the failover",
                topic(i)
            );
        } else {
            // Publishes here may have been refused too: until the failover,
            // every node answers CLUSTERDOWN (a slot has no primary, and
            // `cluster-require-full-coverage` is on by default).
            assert_eq!(epochs.len(), 1, "{}: another shard's failover", topic(i));
        }
    }
}

/// The topics that live with `t0`, the primary they live on, and another
/// primary to move them to.
async fn to_move(cluster: &OwnCluster) -> (Vec<usize>, u16, u16) {
    let owners = owners(cluster).await;
    let from = owners[0];
    let to = *cluster
        .primaries()
        .await
        .iter()
        .find(|&&p| p != from)
        .expect("another primary");
    let moving = (0..TOPICS).filter(|&i| owners[i] == from).collect();
    (moving, from, to)
}

/// Moves the slots of topics `moving` to `to`, one after another, each
/// key waiting `pause` before the next (a topic's keys apart meanwhile).
async fn migrate(cluster: &OwnCluster, moving: &[usize], to: u16, pause: Duration) {
    let mut slots = Vec::new();
    for &i in moving {
        slots.push(cluster.slot_of(&events_key(i)).await);
    }
    slots.sort_unstable();
    slots.dedup();
    for slot in slots {
        cluster.migrate_slot(slot, to, pause).await;
    }
}

/// The redirections (`MOVED`, `ASK`, `TRYAGAIN`) the nodes answered so far.
async fn redirections(cluster: &OwnCluster) -> u64 {
    let mut total = 0;
    for kind in ["MOVED", "ASK", "TRYAGAIN"] {
        total += cluster.error_replies(kind).await;
    }
    total
}

/// The moved topics left `from` for `to`, every topic lives where the
/// cluster says, and publishing was never refused: a migration costs no
/// availability.
async fn after_migration(
    cluster: &OwnCluster,
    published: &[Published],
    moving: &[usize],
    from: u16,
    to: u16,
) {
    for &i in moving {
        assert!(
            !holds(cluster, from, i).await,
            "{} is still on {from}",
            topic(i)
        );
    }
    for &i in moving {
        assert!(holds(cluster, to, i).await, "{} is not on {to}", topic(i));
    }
    for (i, record) in published.iter().enumerate() {
        assert_eq!(
            record.refused,
            0,
            "{}: refused during a migration",
            topic(i)
        );
        let owner = cluster.primary_of(&events_key(i)).await;
        assert!(
            holds(cluster, owner, i).await,
            "{} is not on {owner}",
            topic(i)
        );
    }
}

/// (b) The slots of the topics living with `t0` move to another primary
/// while both nodes publish: `ASK` and `TRYAGAIN` while a topic's keys are
/// on both sides, `MOVED` after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_of_live_topics_migrated_while_publishing() {
    let Some(cluster) = OwnCluster::start("slots_of_live_topics_migrated_while_publishing").await
    else {
        return;
    };
    let (moving, from, to) = to_move(&cluster).await;
    let run = Run::start(cluster).await;
    run.until_acked(&[0; TOPICS], BEFORE, "before the migration")
        .await;

    let redirected = redirections(&run.cluster).await;
    migrate(&run.cluster, &moving, to, Duration::from_millis(20)).await;
    run.until_acked(&run.marks(), AFTER, "after the migration")
        .await;
    let redirected = redirections(&run.cluster).await - redirected;
    eprintln!("MOVED, ASK or TRYAGAIN answered: {redirected}");
    assert!(
        redirected > 0,
        "no publish was redirected: the test missed its point"
    );
    let (cluster, published) = run.finish().await;
    after_migration(&cluster, &published, &moving, from, to).await;
}

/// (c) The slots of the topics living with `t0` move to another primary
/// while the nodes are idle: both publish next with a slot map gone stale,
/// get `MOVED`, and follow it; their subscribers follow too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_with_a_stale_slot_map_follows_moved() {
    let Some(cluster) = OwnCluster::start("publishing_with_a_stale_slot_map_follows_moved").await
    else {
        return;
    };
    let (moving, from, to) = to_move(&cluster).await;
    let mut run = Run::start(cluster).await;
    run.until_acked(&[0; TOPICS], BEFORE, "before the migration")
        .await;
    run.pause_publishing().await;

    migrate(&run.cluster, &moving, to, Duration::ZERO).await;
    let moved = run.cluster.error_replies("MOVED").await;
    let marks = run.marks();
    run.resume_publishing();
    run.until_acked(&marks, AFTER, "after the migration").await;
    let moved = run.cluster.error_replies("MOVED").await - moved;
    eprintln!("MOVED answered: {moved}");
    assert!(moved > 0, "no publish met MOVED: the test missed its point");
    let (cluster, published) = run.finish().await;
    after_migration(&cluster, &published, &moving, from, to).await;
}

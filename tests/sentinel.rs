//! The Redis broker behind Redis Sentinel: it finds the primary, follows a
//! failover, and clients see every event or an explicit gap.
//!
//! Each test starts its own `redis-server` processes (a primary, a replica
//! and a sentinel, on free loopback ports); without `redis-server` on `PATH`
//! they print why and pass, except under CI (`CI` set), where they fail.

mod support;

use push_runtime::broker::{Broker, BrokerError, BrokerErrorKind, RedisBroker, RedisConfig};
use push_runtime::{Cursor, Delivery, Hub, HubConfig, Start};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use support::PATIENCE;
use support::channel::{TestEvent, note};
use support::redis_setup::{OwnRedis, OwnSentinel, admin, free_port};

fn config(sentinel: &OwnSentinel, master: &str) -> RedisConfig {
    RedisConfig::sentinel(master, [sentinel.url()])
        .key_prefix("push-sentinel-test")
        .history_len(64)
        .command_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .epoch_check_interval(Duration::from_millis(200))
}

fn hub_over(broker: RedisBroker) -> Hub<TestEvent> {
    let mut hub_config = HubConfig::default();
    hub_config.history_len = 64;
    Hub::with_broker(Arc::new(broker) as Arc<dyn Broker>, hub_config)
}

/// Publishes until the broker gets through (bounded), returning the cursor.
async fn publish_when_back(hub: &Hub<TestEvent>, n: usize) -> Cursor {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match hub.publish("room", note(n)).await {
            Ok(cursor) => return cursor,
            Err(error) => assert!(
                tokio::time::Instant::now() < deadline,
                "publishing did not resume after the failover: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `condition` holds, for at most `patience`.
async fn until<F: Future<Output = bool>>(
    what: &str,
    patience: Duration,
    mut condition: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + patience;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn role(redis: &OwnRedis) -> String {
    let mut conn = admin(&redis.url()).await;
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut conn)
        .await
        .expect("ROLE");
    match role.first() {
        Some(redis::Value::BulkString(role)) => String::from_utf8_lossy(role).into_owned(),
        other => panic!("unexpected ROLE reply: {other:?}"),
    }
}

async fn run_id(redis: &OwnRedis) -> String {
    let mut conn = admin(&redis.url()).await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .expect("INFO server");
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .expect("a run_id")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_follows_a_failover_and_subscribers_get_every_event_or_a_gap() {
    let test = "the_broker_follows_a_failover_and_subscribers_get_every_event_or_a_gap";
    let Some(primary) = OwnRedis::start(test).await else {
        return;
    };
    let Some(replica) = OwnRedis::start_replica_of(test, &primary).await else {
        return;
    };
    let sentinel = OwnSentinel::start("m", &primary, 1).await;
    let broker = RedisBroker::connect(config(&sentinel, "m"))
        .await
        .expect("connect through the sentinel");
    let hub = hub_over(broker);
    let mut subscription = hub.subscribe("room", Start::Now, None).await.unwrap();
    let mut published = Vec::new();
    for n in 1..=5 {
        published.push(hub.publish("room", note(n)).await.unwrap());
    }
    // The broker wrote to the primary the sentinel named.
    let mut on_primary = admin(&primary.url()).await;
    let len: u64 = redis::cmd("XLEN")
        .arg("push-sentinel-test:{/t/room}:events")
        .query_async(&mut on_primary)
        .await
        .unwrap();
    assert_eq!(len, 5);

    sentinel.failover().await;
    // In the window of a failover, wherever the broker writes.
    for n in 6..=7 {
        published.push(publish_when_back(&hub, n).await);
    }
    until("the sentinel names the replica", PATIENCE, || async {
        sentinel.primary_port().await == replica.port()
    })
    .await;
    // Sentinel demotes the old primary only some 8 s after the switch (its
    // fixed delay before reconfiguring a replica that still says it is a
    // primary), whatever the machine's load: more patience here. Until then
    // the broker may still write there: those events are lost with the
    // old primary's data, and the subscriber must see them followed by a gap.
    until("the old primary is a replica", 3 * PATIENCE, || async {
        role(&primary).await == "slave"
    })
    .await;
    for n in 8..=12 {
        published.push(publish_when_back(&hub, n).await);
    }

    // The promoted replica answers with another run_id: a new epoch.
    let last = *published.last().unwrap();
    assert_ne!(last.epoch(), published[0].epoch(), "no epoch change");
    let unique: HashSet<Cursor> = published.iter().copied().collect();
    assert_eq!(unique.len(), published.len(), "a cursor named two events");
    let mut on_new = admin(&replica.url()).await;
    let run: String = redis::cmd("HGET")
        .arg("push-sentinel-test:{/t/room}:meta")
        .arg("run")
        .query_async(&mut on_new)
        .await
        .unwrap();
    assert_eq!(run, run_id(&replica).await, "the new primary vouches");

    every_event_or_a_gap(&mut subscription, &published).await;
}

/// Reads `subscription` up to the last of `published`: every event was
/// published, follows the one before or a gap (never a hole), the first five
/// arrive as published, and the epoch change shows as a gap.
async fn every_event_or_a_gap(
    subscription: &mut push_runtime::history::Subscription,
    published: &[Cursor],
) {
    let last = *published.last().expect("events were published");
    let mut previous: Option<Cursor> = None;
    let mut gap_before = false;
    let mut gaps_into_new_epoch = 0;
    let mut seen = Vec::new();
    while previous != Some(last) {
        let mut items = Vec::new();
        tokio::time::timeout(PATIENCE, subscription.next_batch(&mut items, 64))
            .await
            .expect("deliveries in time");
        for item in items {
            match item {
                Delivery::Gap(gap) => {
                    gap_before = true;
                    if gap.to.epoch() == last.epoch() {
                        gaps_into_new_epoch += 1;
                    }
                }
                Delivery::Event(event) => {
                    let cursor = event.cursor();
                    assert!(published.contains(&cursor), "{cursor} was never published");
                    let follows = previous.is_some_and(|p| {
                        p.epoch() == cursor.epoch() && p.seq() + 1 == cursor.seq()
                    });
                    assert!(
                        follows || gap_before || previous.is_none(),
                        "a silent hole between {previous:?} and {cursor}"
                    );
                    seen.push(cursor);
                    previous = Some(cursor);
                    gap_before = false;
                }
            }
        }
    }
    assert_eq!(&seen[..5], &published[..5]);
    assert!(gaps_into_new_epoch >= 1, "the epoch change shows as a gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_follows_a_killed_primary_to_the_promoted_replica() {
    let test = "the_broker_follows_a_killed_primary_to_the_promoted_replica";
    let Some(mut primary) = OwnRedis::start(test).await else {
        return;
    };
    let Some(replica) = OwnRedis::start_replica_of(test, &primary).await else {
        return;
    };
    let sentinel = OwnSentinel::start("m", &primary, 1).await;
    let hub = hub_over(
        RedisBroker::connect(config(&sentinel, "m"))
            .await
            .expect("connect through the sentinel"),
    );
    let mut subscription = hub.subscribe("room", Start::Now, None).await.unwrap();
    let mut published = Vec::new();
    for n in 1..=5 {
        published.push(hub.publish("room", note(n)).await.unwrap());
    }
    // The replica has them before the primary dies (nothing lost here).
    let mut on_replica = admin(&replica.url()).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg("push-sentinel-test:{/t/room}:events")
            .query_async(&mut on_replica)
            .await
            .expect("XLEN on the replica");
        if len == 5 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the replica lags");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    primary.kill();
    // Refused (503) until Sentinel promotes the replica, then accepted.
    for n in 6..=10 {
        published.push(publish_when_back(&hub, n).await);
    }
    assert_eq!(sentinel.primary_port().await, replica.port());
    assert_eq!(role(&replica).await, "master");
    let last = *published.last().unwrap();
    assert_ne!(last.epoch(), published[0].epoch(), "no epoch change");
    let unique: HashSet<Cursor> = published.iter().copied().collect();
    assert_eq!(unique.len(), published.len(), "a cursor named two events");
    every_event_or_a_gap(&mut subscription, &published).await;
}

fn described(error: BrokerError) -> (BrokerErrorKind, String) {
    (error.kind(), error.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_master_name_unreachable_sentinels_or_a_replica_are_clear_errors() {
    let test = "a_wrong_master_name_unreachable_sentinels_or_a_replica_are_clear_errors";
    let Some(primary) = OwnRedis::start(test).await else {
        return;
    };
    let Some(replica) = OwnRedis::start_replica_of(test, &primary).await else {
        return;
    };
    let sentinel = OwnSentinel::start("m", &primary, 0).await;

    let error = RedisBroker::connect(config(&sentinel, "nope"))
        .await
        .expect_err("no master is named so");
    let message = error.to_string();
    assert!(
        message.contains(&sentinel.url()) && message.contains("knows no master named 'nope'"),
        "{message}"
    );
    assert_eq!(
        described(error.into()).0,
        BrokerErrorKind::Unavailable,
        "{message}"
    );

    let nowhere = [
        format!("redis://127.0.0.1:{}", free_port()),
        format!("redis://127.0.0.1:{}", free_port()),
    ];
    let error = RedisBroker::connect(RedisConfig::sentinel("m", nowhere.clone()))
        .await
        .expect_err("no sentinel listens");
    let message = error.to_string();
    for url in &nowhere {
        assert!(
            message.contains(&format!("{url}: unreachable")),
            "{message}"
        );
    }

    let none: [&str; 0] = [];
    let error = RedisBroker::connect(RedisConfig::sentinel("m", none))
        .await
        .expect_err("no sentinel given");
    assert!(
        error.to_string().contains("no sentinel address given"),
        "{error}"
    );

    // A sentinel that names a replica: ROLE says so, and the broker refuses it.
    let misled = OwnSentinel::start("r", &replica, 0).await;
    let error = RedisBroker::connect(config(&misled, "r"))
        .await
        .expect_err("a replica is not a primary");
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "127.0.0.1:{}, which is not a primary",
            replica.port()
        )),
        "{message}"
    );

    // The right name works.
    let hub = hub_over(
        RedisBroker::connect(config(&sentinel, "m"))
            .await
            .expect("the right name"),
    );
    hub.publish("room", note(1)).await.expect("publish");
}

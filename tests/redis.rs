//! Several nodes sharing one Redis: delivery everywhere, resume on any node,
//! lost data as a gap, and Redis outages.
//!
//! Needs a Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`); without
//! one these tests print why (`cargo test --test redis -- --nocapture` shows
//! it) and pass, except under CI (`CI` set), where they fail. The restart
//! test runs its own `redis-server` (from `PATH`).

mod support;

use push_runtime::broker::{Broker, BrokerErrorKind, RedisBroker, RedisConfig};
use push_runtime::history::Subscription;
use push_runtime::{
    ChannelRouter, Cursor, Delivery, Hub, HubConfig, IframeConfig, PollConfig, PublishError,
    SseConfig, Start, SubscribeError, WsConfig,
};
use std::sync::Arc;
use std::time::Duration;
use support::channel::{TestEvent, note};
use support::redis_setup::{OwnRedis, admin, delete_keys, shared_redis, unique_prefix};
use support::{Conn, Frame, Item, PATIENCE, Server, TRANSPORTS, Transport, open, refused};

/// One server process's worth: a hub over its own Redis broker, serving every transport.
struct Node {
    hub: Hub<TestEvent>,
    server: Server,
}

async fn node(url: &str, prefix: &str) -> Node {
    let config = RedisConfig::new(url)
        .key_prefix(prefix)
        .history_len(64)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .epoch_check_interval(Duration::from_millis(200));
    let broker = RedisBroker::connect(config)
        .await
        .expect("connect to redis");
    let mut hub_config = HubConfig::default();
    hub_config.history_len = 64;
    let hub = Hub::with_broker(Arc::new(broker), hub_config);
    // Quick heartbeats on every transport, so outage checks see them soon.
    let routes = ChannelRouter::new(hub.clone())
        .sse(SseConfig::default().heartbeat(Duration::from_millis(100)))
        .websocket(WsConfig::default().ping_interval(Duration::from_millis(200)))
        .iframe(IframeConfig::default().heartbeat(Duration::from_millis(100)))
        .poll(PollConfig::default().long_poll_timeout(Duration::from_millis(300)))
        .into_router();
    Node {
        server: Server::start(routes).await,
        hub,
    }
}

async fn nodes(url: &str, prefix: &str, n: usize) -> Vec<Node> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(node(url, prefix).await);
    }
    nodes
}

fn route(transport: Transport, topic: &str, query: &str) -> String {
    format!("/t/{topic}/{}?{query}", transport.route_name())
}

fn payload(frame: &Frame) -> String {
    frame.data["note"].as_str().unwrap_or_default().to_owned()
}

fn epoch(cursor: &str) -> &str {
    cursor.split_once('-').map_or(cursor, |(epoch, _)| epoch)
}

async fn publish(node: &Node, topic: &str, n: usize) -> String {
    node.hub
        .publish(topic, note(n))
        .await
        .expect("publish")
        .to_string()
}

/// Publishes until Redis accepts it again (bounded), returning the cursor.
async fn publish_when_back(node: &Node, topic: &str, n: usize) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match node.hub.publish(topic, note(n)).await {
            Ok(cursor) => return cursor.to_string(),
            Err(error) if tokio::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("redis did not come back: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_on_one_node_reaches_every_node() {
    let Some(url) = shared_redis("an_event_published_on_one_node_reaches_every_node").await else {
        return;
    };
    let prefix = unique_prefix();
    let nodes = nodes(&url, &prefix, 3).await;
    let mut conns = Vec::new();
    for node in &nodes {
        for transport in TRANSPORTS {
            let mut conn = open(&node.server, transport, &route(transport, "room", "")).await;
            let ready = conn.ready().await;
            conns.push((transport, ready, conn));
        }
    }
    let readies: Vec<&str> = conns.iter().map(|(_, r, _)| r.as_str()).collect();
    assert!(
        readies.iter().all(|r| *r == readies[0]),
        "every node agrees on the position: {readies:?}"
    );
    let mut cursors = Vec::new();
    for n in 0..30 {
        cursors.push(publish(&nodes[n % 2], "room", n).await);
    }
    for (transport, _, conn) in &mut conns {
        let frames = conn.frames(30).await;
        let got: Vec<&str> = frames.iter().map(|f| f.cursor.as_str()).collect();
        assert_eq!(got, cursors, "{transport:?}");
        assert_eq!(payload(&frames[29]), "n29");
    }
    // Nodes first: their readers would give the deleted topics a new epoch.
    drop(nodes);
    delete_keys(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_with_exactly_what_it_missed() {
    let Some(url) =
        shared_redis("a_client_resumes_on_another_node_with_exactly_what_it_missed").await
    else {
        return;
    };
    let prefix = unique_prefix();
    let nodes = nodes(&url, &prefix, 3).await;
    for transport in TRANSPORTS {
        let topic = format!("resume-{transport:?}");
        let mut first = open(&nodes[0].server, transport, &route(transport, &topic, "")).await;
        first.ready().await;
        let mut cursors = Vec::new();
        for n in 0..5 {
            cursors.push(publish(&nodes[0], &topic, n).await);
        }
        let seen = first.frames(3).await;
        drop(first);
        for n in 5..9 {
            cursors.push(publish(&nodes[1], &topic, n).await);
        }
        // Node 2 has never seen this topic; node 1 has only published on it.
        for target in [&nodes[2], &nodes[1]] {
            let query = format!("after={}", seen[2].cursor);
            let mut again =
                open(&target.server, transport, &route(transport, &topic, &query)).await;
            assert_eq!(again.ready().await, seen[2].cursor, "{transport:?}");
            let frames = again.frames(6).await;
            let got: Vec<&str> = frames.iter().map(|f| f.cursor.as_str()).collect();
            assert_eq!(got, cursors[3..], "{transport:?}");
            assert_eq!(payload(&frames[5]), "n8");
        }
    }
    // Nodes first: their readers would give the deleted topics a new epoch.
    drop(nodes);
    delete_keys(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_a_node_that_is_ahead_is_accepted() {
    let Some(url) = shared_redis("a_cursor_from_a_node_that_is_ahead_is_accepted").await else {
        return;
    };
    let prefix = unique_prefix();
    let nodes = nodes(&url, &prefix, 2).await;
    for transport in TRANSPORTS {
        let topic = format!("ahead-{transport:?}");
        // Node 1 mirrors the topic, so it serves from its mirror when it can.
        let mut watcher = open(&nodes[1].server, transport, &route(transport, &topic, "")).await;
        watcher.ready().await;
        for n in 0..20 {
            // The client learnt this cursor on node 0, and comes to node 1
            // before node 1's reader may have seen it.
            let cursor = publish(&nodes[0], &topic, n).await;
            let query = format!("after={cursor}");
            let mut conn = open(
                &nodes[1].server,
                transport,
                &route(transport, &topic, &query),
            )
            .await;
            assert_eq!(conn.ready().await, cursor, "{transport:?}");
            let next = publish(&nodes[0], &topic, 1000 + n).await;
            assert_eq!(conn.next_frame().await.cursor, next, "{transport:?}");
        }
        let seqs: Vec<u64> = watcher.frames(40).await.iter().map(Frame::seq).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "{transport:?}");
    }
    // Nodes first: their readers would give the deleted topics a new epoch.
    drop(nodes);
    delete_keys(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_the_topic_shows_as_a_gap_not_as_reused_cursors() {
    let test = "a_redis_that_lost_the_topic_shows_as_a_gap_not_as_reused_cursors";
    let Some(url) = shared_redis(test).await else {
        return;
    };
    let prefix = unique_prefix();
    let nodes = nodes(&url, &prefix, 2).await;
    let mut conns = Vec::new();
    for transport in TRANSPORTS {
        let mut conn = open(&nodes[1].server, transport, &route(transport, "lost", "")).await;
        conn.ready().await;
        conns.push(conn);
    }
    let mut old = Vec::new();
    for n in 0..3 {
        old.push(publish(&nodes[0], "lost", n).await);
    }
    for conn in &mut conns {
        assert_eq!(
            conn.frames(3).await.last().map(|f| f.cursor.clone()),
            old.last().cloned()
        );
    }
    delete_keys(&url, &prefix).await;
    let new = publish(&nodes[0], "lost", 3).await;
    assert_ne!(
        epoch(&new),
        epoch(&old[0]),
        "a lost history gets a new epoch"
    );
    assert!(new.ends_with("-1"), "{new}");
    for conn in &mut conns {
        expect_epoch_gap(conn, &old[2], &new).await;
    }
    // A client coming back with an old cursor gets the same gap, on any node.
    for node in &nodes {
        for transport in TRANSPORTS {
            let query = format!("after={}", old[1]);
            let mut conn = open(&node.server, transport, &route(transport, "lost", &query)).await;
            assert_eq!(conn.ready().await, old[1]);
            expect_epoch_gap(&mut conn, &old[1], &new).await;
        }
    }
    // Nodes first: their readers would give the deleted topics a new epoch.
    drop(nodes);
    delete_keys(&url, &prefix).await;
}

/// Expects `push.gap` from `from` to the start of `new`'s epoch, unknown size, then `new`.
async fn expect_epoch_gap(conn: &mut Conn, from: &str, new: &str) {
    let gap = conn.next_frame().await;
    assert_eq!(gap.event, "push.gap", "{gap:?}");
    assert_eq!(gap.data["from"], from);
    assert_eq!(gap.data["to"], format!("{}-0", epoch(new)));
    assert_eq!(gap.data["missed"], serde_json::Value::Null);
    assert_eq!(conn.next_frame().await.cursor, new);
}

async fn heartbeat(conn: &mut Conn) {
    loop {
        match conn.next_item().await {
            Some(Item::Heartbeat) => return,
            Some(Item::Frame(frame)) => panic!("no event expected during the outage: {frame:?}"),
            Some(Item::Retry(_)) => continue,
            other => panic!("connection must stay open during the outage: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stay_connected_through_redis_outages_and_see_every_event_or_a_gap() {
    let test = "clients_stay_connected_through_redis_outages_and_see_every_event_or_a_gap";
    let Some(mut redis) = OwnRedis::start(test).await else {
        return;
    };
    let url = redis.url();
    let nodes = nodes(&url, "push", 2).await;
    let mut conns = Vec::new();
    for transport in TRANSPORTS {
        let mut conn = open(&nodes[1].server, transport, &route(transport, "live", "")).await;
        conn.ready().await;
        conns.push(conn);
    }
    let mut cursors = vec![publish(&nodes[0], "live", 0).await];

    // Every connection to Redis drops, Redis keeps its data: node 0
    // publishes as soon as it can, node 1 catches up from the stream.
    let mut admin = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let _: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query_async(&mut admin)
        .await
        .expect("client kill");
    for n in 1..4 {
        cursors.push(publish_when_back(&nodes[0], "live", n).await);
    }
    for conn in &mut conns {
        let got: Vec<String> = conn.frames(4).await.into_iter().map(|f| f.cursor).collect();
        assert_eq!(
            got, cursors,
            "every event, no gap, after a dropped connection"
        );
    }

    // Redis goes away: publishing fails with a typed error, clients stay
    // connected and keep receiving heartbeats.
    redis.kill();
    match nodes[0].hub.publish("live", note(99)).await {
        Err(PublishError::Broker(error)) => {
            // Transient: the publish route answers 503 with Retry-After.
            assert_eq!(error.kind(), BrokerErrorKind::Unavailable, "{error}");
        }
        other => panic!("publishing without redis must fail as a broker error: {other:?}"),
    }
    for conn in &mut conns {
        heartbeat(conn).await;
    }
    for transport in TRANSPORTS {
        // A topic the node does not follow yet cannot be read without Redis.
        let (status, _) =
            refused(&nodes[1].server, transport, &route(transport, "other", "")).await;
        assert_eq!(status, 503, "{transport:?}");
        for conn in &mut conns {
            heartbeat(conn).await;
        }
    }

    // It comes back empty: the history is lost, clients are told so.
    redis.restart().await;
    let new = publish_when_back(&nodes[0], "live", 4).await;
    assert_ne!(epoch(&new), epoch(&cursors[0]));
    for conn in &mut conns {
        expect_epoch_gap(conn, &cursors[3], &new).await;
    }
    let next = publish(&nodes[1], "live", 5).await;
    for conn in &mut conns {
        assert_eq!(conn.next_frame().await.cursor, next);
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The milliseconds Redis will keep `key` (-1: for good, -2: gone).
async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .expect("pttl")
}

fn meta_key(prefix: &str, topic: &str) -> String {
    format!("{prefix}:{{/t/{topic}}}:meta")
}

/// A broker of its own (to look at its mirrors) and a hub over it.
async fn lone_node(config: RedisConfig) -> (Arc<RedisBroker>, Hub<TestEvent>) {
    let broker = Arc::new(RedisBroker::connect(config).await.expect("connect"));
    let mut hub_config = HubConfig::default();
    hub_config.history_len = 64;
    let hub = Hub::with_broker(Arc::clone(&broker) as Arc<dyn Broker>, hub_config);
    (broker, hub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_nobody_reads_is_dropped_and_a_topic_only_read_expires() {
    let test = "a_mirror_nobody_reads_is_dropped_and_a_topic_only_read_expires";
    let Some(url) = shared_redis(test).await else {
        return;
    };
    let prefix = unique_prefix();
    let config = RedisConfig::new(&url)
        .key_prefix(&prefix)
        .history_len(64)
        .epoch_check_interval(Duration::from_millis(50))
        .mirror_idle(Duration::from_millis(100))
        .unused_topic_ttl(Duration::from_millis(1000));
    let (broker, hub) = lone_node(config).await;
    let mut conn = admin(&url).await;

    let reader = hub.subscribe("ghost", Start::Now, None).await.unwrap();
    assert_eq!(broker.mirrored_topics(), 1);
    let ttl = pttl(&mut conn, &meta_key(&prefix, "ghost")).await;
    assert!(ttl > 0, "a topic only read expires: PTTL {ttl}");
    hub.publish("kept", note(1)).await.unwrap();
    assert_eq!(pttl(&mut conn, &meta_key(&prefix, "kept")).await, -1);

    // Read for longer than its expiry: the node keeps renewing it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(pttl(&mut conn, &meta_key(&prefix, "ghost")).await > 0);
    drop(reader);
    wait_until("the idle mirrors are dropped", || {
        broker.mirrored_topics() == 0
    })
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while pttl(&mut conn, &meta_key(&prefix, "ghost")).await != -2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the topic only read never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pttl(&mut conn, &meta_key(&prefix, "kept")).await, -1);
    drop((hub, broker));
    delete_keys(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_mirrors_at_most_max_topics() {
    let Some(url) = shared_redis("a_node_mirrors_at_most_max_topics").await else {
        return;
    };
    let prefix = unique_prefix();
    let config = RedisConfig::new(&url).key_prefix(&prefix).max_topics(2);
    let (broker, hub) = lone_node(config).await;
    let a = hub.subscribe("a", Start::Now, None).await.unwrap();
    let _b = hub.subscribe("b", Start::Now, None).await.unwrap();
    match hub.subscribe("c", Start::Now, None).await {
        Err(SubscribeError::Broker(error)) => {
            assert_eq!(error.kind(), BrokerErrorKind::Capacity, "{error}");
        }
        other => panic!("a third topic while two are read must be refused: {other:?}"),
    }
    let mut conn = admin(&url).await;
    assert_eq!(
        pttl(&mut conn, &meta_key(&prefix, "c")).await,
        -2,
        "a refusal creates nothing"
    );
    drop(a);
    // `a` is idle now: `c` takes its place.
    let _c = hub.subscribe("c", Start::Now, None).await.unwrap();
    assert_eq!(broker.mirrored_topics(), 2);
    drop((hub, broker));
    delete_keys(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_written_into_redis_by_others_are_validated() {
    let Some(url) = shared_redis("entries_written_into_redis_by_others_are_validated").await else {
        return;
    };
    let prefix = unique_prefix();
    let config = RedisConfig::new(&url)
        .key_prefix(&prefix)
        .epoch_check_interval(Duration::from_millis(100));
    let (broker, hub) = lone_node(config).await;
    let server = Server::start(ChannelRouter::new(hub.clone()).into_router()).await;
    let first = hub.publish("room", note(1)).await.unwrap();
    let mut conns = Vec::new();
    for transport in TRANSPORTS {
        let mut conn = open(
            &server,
            transport,
            &route(transport, "room", &format!("after={first}")),
        )
        .await;
        conn.ready().await;
        conns.push((transport, conn));
    }
    // Someone else with write access to Redis appends entries the way the
    // broker does: a name that would inject SSE lines, data that would end
    // the frame's script, a name the channel does not declare.
    let mut conn = admin(&url).await;
    let events = format!("{prefix}:{{/t/room}}:events");
    let epoch = first.epoch().to_string();
    for (name, data) in [
        ("note\nid: 1-1\ndata: {}", "{\"note\":\"x\"}"),
        ("note", "1)</script><script>alert(1)//"),
        ("joined", "{}"),
    ] {
        let seq: u64 = redis::cmd("HINCRBY")
            .arg(meta_key(&prefix, "room"))
            .arg("seq")
            .arg(1)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg(&events)
            .arg(format!("{seq}-1"))
            .arg(&["e", &epoch, "n", name, "k", "1", "d", data])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let last = hub.publish("room", note(5)).await.unwrap();
    for (transport, conn) in &mut conns {
        // Gaps (one per read, or merged) that cover exactly the three
        // entries, then the next event: nothing injected, nothing lost.
        let mut at = first.to_string();
        let mut missed = 0;
        let event = loop {
            let frame = conn.next_frame().await;
            if frame.event != "push.gap" {
                break frame;
            }
            assert_eq!(frame.data["from"], at.as_str(), "{transport:?}: {frame:?}");
            at = frame.data["to"].as_str().unwrap().to_owned();
            missed += frame.data["missed"].as_u64().unwrap();
        };
        assert_eq!((at, missed), (format!("{epoch}-4"), 3), "{transport:?}");
        assert_eq!(event.cursor, last.to_string(), "{transport:?}");
        assert_eq!(payload(&event), "n5");
    }
    assert_eq!(broker.invalid_entries(), 3);
    drop((hub, broker, server));
    delete_keys(&url, &prefix).await;
}

/// Makes Redis go back in time for `topic`, as a restart from a snapshot
/// taken at `seq` (or the promotion of a replica that lagged there) would:
/// the topic's sequence number and stream are those of that moment, in the
/// same epoch.
async fn rewind(url: &str, prefix: &str, topic: &str, seq: u64) {
    let mut conn = admin(url).await;
    let events = format!("{prefix}:{{/t/{topic}}}:events");
    let newer: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&events)
        .arg(format!("{}-0", seq + 1))
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("xrange");
    for (id, _) in newer {
        let _: u64 = redis::cmd("XDEL")
            .arg(&events)
            .arg(id)
            .query_async(&mut conn)
            .await
            .expect("xdel");
    }
    let _: u64 = redis::cmd("HSET")
        .arg(meta_key(prefix, topic))
        .arg("seq")
        .arg(seq)
        .query_async(&mut conn)
        .await
        .expect("hset");
}

async fn next_items(subscription: &mut Subscription, n: usize) -> Vec<Delivery> {
    let mut items = Vec::new();
    while items.len() < n {
        let room = n - items.len();
        tokio::time::timeout(PATIENCE, subscription.next_batch(&mut items, room))
            .await
            .expect("items in time");
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_went_back_in_time_never_hands_out_a_cursor_twice() {
    let test = "a_redis_that_went_back_in_time_never_hands_out_a_cursor_twice";
    let Some(url) = shared_redis(test).await else {
        return;
    };
    let prefix = unique_prefix();
    let config = |check: u64| {
        RedisConfig::new(&url)
            .key_prefix(&prefix)
            .epoch_check_interval(Duration::from_millis(check))
    };
    // `slow` would notice only in a minute: its own publish must.
    let (_a, fast) = lone_node(config(100)).await;
    let (_b, slow) = lone_node(config(60_000)).await;
    let mut on_fast = fast.subscribe("room", Start::Now, None).await.unwrap();
    let mut on_slow = slow.subscribe("room", Start::Now, None).await.unwrap();
    let mut cursors = Vec::new();
    for n in 1..=5 {
        cursors.push(fast.publish("room", note(n)).await.unwrap());
    }
    for subscription in [&mut on_fast, &mut on_slow] {
        let got: Vec<Cursor> = next_items(subscription, 5)
            .await
            .iter()
            .map(Delivery::cursor)
            .collect();
        assert_eq!(got, cursors);
    }
    rewind(&url, &prefix, "room", 2).await;

    // The node that knows the topic reached 5 publishes: a new epoch, not
    // the 3 that named another event.
    let after = slow.publish("room", note(6)).await.unwrap();
    assert_ne!(
        after.epoch(),
        cursors[0].epoch(),
        "{after} reuses the old epoch"
    );
    assert_eq!(after.seq(), 1);
    for subscription in [&mut on_fast, &mut on_slow] {
        let items = next_items(subscription, 2).await;
        match &items[..] {
            [Delivery::Gap(gap), Delivery::Event(event)] => {
                assert_eq!((gap.from, gap.missed), (cursors[4], None));
                assert_eq!(gap.to.epoch(), after.epoch());
                assert_eq!(event.cursor(), after);
            }
            other => panic!("expected a gap, then the new event: {other:?}"),
        }
    }

    // Without a publish, the epoch check of a node that mirrors it notices.
    let before = fast.publish("room", note(7)).await.unwrap();
    next_items(&mut on_fast, 1).await;
    rewind(&url, &prefix, "room", 1).await;
    let items = next_items(&mut on_fast, 1).await;
    match &items[..] {
        [Delivery::Gap(gap)] => {
            assert_eq!((gap.from, gap.missed), (before, None));
            assert_ne!(gap.to.epoch(), before.epoch());
        }
        other => panic!("expected a gap into a new epoch: {other:?}"),
    }
    let (_c, fresh) = lone_node(config(60_000)).await;
    let later = fresh.publish("room", note(8)).await.unwrap();
    assert_ne!(later.epoch(), before.epoch(), "a node that never read it");
    drop((on_fast, on_slow, fast, slow, fresh));
    delete_keys(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_from_an_older_snapshot_never_hands_out_a_cursor_twice() {
    let test = "a_redis_restarted_from_an_older_snapshot_never_hands_out_a_cursor_twice";
    let Some(mut redis) = OwnRedis::start_persistent(test).await else {
        return;
    };
    let url = redis.url();
    let config = || {
        RedisConfig::new(&url)
            .epoch_check_interval(Duration::from_millis(100))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
    };
    let (_a, node) = lone_node(config()).await;
    let mut reader = node.subscribe("room", Start::Now, None).await.unwrap();
    let mut cursors = Vec::new();
    for n in 1..=2 {
        cursors.push(node.publish("room", note(n)).await.unwrap());
    }
    let mut conn = admin(&url).await;
    let _: String = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("save");
    for n in 3..=5 {
        cursors.push(node.publish("room", note(n)).await.unwrap());
    }
    let got: Vec<Cursor> = next_items(&mut reader, 5)
        .await
        .iter()
        .map(Delivery::cursor)
        .collect();
    assert_eq!(got, cursors);
    // A crash: Redis comes back with the snapshot taken at 2, same epoch.
    redis.kill();
    redis.restart().await;

    // A node that never read the topic has nothing to compare with: Redis
    // itself must not hand out 3 again.
    let (_c, fresh) = lone_node(config()).await;
    let after = publish_when_back_to(&fresh, "room", 6).await;
    assert_ne!(
        after.epoch(),
        cursors[0].epoch(),
        "{after} reuses the old epoch"
    );
    let items = next_items(&mut reader, 2).await;
    match &items[..] {
        [Delivery::Gap(gap), Delivery::Event(event)] => {
            assert_eq!((gap.from, gap.missed), (cursors[4], None));
            assert_eq!(gap.to.epoch(), after.epoch());
            assert_eq!(event.cursor(), after);
        }
        other => panic!("expected a gap, then the new event: {other:?}"),
    }
    // A client holding a cursor from before (ahead of what Redis came back
    // with) is not refused: it gets the same gap on any node.
    let mut late = fresh
        .subscribe("room", Start::After(cursors[4]), None)
        .await
        .expect("a cursor from before the restart is resolved");
    let items = next_items(&mut late, 2).await;
    assert!(
        matches!(&items[..], [Delivery::Gap(gap), Delivery::Event(event)]
            if gap.from == cursors[4] && gap.missed.is_none() && event.cursor() == after),
        "{items:?}"
    );
}

/// A node reads the `run_id` of Redis once per connection (not in every
/// publish): a node that published before a crash, on a topic it does not
/// mirror (nothing of its own to compare with), must not hand out a cursor
/// again after Redis comes back from an older snapshot. And a connection
/// that drops while Redis stays up changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_published_before_a_restart_vouches_with_the_new_redis_process() {
    let test = "a_node_that_published_before_a_restart_vouches_with_the_new_redis_process";
    let Some(mut redis) = OwnRedis::start_persistent(test).await else {
        return;
    };
    let url = redis.url();
    let config = RedisConfig::new(&url)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100));
    let (broker, node) = lone_node(config).await;
    let first = node.publish("solo", note(1)).await.unwrap();
    let mut conn = admin(&url).await;
    let _: String = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("save");
    // Every connection drops, Redis stays up: same epoch, next cursor.
    let _: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query_async(&mut conn)
        .await
        .expect("client kill");
    let second = publish_when_back_to(&node, "solo", 2).await;
    assert_eq!(
        (second.epoch(), second.seq()),
        (first.epoch(), 2),
        "a dropped connection is not a new Redis process"
    );
    // A crash: Redis comes back with the snapshot taken at 1.
    redis.kill();
    redis.restart().await;
    let after = publish_when_back_to(&node, "solo", 3).await;
    assert_ne!(
        after.epoch(),
        first.epoch(),
        "{after} reuses the epoch of {second}, which Redis lost"
    );
    assert_eq!(after.seq(), 1);
    assert_eq!(broker.mirrored_topics(), 0, "the topic was never mirrored");
}

/// Publishes until Redis takes it (bounded), returning the cursor.
async fn publish_when_back_to(hub: &Hub<TestEvent>, topic: &str, n: usize) -> Cursor {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match hub.publish(topic, note(n)).await {
            Ok(cursor) => return cursor,
            Err(error) if tokio::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("redis did not come back: {error}"),
        }
    }
}

/// What a subscription yields, as `seq` for events and `gap to missed` for gaps.
fn described(items: &[Delivery]) -> Vec<String> {
    items
        .iter()
        .map(|item| match item {
            Delivery::Event(event) => event.cursor().seq().to_string(),
            Delivery::Gap(gap) => format!("gap {} {:?}", gap.to.seq(), gap.missed),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_its_mirrors_within_their_byte_budget() {
    let test = "a_node_holds_its_mirrors_within_their_byte_budget";
    let Some(url) = shared_redis(test).await else {
        return;
    };
    let prefix = unique_prefix();
    let event = |n: usize| TestEvent::Note(format!("{n:04}{}", "x".repeat(1000)));
    let size = serde_json::to_vec(&event(0)).unwrap().len();
    let config = RedisConfig::new(&url)
        .key_prefix(&prefix)
        .history_len(64)
        .max_history_bytes(3 * size + size / 2)
        .max_total_history_bytes(5 * size + size / 2);
    let (broker, hub) = lone_node(config).await;
    let mut a = hub.subscribe("a", Start::Now, None).await.unwrap();
    let mut b = hub.subscribe("b", Start::Now, None).await.unwrap();
    let mut c = hub.subscribe("c", Start::Now, None).await.unwrap();
    for n in 1..=10 {
        hub.publish("a", event(n)).await.unwrap();
        assert!(broker.history_bytes() <= 3 * size + size / 2);
    }
    // The topic's own budget: three events, a gap before them.
    let items = next_items(&mut a, 4).await;
    assert_eq!(described(&items), ["gap 7 Some(7)", "8", "9", "10"]);
    // The total: `b` makes room by dropping its own oldest event.
    for n in 1..=3 {
        hub.publish("b", event(n)).await.unwrap();
        assert!(broker.history_bytes() <= 5 * size + size / 2);
    }
    let items = next_items(&mut b, 3).await;
    assert_eq!(described(&items), ["gap 1 Some(1)", "2", "3"]);
    // `c` cannot: Redis has its event, this node's readers get a gap of one.
    hub.publish("c", event(1)).await.unwrap();
    let items = next_items(&mut c, 1).await;
    assert_eq!(described(&items), ["gap 1 Some(1)"]);
    assert_eq!(broker.history_bytes(), 5 * size);
    drop((a, b, c, hub, broker));
    delete_keys(&url, &prefix).await;
}

/// A paced hub over Redis (`HubConfig::backpressure`, `ahead` 0) waits for
/// the node's subscribers through its mirror: with a subscriber that is up to
/// date but does not read, a publish completes only after `max_wait` (it
/// cannot end sooner, whatever the load); the next one does not wait for it
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_publish_over_redis_waits_for_the_nodes_subscriber() {
    const MAX_WAIT: Duration = Duration::from_secs(2);
    let test = "a_paced_publish_over_redis_waits_for_the_nodes_subscriber";
    let Some(url) = shared_redis(test).await else {
        return;
    };
    let prefix = unique_prefix();
    let broker = RedisBroker::connect(RedisConfig::new(&url).key_prefix(&prefix))
        .await
        .expect("connect");
    let mut config = HubConfig::default();
    config.backpressure = Some(
        push_runtime::Backpressure::new()
            .ahead(0)
            .max_wait(MAX_WAIT),
    );
    let hub: Hub<TestEvent> = Hub::with_broker(Arc::new(broker) as Arc<dyn Broker>, config);
    // Up to date, counted as waiting, never reads.
    let stalled = hub.subscribe("paced", Start::Now, None).await.unwrap();
    let started = tokio::time::Instant::now();
    hub.publish("paced", note(1)).await.expect("publish");
    assert!(
        started.elapsed() >= MAX_WAIT,
        "the publish did not wait for the node's subscriber"
    );
    // Not waited for again.
    let started = tokio::time::Instant::now();
    hub.publish("paced", note(2)).await.expect("publish");
    assert!(
        started.elapsed() < MAX_WAIT,
        "waited again for a stalled subscriber"
    );
    drop(stalled);
    delete_keys(&url, &prefix).await;
}

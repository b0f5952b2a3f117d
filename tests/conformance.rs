//! The conformance suite: every check here runs against every transport (SSE,
//! WebSocket, short poll, long poll, forever frame) alike: delivery, order,
//! resume, gaps, filters, heartbeats, bad input and concurrency. Checks of
//! one transport's own features follow at the end.

mod support;

use push_runtime::{ChannelRouter, Hub, HubConfig, IframeConfig, SseConfig, WsConfig};
use std::time::Duration;
use support::channel::{TestEvent, TestEventKind, note, one_of_each};
use support::{Frame, Item, Server, TRANSPORTS, Transport, open, open_with, refused};
use tokio_tungstenite::tungstenite::Message;

fn hub(history_len: usize) -> Hub<TestEvent> {
    let mut config = HubConfig::default();
    config.history_len = history_len;
    Hub::with_config(config)
}

async fn serve(hub: &Hub<TestEvent>) -> Server {
    Server::start(ChannelRouter::new(hub.clone()).into_router()).await
}

fn route(transport: Transport, topic: &str, query: &str) -> String {
    let name = transport.route_name();
    if query.is_empty() {
        format!("/t/{topic}/{name}")
    } else {
        format!("/t/{topic}/{name}?{query}")
    }
}

fn decode(frame: &Frame) -> TestEvent {
    serde_json::from_value(frame.data.clone()).expect("payload deserializes into the enum")
}

async fn publish_all(
    hub: &Hub<TestEvent>,
    topic: &str,
    events: impl IntoIterator<Item = TestEvent>,
) -> Vec<String> {
    let mut cursors = Vec::new();
    for event in events {
        cursors.push(
            hub.publish(topic, event)
                .await
                .expect("publish")
                .to_string(),
        );
    }
    cursors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_variant_with_its_wire_name_in_order() {
    let hub = hub(1024);
    let server = serve(&hub).await;
    for transport in TRANSPORTS {
        let topic = format!("shapes-{transport:?}");
        let mut conn = open(&server, transport, &route(transport, &topic, "")).await;
        let ready = conn.ready().await;
        assert!(
            ready.ends_with("-0"),
            "a new topic starts at seq 0: {ready}"
        );
        let events: Vec<TestEvent> = one_of_each()
            .into_iter()
            .chain((0..200).map(note))
            .collect();
        let cursors = publish_all(&hub, &topic, events.clone()).await;
        let frames = conn.frames(events.len()).await;
        let names: Vec<&str> = frames.iter().take(5).map(|f| f.event.as_str()).collect();
        assert_eq!(
            names,
            ["ping", "note", "pair", "moved", "custom.name"],
            "{transport:?}"
        );
        assert_eq!(
            frames.iter().map(decode).collect::<Vec<_>>(),
            events,
            "{transport:?}"
        );
        assert_eq!(
            frames.iter().map(|f| f.cursor.clone()).collect::<Vec<_>>(),
            cursors,
            "{transport:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_a_dropped_connection_without_loss_or_duplicates() {
    let hub = hub(1024);
    let server = serve(&hub).await;
    for transport in TRANSPORTS {
        let topic = format!("resume-{transport:?}");
        let mut conn = open(&server, transport, &route(transport, &topic, "")).await;
        conn.ready().await;
        publish_all(&hub, &topic, (0..10).map(note)).await;
        let first = conn.frames(4).await;
        drop(conn);
        // Published while nobody is connected.
        publish_all(&hub, &topic, (10..20).map(note)).await;
        let last = &first[3].cursor;
        let mut again = open(
            &server,
            transport,
            &route(transport, &topic, &format!("after={last}")),
        )
        .await;
        assert_eq!(&again.ready().await, last);
        let rest = again.frames(16).await;
        let seen: Vec<TestEvent> = first.iter().chain(&rest).map(decode).collect();
        assert_eq!(seen, (0..20).map(note).collect::<Vec<_>>(), "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_cursor_alone_is_enough_to_resume() {
    let hub = hub(1024);
    let server = serve(&hub).await;
    publish_all(&hub, "quiet", (0..3).map(note)).await;
    for transport in TRANSPORTS {
        let mut conn = open(&server, transport, &route(transport, "quiet", "")).await;
        let ready = conn.ready().await;
        drop(conn);
        let cursors = publish_all(&hub, "quiet", (0..2).map(note)).await;
        let mut again = open(
            &server,
            transport,
            &route(transport, "quiet", &format!("after={ready}")),
        )
        .await;
        again.ready().await;
        let frames = again.frames(2).await;
        assert_eq!(
            frames.iter().map(|f| f.cursor.clone()).collect::<Vec<_>>(),
            cursors,
            "{transport:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_last_event_id_wins_over_a_stale_after() {
    let hub = hub(1024);
    let server = serve(&hub).await;
    let cursors = publish_all(&hub, "lei", (0..5).map(note)).await;
    let path = route(Transport::Sse, "lei", &format!("after={}", cursors[0]));
    let mut conn = open_with(&server, Transport::Sse, &path, Some(&cursors[3])).await;
    assert_eq!(conn.ready().await, cursors[3]);
    assert_eq!(conn.next_frame().await.cursor, cursors[4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_history_gets_a_gap_then_the_rest() {
    let hub = hub(4);
    let server = serve(&hub).await;
    let cursors = publish_all(&hub, "short", (0..10).map(note)).await;
    for transport in TRANSPORTS {
        let mut conn = open(
            &server,
            transport,
            &route(transport, "short", &format!("after={}", cursors[0])),
        )
        .await;
        // Until the gap is delivered, the client's position is still its own cursor.
        assert_eq!(conn.ready().await, cursors[0]);
        let gap = conn.next_frame().await;
        assert_eq!(gap.event, "push.gap", "{transport:?}");
        assert_eq!(gap.cursor, cursors[5]);
        assert_eq!(
            gap.data,
            serde_json::json!({"from": cursors[0], "to": cursors[5], "missed": 5})
        );
        let rest = conn.frames(4).await;
        assert_eq!(
            rest.iter().map(decode).collect::<Vec<_>>(),
            (6..10).map(note).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_another_epoch_gets_a_gap_with_unknown_count() {
    let hub = hub(16);
    let server = serve(&hub).await;
    let cursors = publish_all(&hub, "epochs", (0..3).map(note)).await;
    let epoch: u64 = cursors[0].split_once('-').unwrap().0.parse().unwrap();
    let stale = format!("{}-2", epoch ^ 1);
    for transport in TRANSPORTS {
        let mut conn = open(
            &server,
            transport,
            &route(transport, "epochs", &format!("after={stale}")),
        )
        .await;
        assert_eq!(conn.ready().await, stale);
        let gap = conn.next_frame().await;
        assert_eq!(gap.event, "push.gap");
        assert_eq!(
            gap.data,
            serde_json::json!({"from": stale, "to": format!("{epoch}-0"), "missed": null})
        );
        let rest = conn.frames(3).await;
        assert_eq!(
            rest.iter().map(|f| f.cursor.clone()).collect::<Vec<_>>(),
            cursors
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_deliver_only_the_named_events() {
    let hub = hub(1024);
    let server = serve(&hub).await;
    for transport in TRANSPORTS {
        let topic = format!("filter-{transport:?}");
        let mut conn = open(
            &server,
            transport,
            &route(transport, &topic, "events=pair,custom.name"),
        )
        .await;
        conn.ready().await;
        publish_all(&hub, &topic, one_of_each().into_iter().chain(one_of_each())).await;
        let frames = conn.frames(4).await;
        let names: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
        assert_eq!(
            names,
            ["pair", "custom.name", "pair", "custom.name"],
            "{transport:?}"
        );
    }
    // The typed hub API filters the same way.
    let mut sub = hub
        .subscribe(
            "typed",
            push_runtime::Start::Now,
            Some(&[TestEventKind::Moved]),
        )
        .await
        .expect("subscribe");
    publish_all(&hub, "typed", one_of_each()).await;
    let mut batch = Vec::new();
    sub.fill(&mut batch, 10);
    assert!(matches!(&batch[..], [push_runtime::Delivery::Event(e)] if e.name() == "moved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_flow_while_idle() {
    let hub = hub(16);
    let app = ChannelRouter::new(hub.clone())
        .sse(
            SseConfig::default()
                .heartbeat(Duration::from_millis(50))
                .retry(Duration::from_millis(1234)),
        )
        .websocket(WsConfig::default().ping_interval(Duration::from_millis(50)))
        .iframe(IframeConfig::default().heartbeat(Duration::from_millis(50)))
        .into_router();
    let server = Server::start(app).await;
    for transport in TRANSPORTS {
        // A poll's heartbeat is an empty answer: `304`, or a long poll that timed out.
        let mut conn = open(&server, transport, &route(transport, "idle", "timeout=1")).await;
        if transport == Transport::Sse {
            assert_eq!(conn.next_item().await, Some(Item::Retry(1234)));
        }
        conn.ready().await;
        assert_eq!(
            conn.next_item().await,
            Some(Item::Heartbeat),
            "{transport:?}"
        );
        assert_eq!(
            conn.next_item().await,
            Some(Item::Heartbeat),
            "{transport:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_response_headers() {
    let hub = hub(16);
    let server = serve(&hub).await;
    let response = reqwest::get(server.url("/t/h/sse")).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_with_a_message_that_says_what_is_wrong() {
    let hub = hub(16);
    let server = serve(&hub).await;
    let newest = hub.publish("known", note(0)).await.unwrap();
    let ahead = format!("{}-{}", newest.epoch(), newest.seq() + 5);
    let long_topic = "a".repeat(129);
    let cases: Vec<(String, &str, &str)> = vec![
        ("bad%20topic".into(), "", "invalid topic: character ' '"),
        ("-dash".into(), "", "invalid topic"),
        (long_topic, "", "129 bytes long, the limit is 128"),
        ("known".into(), "after=12", "invalid cursor `12`"),
        ("known".into(), "after=", "invalid cursor ``"),
        ("known".into(), "after=1-x", "invalid cursor `1-x`"),
        (
            "known".into(),
            "after=1-2&after=1-3",
            "`after` is given more than once",
        ),
        (
            "known".into(),
            &*Box::leak(format!("after={ahead}").into_boxed_str()),
            "is ahead of the newest event",
        ),
        (
            "known".into(),
            "events=nope",
            "unknown event name `nope` in `events`; valid names: ping, note, pair, moved, custom.name",
        ),
        ("known".into(), "events=ping,", "unknown event name ``"),
    ];
    for transport in TRANSPORTS {
        for (topic, query, expected) in &cases {
            let (status, body) = refused(&server, transport, &route(transport, topic, query)).await;
            assert_eq!(status, 400, "{transport:?} {topic} {query}: {body}");
            assert!(
                body.contains(expected),
                "{transport:?} {topic} {query}: {body:?} lacks {expected:?}"
            );
        }
    }
    let (status, body) = refused(&server, Transport::Sse, "/t/known/ws").await;
    assert!(
        matches!(status, 400 | 426),
        "plain GET on the ws route: {status} {body}"
    );
    let (status, _) = refused(&server, Transport::Sse, "/t/known/nope").await;
    assert_eq!(status, 404);
    let response = reqwest::Client::new()
        .post(server.url("/t/known"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(
        matches!(response.status().as_u16(), 404 | 405),
        "publishing is off unless enabled"
    );
    let (status, body) = refused(
        &server,
        Transport::Sse,
        "/t/known/sse?events=ping&after=1-1&unknown=1&after=2-2",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // An invalid Last-Event-ID is refused as well.
    let response = reqwest::Client::new()
        .get(server.url("/t/known/sse"))
        .header("last-event-id", "zzz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("in `Last-Event-ID`")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_sending_garbage_is_closed_and_nobody_else_is_affected() {
    let hub = hub(64);
    let server = serve(&hub).await;
    let mut bystander = open(&server, Transport::WebSocket, "/t/g/ws").await;
    bystander.ready().await;
    let mut rude = open(&server, Transport::WebSocket, "/t/g/ws").await;
    rude.ready().await;
    rude.send_ws(Message::Text("subscribe me to everything".into()))
        .await;
    assert!(matches!(
        rude.next_item().await,
        Some(Item::Closed(1008, _))
    ));

    let mut huge = open(&server, Transport::WebSocket, "/t/g/ws").await;
    huge.ready().await;
    huge.send_ws(Message::Binary(vec![0u8; 64 * 1024].into()))
        .await;
    match huge.next_item().await {
        Some(Item::Closed(code, _)) => assert!(code == 1009 || code == 1008, "close code {code}"),
        None => {} // the server may drop the connection while the client is still writing
        other => panic!("expected a close, got {other:?}"),
    }

    hub.publish("g", note(1)).await.unwrap();
    assert_eq!(decode(&bystander.next_frame().await), note(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_each_get_everything_while_others_reconnect() {
    let hub = hub(4096);
    let server = serve(&hub).await;
    let mut subscribers = Vec::new();
    for i in 0..100 {
        let transport = TRANSPORTS[i % TRANSPORTS.len()];
        let mut conn = open(&server, transport, &route(transport, "crowd", "")).await;
        conn.ready().await;
        subscribers.push(conn);
    }
    let total = 300;
    // The resuming client starts from where the topic stands before publishing.
    let mut probe = open(&server, Transport::Sse, &route(Transport::Sse, "crowd", "")).await;
    let mut position = Some(probe.ready().await);
    drop(probe);
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move { publish_all(&hub, "crowd", (0..total).map(note)).await })
    };
    // Meanwhile a client keeps dropping and resuming.
    let mut seen = Vec::new();
    let mut round = 0;
    while seen.len() < total {
        let transport = TRANSPORTS[round % TRANSPORTS.len()];
        round += 1;
        let query = position
            .as_ref()
            .map(|p| format!("after={p}"))
            .unwrap_or_default();
        let mut conn = open(&server, transport, &route(transport, "crowd", &query)).await;
        assert_eq!(Some(conn.ready().await), position);
        for frame in conn.frames(7.min(total - seen.len())).await {
            position = Some(frame.cursor.clone());
            seen.push(decode(&frame));
        }
    }
    assert_eq!(seen, (0..total).map(note).collect::<Vec<_>>());
    publisher.await.unwrap();
    for (i, mut conn) in subscribers.into_iter().enumerate() {
        let frames = conn.frames(total).await;
        assert_eq!(
            frames.iter().map(decode).collect::<Vec<_>>(),
            (0..total).map(note).collect::<Vec<_>>(),
            "subscriber {i}"
        );
    }
}

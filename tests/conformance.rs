//! The conformance suite: every check here runs against every transport (SSE,
//! WebSocket, short poll, long poll, forever frame) alike: delivery, order,
//! resume, gaps, filters, heartbeats, bad input and concurrency. Checks of
//! one transport's own features follow at the end.

mod support;

use futures_util::StreamExt;
use push_runtime::broker::{MemoryBroker, TopicKey};
use push_runtime::{
    AuthRequest, ChannelRouter, Hub, HubConfig, IframeConfig, PollConfig, Principal, Refusal,
    SseConfig, Topic, WsConfig,
};
use std::sync::Arc;
use std::time::Duration;
use support::channel::{TestEvent, TestEventKind, note, one_of_each};
use support::{Frame, Item, PATIENCE, Server, TRANSPORTS, Transport, open, open_with, refused};
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

/// A channel whose payload JSON is written verbatim, raw line breaks and all.
#[push_runtime::push_channel(path = "/raw")]
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum RawEvent {
    Raw(Box<serde_json::value::RawValue>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_a_payload_with_raw_line_breaks_intact() {
    let hub = Hub::<RawEvent>::new();
    let server = Server::start(ChannelRouter::new(hub.clone()).into_router()).await;
    // LF, CRLF, a lone CR and an empty line, each where JSON allows whitespace.
    let text = "{\n  \"a\": [1,\r\n2],\r\"b\": \"x\"\n\n}";
    let raw = serde_json::value::RawValue::from_string(text.to_owned()).expect("valid JSON");
    let expected = serde_json::json!({"Raw": {"a": [1, 2], "b": "x"}});
    for transport in TRANSPORTS {
        let topic = format!("raw-{transport:?}");
        let name = transport.route_name();
        let mut conn = open(&server, transport, &format!("/raw/{topic}/{name}")).await;
        conn.ready().await;
        let mut cursors = Vec::new();
        for _ in 0..2 {
            let cursor = hub.publish(&topic, RawEvent::Raw(raw.clone())).await;
            cursors.push(cursor.expect("publish").to_string());
        }
        let frames = conn.frames(2).await;
        for (frame, cursor) in frames.iter().zip(&cursors) {
            assert_eq!(
                (&frame.cursor, frame.event.as_str(), &frame.data),
                (cursor, "Raw", &expected),
                "{transport:?}"
            );
        }
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

/// An event of about `size` bytes of JSON, numbered `n` (all the same size).
fn big(n: usize, size: usize) -> TestEvent {
    TestEvent::Note(format!("{n:04}{}", "x".repeat(size - 16)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_bounded_in_bytes_gives_a_gap_and_delivers_every_event_intact() {
    const SIZE: usize = 8 * 1024;
    let size = serde_json::to_vec(&big(0, SIZE)).unwrap().len();
    let mut config = HubConfig::default();
    config.history_len = 1024;
    // Room for four payloads; never for a framed copy next to them.
    config.max_history_bytes = 4 * size + size / 2;
    let hub = Hub::<TestEvent>::with_config(config);
    let server = serve(&hub).await;
    let cursors = publish_all(&hub, "big", (0..10).map(|n| big(n, SIZE))).await;
    for transport in TRANSPORTS {
        let mut conn = open(
            &server,
            transport,
            &route(transport, "big", &format!("after={}", cursors[0])),
        )
        .await;
        assert_eq!(conn.ready().await, cursors[0]);
        let gap = conn.next_frame().await;
        assert_eq!(gap.event, "push.gap", "{transport:?}");
        assert_eq!(
            gap.data,
            serde_json::json!({"from": cursors[0], "to": cursors[5], "missed": 5})
        );
        let rest = conn.frames(4).await;
        assert_eq!(
            rest.iter().map(decode).collect::<Vec<_>>(),
            (6..10).map(|n| big(n, SIZE)).collect::<Vec<_>>(),
            "{transport:?}"
        );
    }
    // Live subscribers of every transport get each new event intact, its
    // frames built for each delivery (no room to keep them); three, so
    // that none is trimmed before they read it.
    let mut conns = Vec::new();
    for transport in TRANSPORTS {
        let mut conn = open(&server, transport, &route(transport, "big", "")).await;
        conn.ready().await;
        conns.push((transport, conn));
    }
    publish_all(&hub, "big", (10..13).map(|n| big(n, SIZE))).await;
    for (transport, conn) in &mut conns {
        let frames = conn.frames(3).await;
        assert_eq!(
            frames.iter().map(decode).collect::<Vec<_>>(),
            (10..13).map(|n| big(n, SIZE)).collect::<Vec<_>>(),
            "{transport:?}"
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
async fn timers_configured_to_never_fire_are_accepted() {
    let hub = hub(16);
    let app = ChannelRouter::new(hub.clone())
        .sse(SseConfig::default().heartbeat(Duration::MAX))
        .websocket(WsConfig::default().ping_interval(Duration::MAX))
        .iframe(
            IframeConfig::default()
                .heartbeat(Duration::MAX)
                .max_duration(Duration::MAX),
        )
        .into_router();
    let server = Server::start(app).await;
    for transport in TRANSPORTS {
        let mut conn = open(&server, transport, &route(transport, "never", "timeout=5")).await;
        conn.ready().await;
        hub.publish("never", note(1)).await.unwrap();
        let frame = conn.next_frame().await;
        assert_eq!(decode(&frame), note(1), "{transport:?}");
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
    // A plain GET (or one whose upgrade headers a proxy stripped) is told to upgrade.
    let response = reqwest::get(server.url("/t/known/ws")).await.unwrap();
    assert_eq!(response.status(), 426);
    assert_eq!(response.headers()["upgrade"], "websocket");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("send a WebSocket upgrade request")
    );
    // A malformed handshake is still the request's own fault.
    let response = reqwest::Client::new()
        .get(server.url("/t/known/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        400,
        "a handshake without Sec-WebSocket-Key"
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

// ---------------------------------------------------------------------------
// Short and long polling

/// A hub over a memory broker the test can look into, to see held requests.
fn inspectable_hub(history_len: usize) -> (Hub<TestEvent>, Arc<MemoryBroker>) {
    let broker = Arc::new(MemoryBroker::new(history_len));
    let mut config = HubConfig::default();
    config.history_len = history_len;
    (Hub::with_broker(broker.clone(), config), broker)
}

/// How many holders the topic's log has: the broker, plus one per live subscription.
fn holders(broker: &MemoryBroker, topic: &str) -> usize {
    let key = TopicKey {
        channel: "/t",
        topic: Topic::new(topic).expect("topic"),
    };
    // Minus the handle this call itself holds.
    Arc::strong_count(&broker.log(&key).expect("a topic")) - 1
}

/// Waits (bounded) until `condition` holds; the server side has no other signal.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The JSON body of a finished request.
async fn json_of(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_str(&response.text().await.expect("body")).expect("JSON body")
}

struct Answer {
    status: u16,
    etag: Option<String>,
    body: serde_json::Value,
}

async fn get(server: &Server, path: &str, if_none_match: Option<&str>) -> Answer {
    let mut request = reqwest::Client::new().get(server.url(path));
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    let response = tokio::time::timeout(PATIENCE, request.send())
        .await
        .expect("answered in time")
        .expect("request");
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.expect("body");
    let body = if status == 200 {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    } else {
        serde_json::Value::String(text)
    };
    Answer { status, etag, body }
}

fn cursors_of(answer: &Answer) -> Vec<String> {
    answer.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["cursor"].as_str().unwrap().to_owned())
        .collect()
}

const POLLS: [Transport; 2] = [Transport::ShortPoll, Transport::LongPoll];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_answer_with_an_etag_and_304_when_nothing_is_new() {
    let hub = hub(64);
    let server = serve(&hub).await;
    for transport in POLLS {
        let topic = format!("etag-{transport:?}");
        let cursors = publish_all(&hub, &topic, (0..3).map(note)).await;
        let start = format!("{}-0", cursors[0].split_once('-').unwrap().0);
        let wait = if transport == Transport::LongPoll {
            "&timeout=0"
        } else {
            ""
        };
        let path = |query: &str| route(transport, &topic, &format!("{query}{wait}"));

        let response = reqwest::get(server.url(&path(&format!("after={start}"))))
            .await
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/json"),
            "{transport:?}"
        );
        assert_eq!(
            header("cache-control").as_deref(),
            Some("no-cache"),
            "{transport:?}"
        );
        let etag = format!("\"{}\"", cursors[2]);
        assert_eq!(header("etag"), Some(etag.clone()), "{transport:?}");

        // If-None-Match alone is the position: nothing new, same tag, 304.
        let answer = get(&server, &path(""), Some(&etag)).await;
        assert_eq!(answer.status, 304, "{transport:?}");
        assert_eq!(answer.etag, Some(etag.clone()), "{transport:?}");
        assert_eq!(answer.body, "", "{transport:?}: a 304 has no body");
        // A weak tag is read the same.
        assert_eq!(
            get(&server, &path(""), Some(&format!("W/{etag}")))
                .await
                .status,
            304
        );

        // Something new: If-None-Match is the position the events follow.
        let more = publish_all(&hub, &topic, [note(3)]).await;
        let answer = get(&server, &path(""), Some(&etag)).await;
        assert_eq!(answer.status, 200, "{transport:?}");
        assert_eq!(cursors_of(&answer), more, "{transport:?}");
        assert_eq!(answer.etag, Some(format!("\"{}\"", more[0])));

        // `after` wins over If-None-Match as the position.
        let answer = get(
            &server,
            &path(&format!("after={}&", cursors[1])),
            Some(&etag),
        )
        .await;
        assert_eq!(
            cursors_of(&answer),
            [cursors[2].clone(), more[0].clone()],
            "{transport:?}"
        );

        // A malformed tag is a 400 that says where.
        let answer = get(&server, &path(""), Some("\"nope\"")).await;
        assert_eq!(answer.status, 400, "{transport:?}");
        assert!(
            answer.body.as_str().unwrap().contains("in `If-None-Match`"),
            "{:?}",
            answer.body
        );
    }
    // A held long poll never answers 304, even when the tag matches.
    let newest = hub.publish("etag-held", note(0)).await.unwrap();
    let answer = get(
        &server,
        "/t/etag-held/long-poll?timeout=1",
        Some(&format!("\"{newest}\"")),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["cursor"], newest.to_string());
    assert_eq!(answer.body["events"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_url_revalidates_by_the_etag_of_its_answer() {
    let hub = hub(64);
    let server = serve(&hub).await;
    for transport in POLLS {
        let topic = format!("revalidate-{transport:?}");
        let cursors = publish_all(&hub, &topic, (0..3).map(note)).await;
        let start = format!("{}-0", cursors[0].split_once('-').unwrap().0);
        // A long poll that has an answer gives it (or its 304) at once.
        let wait = if transport == Transport::LongPoll {
            "&timeout=5"
        } else {
            ""
        };
        let url = route(transport, &topic, &format!("after={start}{wait}"));

        // The same URL, revalidated with the ETag of its answer: 304 while
        // nothing changed, as an HTTP cache or a CDN revalidates.
        let first = get(&server, &url, None).await;
        assert_eq!((first.status, cursors_of(&first)), (200, cursors.clone()));
        let tag = first.etag.clone().expect("an etag");
        let started = std::time::Instant::now();
        let again = get(&server, &url, Some(&tag)).await;
        assert_eq!(again.status, 304, "{transport:?}: {:?}", again.body);
        assert_eq!(again.etag.as_ref(), Some(&tag), "{transport:?}");
        assert_eq!(again.body, "", "{transport:?}: a 304 has no body");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{transport:?}: held"
        );
        let weak = get(&server, &url, Some(&format!("W/{tag}"))).await;
        assert_eq!(weak.status, 304, "{transport:?}");

        // New events change the answer to the same URL: a new tag, 200.
        let more = publish_all(&hub, &topic, [note(3)]).await;
        let changed = get(&server, &url, Some(&tag)).await;
        assert_eq!(changed.status, 200, "{transport:?}");
        let all: Vec<String> = cursors.iter().chain(&more).cloned().collect();
        assert_eq!(cursors_of(&changed), all, "{transport:?}");
        let new_tag = changed.etag.clone().expect("an etag");
        assert_ne!(new_tag, tag, "{transport:?}");
        assert_eq!(get(&server, &url, Some(&new_tag)).await.status, 304);

        // An answer cut short by `limit` is another answer than the same
        // items complete: same last cursor, other tag.
        let limited = route(
            transport,
            &topic,
            &format!("after={}&limit=2{wait}", cursors[2]),
        );
        let complete = get(&server, &limited, None).await;
        assert_eq!(
            (cursors_of(&complete), &complete.body["more"]),
            (more.clone(), &serde_json::json!(false))
        );
        let later = publish_all(&hub, &topic, [note(4), note(5)]).await;
        let cut = get(&server, &limited, complete.etag.as_deref()).await;
        assert_eq!(cut.status, 200, "{transport:?}");
        assert_eq!(
            (cursors_of(&cut), &cut.body["more"]),
            (
                vec![more[0].clone(), later[0].clone()],
                &serde_json::json!(true)
            )
        );
        let cut_tag = cut.etag.clone().expect("an etag");
        // Still cut at the same place after more events: unchanged, 304.
        publish_all(&hub, &topic, [note(6)]).await;
        assert_eq!(get(&server, &limited, Some(&cut_tag)).await.status, 304);

        // The tag of any answer is also a position, as If-None-Match alone.
        let bare = route(transport, &topic, wait.trim_start_matches('&'));
        let rest = get(&server, &bare, Some(&cut_tag)).await;
        assert_eq!(rest.status, 200, "{transport:?}: {:?}", rest.body);
        assert_eq!(cursors_of(&rest).len(), 2, "{transport:?}: after {cut_tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_without_a_position_answer_from_now() {
    let hub = hub(64);
    let server = serve(&hub).await;
    let cursors = publish_all(&hub, "now", (0..3).map(note)).await;
    let answer = get(&server, "/t/now/poll", None).await;
    assert_eq!(answer.body["cursor"], cursors[2]);
    assert_eq!(answer.body["events"], serde_json::json!([]));
    assert_eq!(answer.body["more"], false);
    let answer = get(&server, "/t/now/long-poll?timeout=0", None).await;
    assert_eq!(answer.body["cursor"], cursors[2]);
    assert_eq!(answer.body["events"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_honor_limit_and_say_when_there_is_more() {
    let hub = hub(64);
    let app = ChannelRouter::new(hub.clone())
        .poll(PollConfig::default().batch_limit(4))
        .into_router();
    let server = Server::start(app).await;
    for transport in POLLS {
        let topic = format!("limit-{transport:?}");
        let cursors = publish_all(&hub, &topic, (0..10).map(note)).await;
        let start = format!("{}-0", cursors[0].split_once('-').unwrap().0);
        let mut position = start.clone();
        let mut seen = Vec::new();
        let mut answers = 0;
        loop {
            let path = route(
                transport,
                &topic,
                &format!("after={position}&limit=3&timeout=0"),
            );
            let answer = get(&server, &path, None).await;
            answers += 1;
            let got = cursors_of(&answer);
            position = answer.body["cursor"].as_str().unwrap().to_owned();
            assert_eq!(
                got.last(),
                Some(&position),
                "{transport:?}: the cursor is the last item's"
            );
            seen.extend(got);
            if answer.body["more"] == false {
                break;
            }
            assert_eq!(
                seen.len() % 3,
                0,
                "{transport:?}: `more` only on a full answer"
            );
        }
        assert_eq!(seen, cursors, "{transport:?}");
        assert_eq!(answers, 4, "{transport:?}");
        // Larger than the batch limit: clamped.
        let answer = get(
            &server,
            &route(
                transport,
                &topic,
                &format!("after={start}&limit=1000&timeout=0"),
            ),
            None,
        )
        .await;
        assert_eq!(cursors_of(&answer), cursors[..4], "{transport:?}");
        assert_eq!(answer.body["more"], true);
        for bad in ["limit=0", "limit=x", "limit=-1", "limit=1&limit=2"] {
            let answer = get(&server, &route(transport, &topic, bad), None).await;
            assert_eq!(answer.status, 400, "{transport:?} {bad}");
            assert!(
                answer.body.as_str().unwrap().contains("`limit`"),
                "{:?}",
                answer.body
            );
        }
    }
    for bad in [
        "timeout=x",
        "timeout=-1",
        "timeout=1.5",
        "timeout=1&timeout=1",
    ] {
        let answer = get(&server, &format!("/t/limit/long-poll?{bad}"), None).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert!(
            answer.body.as_str().unwrap().contains("`timeout`"),
            "{:?}",
            answer.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_poll_moves_its_cursor_past_what_it_filters_out() {
    let hub = hub(64);
    let server = serve(&hub).await;
    for transport in POLLS {
        let topic = format!("pf-{transport:?}");
        let start = format!("{}-0", hub.publish(&topic, note(0)).await.unwrap().epoch());
        let cursors = publish_all(&hub, &topic, one_of_each()).await;
        let path = route(
            transport,
            &topic,
            &format!("after={start}&events=pair&timeout=0"),
        );
        let answer = get(&server, &path, None).await;
        assert_eq!(cursors_of(&answer), [cursors[2].clone()], "{transport:?}");
        assert_eq!(answer.body["cursor"], cursors[4], "{transport:?}");
    }
    // A long poll that only saw filtered-out events times out past them.
    let from = hub.publish("pf-held", note(0)).await.unwrap();
    let (server_hub, topic) = (hub.clone(), "pf-held");
    let held = tokio::spawn({
        let url = server.url(&format!(
            "/t/{topic}/long-poll?after={from}&events=pair&timeout=1"
        ));
        async move { json_of(reqwest::get(url).await.unwrap()).await }
    });
    let skipped = publish_all(&server_hub, topic, [note(1), note(2)]).await;
    let answer = tokio::time::timeout(PATIENCE, held).await.unwrap().unwrap();
    assert_eq!(answer["events"], serde_json::json!([]));
    assert_eq!(answer["cursor"], skipped[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_times_out_with_the_same_cursor() {
    let hub = hub(64);
    let app = ChannelRouter::new(hub.clone())
        .poll(PollConfig::default().long_poll_timeout(Duration::from_secs(1)))
        .into_router();
    let server = Server::start(app).await;
    let newest = hub.publish("quiet", note(0)).await.unwrap().to_string();
    for query in [
        format!("after={newest}&timeout=1"),
        format!("after={newest}&timeout=999999"),
        String::new(),
    ] {
        let started = std::time::Instant::now();
        let answer = get(&server, &format!("/t/quiet/long-poll?{query}"), None).await;
        let waited = started.elapsed();
        assert_eq!(answer.status, 200, "{query}");
        assert_eq!(answer.body["cursor"], newest, "{query}");
        assert_eq!(answer.body["events"], serde_json::json!([]), "{query}");
        assert_eq!(answer.etag, Some(format!("\"{newest}\"")));
        // Held for the (clamped) timeout: tokio's timers never fire early.
        assert!(
            waited >= Duration::from_millis(990),
            "{query}: answered after {waited:?}"
        );
        assert!(waited < PATIENCE, "{query}: answered after {waited:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_woken_by_a_publish_and_released_when_its_client_leaves() {
    let (hub, broker) = inspectable_hub(64);
    let server = serve(&hub).await;
    let from = hub.publish("wake", note(0)).await.unwrap();
    let base = holders(&broker, "wake");
    let url = server.url(&format!("/t/wake/long-poll?after={from}"));
    let held = tokio::spawn(async move { json_of(reqwest::get(url).await.unwrap()).await });
    wait_until("the long poll is held", || holders(&broker, "wake") > base).await;
    let cursor = hub.publish("wake", note(1)).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, held).await.unwrap().unwrap();
    assert_eq!(answer["cursor"], cursor.to_string());
    assert_eq!(
        answer["events"][0]["data"],
        serde_json::json!({"note": "n1"})
    );
    wait_until("the answered poll lets go", || {
        holders(&broker, "wake") == base
    })
    .await;

    // A client that gives up: the server drops the held request at once.
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET /t/wake/long-poll?after={cursor} HTTP/1.1\r\nhost: x\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut socket, request.as_bytes())
        .await
        .unwrap();
    wait_until("the raw long poll is held", || {
        holders(&broker, "wake") > base
    })
    .await;
    drop(socket);
    wait_until("the abandoned long poll is released", || {
        holders(&broker, "wake") == base
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_long_pollers_are_all_woken_by_one_publish() {
    let (hub, broker) = inspectable_hub(64);
    let server = serve(&hub).await;
    let from = hub.publish("herd", note(0)).await.unwrap();
    let base = holders(&broker, "herd");
    let client = reqwest::Client::new();
    let poll = || {
        let request = client.get(server.url(&format!("/t/herd/long-poll?after={from}")));
        tokio::spawn(async move { json_of(request.send().await.unwrap()).await })
    };
    // What one held poll costs in references to the topic's log.
    let mut pollers = vec![poll()];
    wait_until("the first long poll is held", || {
        holders(&broker, "herd") > base
    })
    .await;
    let each = holders(&broker, "herd") - base;
    pollers.extend((1..50).map(|_| poll()));
    wait_until("all 50 long polls are held", || {
        holders(&broker, "herd") == base + 50 * each
    })
    .await;
    let cursor = hub.publish("herd", note(1)).await.unwrap().to_string();
    for poller in pollers {
        // Each would otherwise hold 25 s, longer than PATIENCE.
        let answer = tokio::time::timeout(PATIENCE, poller)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer["cursor"], cursor);
        assert_eq!(answer["events"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_between_long_polls_are_not_lost() {
    let hub = hub(64);
    let server = serve(&hub).await;
    let mut position = hub.publish("between", note(0)).await.unwrap().to_string();
    let mut seen = Vec::new();
    for round in 0..5 {
        // Published while no request is in flight.
        let published =
            publish_all(&hub, "between", (round * 3 + 1..round * 3 + 4).map(note)).await;
        let answer = get(
            &server,
            &format!("/t/between/long-poll?after={position}"),
            None,
        )
        .await;
        assert_eq!(cursors_of(&answer), published, "round {round}");
        position = answer.body["cursor"].as_str().unwrap().to_owned();
        seen.extend(cursors_of(&answer));
    }
    assert_eq!(seen.len(), 15);
}

// ---------------------------------------------------------------------------
// Forever frame

async fn serve_iframe(hub: &Hub<TestEvent>, config: IframeConfig) -> Server {
    Server::start(ChannelRouter::new(hub.clone()).iframe(config).into_router()).await
}

/// Opens the frame and reads through `push.ready`; returns it with the prelude.
async fn open_frame(server: &Server, path: &str) -> (support::Conn, String) {
    let mut conn = open(server, Transport::Iframe, path).await;
    conn.ready().await;
    let prelude = conn.iframe().prelude.clone().expect("prelude read");
    (conn, prelude)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iframe_headers_padding_and_default_target() {
    let hub = hub(16);
    let server = serve(&hub).await;
    let response = reqwest::get(server.url("/t/h/iframe")).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(
        header("content-security-policy").as_deref(),
        Some("frame-ancestors 'self'")
    );
    drop(response);

    let (_conn, prelude) = open_frame(&server, "/t/h/iframe").await;
    assert!(
        prelude.starts_with("<!doctype html><html><head><meta charset=\"utf-8\">"),
        "{prelude}"
    );
    let padding = format!("<!--{}-->", " ".repeat(1024));
    assert!(prelude.contains(&padding), "about 1 KiB of padding");
    assert!(prelude.len() > 1024 + 100);
    assert!(
        prelude.ends_with(
            "<script>\"use strict\";var t=location.origin;function m(x){parent.postMessage(x,t)}</script>\n"
        ),
        "{prelude}"
    );
    // Any origin asked for is refused when none is configured.
    let (status, body) = refused(
        &server,
        Transport::Iframe,
        "/t/h/iframe?origin=http://127.0.0.1",
    )
    .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iframe_targets_only_configured_origins() {
    let hub = hub(16);
    let two = IframeConfig::default()
        .allowed_origins(["https://app.example", "http://localhost:8080"])
        .unwrap();
    let server = serve_iframe(&hub, two).await;
    let response = reqwest::get(server.url("/t/o/iframe")).await.unwrap();
    assert_eq!(
        response.headers()["content-security-policy"],
        "frame-ancestors 'self' https://app.example http://localhost:8080"
    );
    drop(response);
    let target = |prelude: &str| {
        let start = prelude.find("var t=").unwrap() + 6;
        let end = start + prelude[start..].find(";function").unwrap();
        prelude[start..end].to_owned()
    };
    let (_c, prelude) = open_frame(&server, "/t/o/iframe").await;
    assert_eq!(
        target(&prelude),
        "location.origin",
        "two entries, none picked"
    );
    let (_c, prelude) = open_frame(&server, "/t/o/iframe?origin=http://localhost:8080").await;
    assert_eq!(target(&prelude), "\"http://localhost:8080\"");
    let (_c, prelude) = open_frame(&server, "/t/o/iframe?origin=https://APP.example").await;
    assert_eq!(target(&prelude), "\"https://app.example\"");
    for unlisted in [
        "https://evil.example",
        "*",
        "https://app.example.evil.example",
        "null",
    ] {
        let (status, body) = refused(
            &server,
            Transport::Iframe,
            &format!("/t/o/iframe?origin={unlisted}"),
        )
        .await;
        assert_eq!(status, 403, "{unlisted}: {body}");
        assert!(body.contains("is not allowed"), "{body}");
    }
    // A page of an unlisted origin is refused by the one origin policy.
    let response = reqwest::Client::new()
        .get(server.url("/t/o/iframe"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // The request's own headers are never reflected.
    let response = reqwest::Client::new()
        .get(server.url("/t/o/iframe"))
        .header("referer", "https://evil.example/page")
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(PATIENCE, body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&first).contains("evil"));

    // A list of one is the default; `*` only when configured.
    let one = IframeConfig::default()
        .allowed_origins(["https://app.example"])
        .unwrap();
    let server = serve_iframe(&hub, one).await;
    let (_c, prelude) = open_frame(&server, "/t/o/iframe").await;
    assert_eq!(target(&prelude), "\"https://app.example\"");
    let any = IframeConfig::default().allowed_origins(["*"]).unwrap();
    let server = serve_iframe(&hub, any).await;
    let (_c, prelude) = open_frame(&server, "/t/o/iframe").await;
    assert_eq!(target(&prelude), "\"*\"");

    for bad in ["https://app.example/", "app.example", "https://a.example/x"] {
        let error = IframeConfig::default()
            .allowed_origins([bad])
            .unwrap_err()
            .to_string();
        assert!(error.contains("invalid origin"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iframe_honors_no_callback_parameter() {
    let hub = hub(16);
    let server = serve(&hub).await;
    hub.publish("cb", note(0)).await.unwrap();
    let (mut plain, plain_prelude) = open_frame(&server, "/t/cb/iframe").await;
    let (mut with_callback, callback_prelude) =
        open_frame(&server, "/t/cb/iframe?callback=alert&cb=alert&jsonp=alert").await;
    assert_eq!(plain_prelude, callback_prelude);
    hub.publish("cb", note(1)).await.unwrap();
    plain.next_frame().await;
    with_callback.next_frame().await;
    assert_eq!(plain.iframe().raw, with_callback.iframe().raw);
    assert!(!with_callback.iframe().raw.contains("alert"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iframe_ends_after_max_bytes_with_a_resume_cursor() {
    let hub = hub(1024);
    let server = serve_iframe(&hub, IframeConfig::default().max_bytes(4096)).await;
    let mut conn = open(&server, Transport::Iframe, "/t/big/iframe").await;
    conn.ready().await;
    let events: Vec<TestEvent> = (0..100).map(note).collect();
    let cursors = publish_all(&hub, "big", events.clone()).await;
    let mut seen = Vec::new();
    let end = loop {
        let frame = conn.next_frame().await;
        if frame.event == "push.end" {
            break frame;
        }
        seen.push(frame);
    };
    assert_eq!(end.data["cursor"], end.cursor);
    assert_eq!(Some(&end.cursor), seen.last().map(|f| &f.cursor));
    assert!(
        seen.len() < events.len(),
        "4 KiB cannot hold 100 events: {}",
        seen.len()
    );
    assert_eq!(
        conn.next_item().await,
        None,
        "the response ends after push.end"
    );
    let raw = &conn.iframe().raw;
    assert!(raw.ends_with(")</script></body></html>"), "{raw}");
    // Cut after the item that reached the limit, then the end.
    assert!(raw.len() < 4096 + 2 * 200, "{} bytes", raw.len());
    // Resuming from push.end's cursor, frame after frame, gets the rest, nothing twice.
    let mut position = end.cursor;
    let mut frames = 1;
    while seen.len() < events.len() {
        let path = format!("/t/big/iframe?after={position}");
        let mut again = open(&server, Transport::Iframe, &path).await;
        assert_eq!(again.ready().await, position);
        frames += 1;
        loop {
            let frame = again.next_frame().await;
            position = frame.cursor.clone();
            if frame.event == "push.end" {
                break;
            }
            seen.push(frame);
            if seen.len() == events.len() {
                break;
            }
        }
    }
    let all: Vec<String> = seen.iter().map(|f| f.cursor.clone()).collect();
    assert_eq!(all, cursors);
    assert!(frames > 2, "{frames} frames of 4 KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iframe_max_bytes_below_the_prelude_still_leaves_room_for_items() {
    let hub = hub(64);
    // Smaller than the prelude (about 1.2 KiB with the default padding).
    let server = serve_iframe(&hub, IframeConfig::default().max_bytes(100)).await;
    let mut conn = open(&server, Transport::Iframe, "/t/tiny/iframe").await;
    conn.ready().await;
    let cursors = publish_all(&hub, "tiny", (0..3).map(note)).await;
    let frames = conn.frames(3).await;
    assert_eq!(
        frames.iter().map(|f| f.cursor.clone()).collect::<Vec<_>>(),
        cursors,
        "every document carries items, never only push.ready and push.end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iframe_ends_after_max_duration() {
    let hub = hub(16);
    let config = IframeConfig::default()
        .max_duration(Duration::from_millis(300))
        .heartbeat(Duration::from_millis(100));
    let server = serve_iframe(&hub, config).await;
    let mut conn = open(&server, Transport::Iframe, "/t/aging/iframe").await;
    let ready = conn.ready().await;
    let end = conn.next_frame().await;
    assert_eq!(end.event, "push.end");
    assert_eq!(end.cursor, ready);
    assert_eq!(conn.next_item().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iframe_items_cannot_break_out_of_their_script() {
    let hub = hub(64);
    let server = serve(&hub).await;
    let corpus = [
        "</script><script>alert(1)</script>",
        "<!--",
        "<script",
        "--><script>alert(2)</script><!--",
        "\u{2028}",
        "\u{2029}",
        "a\u{2028}b\u{2029}c",
        "\"quotes\" and 'single'",
        "back\\slash \\u003c \\\\",
        "&amp; &lt; &#x3c; & <> ]]>",
        "</SCRIPT ><ScRiPt>alert(3)</sCrIpT>",
        "\u{e2}\u{80}\u{a8} é ✓ 🎉",
    ];
    let events: Vec<TestEvent> = corpus
        .iter()
        .flat_map(|s| {
            [
                TestEvent::Note((*s).to_owned()),
                TestEvent::Renamed {
                    text: (*s).to_owned(),
                },
            ]
        })
        .collect();
    let mut conn = open(&server, Transport::Iframe, "/t/xss/iframe").await;
    conn.ready().await;
    publish_all(&hub, "xss", events.clone()).await;
    // `support` already checks each chunk between `<script>m(` and `)</script>`
    // for raw `<`, `>`, `&`, U+2028 and U+2029; here the payloads come back exactly.
    let frames = conn.frames(events.len()).await;
    assert_eq!(frames.iter().map(decode).collect::<Vec<_>>(), events);
    let raw = &conn.iframe().raw;
    let body = raw.split_once(support::IFRAME_PRELUDE_END).unwrap().1;
    let items = events.len() + 1; // and push.ready
    assert_eq!(
        raw.matches("</script>").count(),
        items + 1,
        "one per item plus the prelude's"
    );
    assert_eq!(body.matches("<script>").count(), items);
    assert!(
        !body.contains("<!--"),
        "no comment can open inside the items"
    );
    for line in body.lines() {
        let json = support::iframe_item(line);
        let value: serde_json::Value = serde_json::from_str(json).expect("each item is JSON");
        assert!(value["event"].is_string());
    }
}

// ---------------------------------------------------------------------------
// Cost

/// What each transport costs per delivered event, headers included, for one
/// subscriber: "paced" publishes an event once the previous one arrived (the
/// worst case for polls: one answer per event), "burst" publishes 100 at once.
/// Prints a table: `cargo test --test conformance cost -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_per_delivered_event() {
    use std::sync::atomic::Ordering::Relaxed;
    let hub = hub(1024);
    let server = serve(&hub).await;
    let n = 100;
    eprintln!("| transport | mode | requests/event | bytes down/event | bytes up/event |");
    eprintln!("|---|---|---|---|---|");
    for transport in TRANSPORTS {
        for paced in [true, false] {
            let (proxy, traffic) = server.counting_proxy().await;
            let topic = format!("cost-{transport:?}-{paced}");
            let mut conn = open(&proxy, transport, &route(transport, &topic, "")).await;
            conn.ready().await;
            // The opening (handshake, prelude, first poll) is not per event.
            let (up0, down0, req0) = (
                traffic.up.load(Relaxed),
                traffic.down.load(Relaxed),
                traffic.requests.load(Relaxed),
            );
            if paced {
                for i in 0..n {
                    publish_all(&hub, &topic, [note(i)]).await;
                    assert_eq!(decode(&conn.next_frame().await), note(i), "{transport:?}");
                }
            } else {
                publish_all(&hub, &topic, (0..n).map(note)).await;
                let frames = conn.frames(n).await;
                assert_eq!(
                    frames.iter().map(decode).collect::<Vec<_>>(),
                    (0..n).map(note).collect::<Vec<_>>()
                );
            }
            let per = |now: u64, before: u64| (now - before) as f64 / n as f64;
            eprintln!(
                "| {transport:?} | {} | {:.2} | {:.0} | {:.0} |",
                if paced { "paced" } else { "burst" },
                per(traffic.requests.load(Relaxed), req0),
                per(traffic.down.load(Relaxed), down0),
                per(traffic.up.load(Relaxed), up0),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_settings_are_served_without_panics() {
    let hub = hub(16);
    let app = ChannelRouter::new(hub.clone())
        .poll(
            PollConfig::default()
                .batch_limit(usize::MAX)
                .long_poll_timeout(Duration::MAX),
        )
        .iframe(
            IframeConfig::default()
                .max_duration(Duration::MAX)
                .max_bytes(usize::MAX)
                .heartbeat(Duration::MAX)
                .padding(0),
        )
        .into_router();
    let server = Server::start(app).await;
    let cursors = publish_all(&hub, "x", (0..3).map(note)).await;
    let start = format!("{}-0", cursors[0].split_once('-').unwrap().0);
    for path in [
        format!("/t/x/poll?after={start}&limit=99999999999999999999999"),
        format!("/t/x/long-poll?after={start}&timeout=99999999999999999999999"),
    ] {
        let answer = get(&server, &path, None).await;
        assert_eq!(cursors_of(&answer), cursors, "{path}");
    }
    for transport in TRANSPORTS {
        let mut conn = open(
            &server,
            transport,
            &route(transport, "x", &format!("after={start}")),
        )
        .await;
        conn.ready().await;
        let frames = conn.frames(3).await;
        assert_eq!(
            frames.iter().map(|f| f.cursor.clone()).collect::<Vec<_>>(),
            cursors,
            "{transport:?}"
        );
    }
}

/// A note whose JSON payload (`{"note":"xx…"}`) is exactly `size` bytes.
fn note_of_size(size: usize) -> TestEvent {
    let event = TestEvent::Note("x".repeat(size - r#"{"note":""}"#.len()));
    assert_eq!(serde_json::to_vec(&event).expect("encode").len(), size);
    event
}

const CLIENT_TRANSPORTS: [push_runtime::client::Transport; 5] = [
    push_runtime::client::Transport::Sse,
    push_runtime::client::Transport::WebSocket,
    push_runtime::client::Transport::ShortPoll,
    push_runtime::client::Transport::LongPoll,
    push_runtime::client::Transport::Iframe,
];

/// The Rust client, with its default limits, reads `expected` after `after`
/// on one connection (no reconnection, no error).
async fn client_reads(
    server: &Server,
    transport: push_runtime::client::Transport,
    topic: &str,
    after: &str,
    expected: &[TestEvent],
) {
    use push_runtime::client::{Client, ClientConfig, Update};
    let config = ClientConfig::default().max_retries(Some(0));
    let client = Client::<TestEvent>::with_config(&server.url(""), config).expect("client");
    let mut stream = client
        .subscribe(topic)
        .transport(transport)
        .after(after.parse().expect("cursor"))
        .stream();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match tokio::time::timeout(PATIENCE, stream.next()).await {
            Ok(Some(Ok(Update::Ready { .. }))) => {}
            Ok(Some(Ok(Update::Event { event, .. }))) => got.push(event),
            other => panic!("{transport:?}: {other:?} after {} events", got.len()),
        }
    }
    assert!(got == expected, "{transport:?}: other events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_the_max_size_reaches_every_transport_and_a_larger_one_is_refused() {
    // The default limit, so that the Rust client's default limits are checked too.
    let hub = hub(16);
    let max = hub.config().max_event_size;
    assert_eq!(max, push_runtime::DEFAULT_MAX_EVENT_SIZE);
    assert_eq!(max, 1024 * 1024);
    let server = Server::start(
        ChannelRouter::new(hub.clone())
            .publish(
                |request: push_runtime::PublishRequest<TestEvent>| async move { Ok(request.event) },
            )
            .max_publish_body(2 * max)
            // One document holds both items (the raw reader does not reopen it).
            .iframe(IframeConfig::default().max_bytes(4 * max))
            .into_router(),
    )
    .await;
    let largest = note_of_size(max);
    for transport in TRANSPORTS {
        let topic = format!("largest-{transport:?}");
        let mut conn = open(&server, transport, &route(transport, &topic, "")).await;
        let ready = conn.ready().await;
        let cursors = publish_all(&hub, &topic, [largest.clone(), note(1)]).await;
        let frames = conn.frames(2).await;
        assert_eq!(
            frames.iter().map(decode).collect::<Vec<_>>(),
            [largest.clone(), note(1)],
            "{transport:?}"
        );
        assert_eq!(frames[1].cursor, cursors[1], "{transport:?}");
        // One byte more is refused, by the hub and by the publish route.
        match hub.publish(&topic, note_of_size(max + 1)).await {
            Err(push_runtime::PublishError::TooLarge { size, max: limit }) => {
                assert_eq!((size, limit), (max + 1, max));
            }
            other => panic!("{other:?}"),
        }
        let body = serde_json::to_vec(&note_of_size(max + 1)).expect("encode");
        let response = reqwest::Client::new()
            .post(server.url(&format!("/t/{topic}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status().as_u16(), 413, "{transport:?}");
        let message = response.text().await.expect("body");
        assert!(message.contains("over the hub's limit"), "{message}");
        drop(conn);
        for client_transport in CLIENT_TRANSPORTS {
            client_reads(
                &server,
                client_transport,
                &topic,
                &ready,
                &[largest.clone(), note(1)],
            )
            .await;
        }
    }
}

/// A WebSocket subscriber of a hub whose events may be larger than the old
/// fixed 4 MiB write cap gets them all on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_gets_events_up_to_a_raised_max_size_without_reconnecting() {
    for max in [2 * 1024 * 1024, 5 * 1024 * 1024] {
        let mut config = HubConfig::default();
        config.history_len = 16;
        config.max_event_size = max;
        let hub = Hub::<TestEvent>::with_config(config);
        let server = serve(&hub).await;
        let mut conn = open(&server, Transport::WebSocket, "/t/big/ws").await;
        conn.ready().await;
        // A burst: one batch of several maximal events.
        let events = vec![note_of_size(max), note_of_size(max), note(1)];
        let cursors = publish_all(&hub, "big", events.clone()).await;
        let frames = conn.frames(3).await;
        assert_eq!(
            frames.iter().map(decode).collect::<Vec<_>>(),
            events,
            "{max}"
        );
        assert_eq!(frames[2].cursor, cursors[2]);
        assert_eq!(hub.stats().connections, 1, "still the one connection");
    }
}

// ---------------------------------------------------------------------------
// Expiring authorizations: the hook gives the principal an expiry; at it a
// stream ends with `push.expired` (WebSocket: then close 4401), a held long
// poll is answered 401, and a resume is authorized again.

/// The tokens a test hands out, each with its expiry; the hook reads one
/// from `Authorization: Bearer <token>` or, for the raw stream clients that
/// send no headers, `?ticket=<token>`.
#[derive(Default)]
struct Tokens {
    next: std::sync::atomic::AtomicUsize,
    grants: std::sync::Mutex<std::collections::HashMap<String, Grant>>,
}

/// What a token is worth.
#[derive(Clone, Copy)]
enum Grant {
    /// Never expires.
    Forever,
    /// Expires `lifetime` after its first use, so the test picks its
    /// expiry relative to the request that starts it, not to when it was made.
    FromFirstUse(Duration),
    /// Expires at this time.
    At(std::time::SystemTime),
}

impl Tokens {
    fn issue(&self, grant: Grant) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("tok{n}");
        self.grants.lock().unwrap().insert(token.clone(), grant);
        token
    }

    fn authorize(&self, request: &AuthRequest) -> Result<Principal, Refusal> {
        let header = request
            .parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ticket = request.parts.uri.query().and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("ticket="))
        });
        let Some(token) = header.or(ticket) else {
            return Err(Refusal::unauthorized("a bearer token is required"));
        };
        let mut grants = self.grants.lock().unwrap();
        let Some(grant) = grants.get_mut(token) else {
            return Err(Refusal::unauthorized("unknown token"));
        };
        let principal = Principal::new(token.to_owned());
        Ok(match *grant {
            Grant::Forever => principal,
            Grant::At(at) => principal.expires_at(at),
            Grant::FromFirstUse(lifetime) => {
                let at = std::time::SystemTime::now() + lifetime;
                *grant = Grant::At(at);
                principal.expires_at(at)
            }
        })
    }
}

/// A server whose hook authorizes by `tokens`.
async fn serve_tokens(hub: &Hub<TestEvent>, tokens: &Arc<Tokens>) -> Server {
    let tokens = Arc::clone(tokens);
    let hook = move |request: AuthRequest| {
        let answer = tokens.authorize(&request);
        async move { answer }
    };
    Server::start(
        ChannelRouter::new(hub.clone())
            .authorize(hook)
            .into_router(),
    )
    .await
}

/// Lifetimes tried in turn for a token that must outlive a first exchange:
/// short, so the tests are quick, and longer after a run where a loaded
/// machine did not finish the exchange in time.
const LIFETIMES: [Duration; 4] = [
    Duration::from_millis(1500),
    Duration::from_secs(3),
    Duration::from_secs(6),
    Duration::from_secs(12),
];

const EXPIRED: &str = "authorization expired";

/// [`refused`], bounded: a route that wrongly serves the request would
/// otherwise stream forever.
async fn refused_in_time(server: &Server, transport: Transport, path: &str) -> (u16, String) {
    tokio::time::timeout(PATIENCE, refused(server, transport, path))
        .await
        .unwrap_or_else(|_| panic!("{transport:?} {path}: not refused in time"))
}

/// The frames of `conn` up to `push.expired`, and that last frame.
async fn frames_until_expired(conn: &mut support::Conn) -> (Vec<Frame>, Frame) {
    let mut frames = Vec::new();
    loop {
        let frame = conn.next_frame().await;
        if frame.event == "push.expired" {
            return (frames, frame);
        }
        assert!(
            !frame.event.starts_with("push."),
            "unexpected control event {frame:?}"
        );
        frames.push(frame);
    }
}

/// A stream opened with a token that expires: the events published before
/// the expiry, then `push.expired` with the cursor to resume from (the
/// last event's), then the end (WebSocket: close 4401). Returns that cursor
/// and how many of `published` came before the expiry.
async fn stream_until_expired(
    server: &Server,
    hub: &Hub<TestEvent>,
    transport: Transport,
    topic: &str,
    token: &str,
) -> (String, Vec<String>, usize) {
    let mut conn = open(
        server,
        transport,
        &route(transport, topic, &format!("ticket={token}")),
    )
    .await;
    let ready = conn.ready().await;
    let published = publish_all(hub, topic, (0..3).map(note)).await;
    let (before, expired) = frames_until_expired(&mut conn).await;
    // Whatever the timing: a prefix of what was published, in order, and
    // `push.expired` at the last of it (or at `push.ready`'s cursor).
    let delivered: Vec<String> = before.iter().map(|f| f.cursor.clone()).collect();
    assert_eq!(delivered, published[..delivered.len()], "{transport:?}");
    let resume = delivered.last().cloned().unwrap_or(ready);
    assert_eq!(expired.cursor, resume, "{transport:?}");
    assert_eq!(
        expired.data,
        serde_json::json!({ "cursor": resume }),
        "{transport:?}"
    );
    if transport == Transport::WebSocket {
        assert_eq!(
            conn.next_item().await,
            Some(Item::Closed(4401, EXPIRED.to_owned())),
            "{transport:?}"
        );
    }
    assert_eq!(conn.next_item().await, None, "{transport:?}: the end");
    (resume, published, delivered.len())
}

/// A token expiring mid-stream on each streaming transport: events before
/// the expiry are delivered, then `push.expired` with the cursor of the last
/// one; resuming from it with the old token is refused `401`; with a fresh
/// token, the events published meanwhile follow, none lost, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_with_push_expired_and_resumes_with_a_fresh_token() {
    let hub = hub(1024);
    let tokens = Arc::new(Tokens::default());
    let server = serve_tokens(&hub, &tokens).await;
    let check = |transport: Transport| {
        let (hub, tokens, server) = (&hub, &tokens, &server);
        async move {
            for (attempt, lifetime) in LIFETIMES.into_iter().enumerate() {
                let topic = format!("expiring-{transport:?}-{attempt}");
                let token = tokens.issue(Grant::FromFirstUse(lifetime));
                let (resume, first, delivered) =
                    stream_until_expired(server, hub, transport, &topic, &token).await;
                // Published after the expiry, before the client comes back.
                let meanwhile = publish_all(hub, &topic, (3..6).map(note)).await;
                let again = route(transport, &topic, &format!("ticket={token}&after={resume}"));
                assert_eq!(
                    refused_in_time(server, transport, &again).await,
                    (401, EXPIRED.to_owned()),
                    "{transport:?}: the old token again"
                );
                let fresh = tokens.issue(Grant::Forever);
                let again = route(transport, &topic, &format!("ticket={fresh}&after={resume}"));
                let mut conn = open(server, transport, &again).await;
                assert_eq!(conn.ready().await, resume, "{transport:?}");
                let expected: Vec<String> = first[delivered..]
                    .iter()
                    .chain(&meanwhile)
                    .cloned()
                    .collect();
                let rest = conn.frames(expected.len()).await;
                let cursors: Vec<String> = rest.iter().map(|f| f.cursor.clone()).collect();
                assert_eq!(
                    cursors, expected,
                    "{transport:?}: nothing lost, nothing twice"
                );
                let seen: Vec<TestEvent> = rest.iter().map(decode).collect();
                assert_eq!(seen[seen.len() - 3..], (3..6).map(note).collect::<Vec<_>>());
                // And nothing else: the next frame is the next event.
                let last = publish_all(hub, &topic, [note(6)]).await;
                assert_eq!(conn.next_frame().await.cursor, last[0], "{transport:?}");
                if delivered == first.len() {
                    return;
                }
                // A loaded machine let the token expire before the events
                // were written: all is well, but the check wants some.
            }
            panic!("{transport:?}: no token lived long enough to deliver 3 events");
        }
    };
    futures_util::future::join_all(
        [Transport::Sse, Transport::WebSocket, Transport::Iframe].map(check),
    )
    .await;
}

/// A poll with the token in `Authorization` (status, and the answer's JSON
/// or the refusal's text).
async fn poll_with(server: &Server, path: &str, token: &str) -> (u16, serde_json::Value) {
    let request = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .send();
    let response = tokio::time::timeout(PATIENCE, request)
        .await
        .expect("answered in time")
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if status == 200 {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    } else {
        serde_json::Value::String(text)
    };
    (status, body)
}

fn poll_cursors(answer: &serde_json::Value) -> Vec<String> {
    answer["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["cursor"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls with a token that expires: answers before the expiry are as ever;
/// a long poll held when it comes is answered `401` (short polls get `401`
/// from then on); the old token is refused again, and a fresh one resumes
/// from the last answer's cursor with the events published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_with_an_expiring_token_get_401_and_resume_with_a_fresh_one() {
    let hub = hub(1024);
    let tokens = Arc::new(Tokens::default());
    let server = serve_tokens(&hub, &tokens).await;
    let check = |transport: Transport| {
        let (hub, tokens, server) = (&hub, &tokens, &server);
        async move {
            let base = |topic: &str, query: &str| route(transport, topic, query);
            let long = transport == Transport::LongPoll;
            for (attempt, lifetime) in LIFETIMES.into_iter().enumerate() {
                let topic = format!("expiring-{transport:?}-{attempt}");
                let token = tokens.issue(Grant::FromFirstUse(lifetime));
                // The first use starts the token's lifetime.
                let (status, first) = poll_with(server, &base(&topic, "timeout=0"), &token).await;
                assert_eq!(status, 200, "{transport:?}: {first}");
                let start = first["cursor"].as_str().unwrap().to_owned();
                let published = publish_all(hub, &topic, (0..3).map(note)).await;
                let query = format!("after={start}&timeout=0");
                let (status, answer) = poll_with(server, &base(&topic, &query), &token).await;
                let resume = if status == 200 {
                    assert_eq!(poll_cursors(&answer), published, "{transport:?}");
                    published[2].clone()
                } else {
                    // A loaded machine let the token expire already.
                    assert_eq!((status, answer.as_str()), (401, Some(EXPIRED)));
                    start.clone()
                };
                // Nothing new: a long poll is held until the expiry; short
                // polls are answered at once, until the expiry.
                let query = format!("after={resume}&timeout=20");
                let deadline = tokio::time::Instant::now() + PATIENCE;
                loop {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{transport:?}: the token never expired"
                    );
                    let (status, answer) = poll_with(server, &base(&topic, &query), &token).await;
                    if status == 401 {
                        assert_eq!(answer, EXPIRED, "{transport:?}");
                        break;
                    }
                    assert_eq!(status, 200, "{transport:?}: {answer}");
                    assert!(!long, "a held long poll is answered 401 at the expiry");
                    assert_eq!(answer["events"], serde_json::json!([]), "{transport:?}");
                    assert_eq!(answer["cursor"], resume.as_str());
                    tokio::time::sleep(support::SHORT_POLL_PAUSE).await;
                }
                let meanwhile = publish_all(hub, &topic, (3..6).map(note)).await;
                let query = format!("after={resume}&timeout=0");
                assert_eq!(
                    poll_with(server, &base(&topic, &query), &token).await,
                    (401, serde_json::json!(EXPIRED)),
                    "{transport:?}: the old token again"
                );
                let fresh = tokens.issue(Grant::Forever);
                let (status, answer) = poll_with(server, &base(&topic, &query), &fresh).await;
                assert_eq!(status, 200, "{transport:?}: {answer}");
                let expected: Vec<String> = if resume == start {
                    published.iter().chain(&meanwhile).cloned().collect()
                } else {
                    meanwhile
                };
                assert_eq!(poll_cursors(&answer), expected, "{transport:?}");
                if resume != start {
                    return;
                }
            }
            panic!("{transport:?}: no token lived long enough for two polls");
        }
    };
    futures_util::future::join_all(POLLS.map(check)).await;
}

/// A long poll held when its token expires is answered `401`: the token's
/// lifetime starts with this very request, so it is held, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_held_across_the_expiry_is_answered_401() {
    let (hub, broker) = inspectable_hub(64);
    let tokens = Arc::new(Tokens::default());
    let server = serve_tokens(&hub, &tokens).await;
    let newest = hub.publish("held", note(0)).await.unwrap().to_string();
    let token = tokens.issue(Grant::FromFirstUse(Duration::from_secs(1)));
    let path = format!("/t/held/long-poll?after={newest}&timeout=20");
    let held = tokio::spawn({
        let url = server.url(&path);
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            let kind = response.headers().get("content-type").cloned();
            (status, kind, response.text().await.expect("body"))
        }
    });
    wait_until("the long poll is held", || holders(&broker, "held") == 2).await;
    let (status, kind, body) = tokio::time::timeout(PATIENCE, held)
        .await
        .expect("answered in time")
        .expect("the poll");
    assert_eq!((status, body.as_str()), (401, EXPIRED));
    assert_eq!(kind.unwrap(), "text/plain; charset=utf-8");
    wait_until("the subscription is gone", || holders(&broker, "held") == 1).await;
}

/// A principal already expired when admitted is refused `401 authorization
/// expired` on every route, with the token in a header or the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_principal_is_refused_401_on_every_route() {
    let hub = hub(64);
    let tokens = Arc::new(Tokens::default());
    let server = serve_tokens(&hub, &tokens).await;
    hub.publish("gone", note(0)).await.unwrap();
    let past = std::time::SystemTime::now() - Duration::from_secs(1);
    let expired = tokens.issue(Grant::At(past));
    let live = tokens.issue(Grant::Forever);
    for transport in TRANSPORTS {
        let path = route(transport, "gone", &format!("ticket={expired}"));
        assert_eq!(
            refused_in_time(&server, transport, &path).await,
            (401, EXPIRED.to_owned()),
            "{transport:?}"
        );
        if transport != Transport::WebSocket {
            let request = reqwest::Client::new()
                .get(server.url(&route(transport, "gone", "")))
                .bearer_auth(&expired)
                .send();
            let response = tokio::time::timeout(PATIENCE, request)
                .await
                .expect("answered in time")
                .expect("request");
            assert_eq!(response.status(), 401, "{transport:?}");
            assert_eq!(
                response.headers()["content-type"],
                "text/plain; charset=utf-8"
            );
            assert_eq!(response.text().await.unwrap(), EXPIRED, "{transport:?}");
        }
    }
    // The same routes with a live token are served.
    for transport in TRANSPORTS {
        let mut conn = open(
            &server,
            transport,
            &route(transport, "gone", &format!("ticket={live}")),
        )
        .await;
        conn.ready().await;
    }
}

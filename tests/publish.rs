//! `POST {base}/{topic}`: off by default, guarded by the application's hook.

mod support;

use push_runtime::broker::{
    Broker, BrokerError, BrokerErrorKind, BrokerFuture, BrokerSubscribeError, TopicKey,
};
use push_runtime::history::{Outgoing, Subscription};
use push_runtime::{
    Backpressure, ChannelRouter, Delivery, Hub, HubConfig, Limits, PublishRequest, Refusal, Start,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::channel::{TestEvent, note};
use support::{Server, Transport, open};

async fn only_with_token(request: PublishRequest<TestEvent>) -> Result<TestEvent, Refusal> {
    match request.parts.headers.get("authorization") {
        Some(value) if value == "Bearer secret" => Ok(request.event),
        Some(_) => Err(Refusal::forbidden("that token may not publish")),
        None => Err(Refusal::unauthorized(
            "a bearer token is required to publish",
        )),
    }
}

async fn server(hub: &Hub<TestEvent>) -> Server {
    let app = ChannelRouter::new(hub.clone())
        .publish(only_with_token)
        .max_publish_body(1024)
        .into_router();
    Server::start(app).await
}

fn post(server: &Server, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(server.url(path))
        .header("authorization", "Bearer secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_reaches_subscribers_and_its_cursor_is_returned() {
    let hub = Hub::<TestEvent>::new();
    let server = server(&hub).await;
    let mut conn = open(&server, Transport::Sse, "/t/room/sse").await;
    conn.ready().await;
    let response = post(&server, "/t/room")
        .header("content-type", "application/json")
        .body(r#"{"moved":{"x":1,"y":2}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let frame = conn.next_frame().await;
    assert_eq!(body, serde_json::json!({ "cursor": frame.cursor }));
    assert_eq!(frame.event, "moved");
    assert_eq!(frame.data, serde_json::json!({"moved": {"x": 1, "y": 2}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_decides_and_bad_bodies_are_refused_with_the_reason() {
    let hub = Hub::<TestEvent>::new();
    let server = server(&hub).await;
    let json = |b: reqwest::RequestBuilder| b.header("content-type", "application/json");
    let client = reqwest::Client::new();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            json(client.post(server.url("/t/room"))).body(r#""ping""#),
            401,
            "a bearer token is required",
        ),
        (
            json(
                client
                    .post(server.url("/t/room"))
                    .header("authorization", "Bearer nope"),
            )
            .body(r#""ping""#),
            403,
            "may not publish",
        ),
        (json(post(&server, "/t/room")).body("{not json"), 400, ""),
        (
            json(post(&server, "/t/room")).body(r#"{"unknown":1}"#),
            422,
            "unknown variant",
        ),
        (
            post(&server, "/t/room")
                .header("content-type", "text/plain")
                .body(r#""ping""#),
            415,
            "",
        ),
        (
            json(post(&server, "/t/room")).body(format!("{{\"note\":\"{}\"}}", "x".repeat(4096))),
            413,
            "",
        ),
        (
            json(post(&server, "/t/bad%20topic")).body(r#""ping""#),
            400,
            "invalid topic",
        ),
    ];
    for (request, status, message) in cases {
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(got, status, "{body}");
        assert!(body.contains(message), "{body:?} lacks {message:?}");
    }
    // Nothing refused was published.
    let mut sub = hub
        .subscribe(
            "room",
            push_runtime::Start::After(push_runtime::Cursor::new(0, 0)),
            None,
        )
        .await
        .unwrap();
    let mut batch = Vec::new();
    sub.fill(&mut batch, 10);
    assert!(
        matches!(&batch[..], [push_runtime::Delivery::Gap(gap)] if gap.to.seq() == 0),
        "{batch:?}"
    );
    assert_eq!(hub.publish("room", note(1)).await.unwrap().seq(), 1);
}

/// A broker whose every call fails with one kind of error: what the routes
/// answer depends on the kind any broker sets, not on its error type.
struct FailingBroker(BrokerErrorKind);

impl Broker for FailingBroker {
    fn publish<'a>(
        &'a self,
        _: &'a TopicKey,
        _: Outgoing,
    ) -> BrokerFuture<'a, Result<push_runtime::Cursor, BrokerError>> {
        let error = BrokerError::new(self.0, format!("failing on purpose ({:?})", self.0));
        Box::pin(std::future::ready(Err(error)))
    }

    fn subscribe<'a>(
        &'a self,
        _: &'a TopicKey,
        _: push_runtime::Start,
    ) -> BrokerFuture<'a, Result<Subscription, BrokerSubscribeError>> {
        let error = BrokerError::new(self.0, "failing on purpose");
        Box::pin(std::future::ready(Err(error.into())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_failure_is_answered_by_its_kind() {
    for (kind, status) in [
        (BrokerErrorKind::Capacity, 503),
        (BrokerErrorKind::Unavailable, 503),
        (BrokerErrorKind::Other, 500),
    ] {
        let broker = Arc::new(FailingBroker(kind));
        let hub = Hub::<TestEvent>::with_broker(broker, HubConfig::default());
        let app = ChannelRouter::new(hub)
            .publish(only_with_token)
            .limits(Limits::default().retry_after(Duration::from_secs(7)))
            .into_router();
        let server = Server::start(app).await;
        let response = post(&server, "/t/room")
            .header("content-type", "application/json")
            .body(r#""ping""#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{kind:?}");
        let retry_after = response.headers().get("retry-after").cloned();
        let body = response.text().await.unwrap();
        if status == 503 {
            assert_eq!(retry_after.unwrap(), "7", "{kind:?}");
            assert!(body.contains("failing on purpose"), "{kind:?}: {body}");
        } else {
            assert!(retry_after.is_none(), "{kind:?}");
            assert_eq!(body, "the event could not be published");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_finding_the_histories_full_is_answered_503() {
    let mut config = HubConfig::default();
    config.max_total_history_bytes = 150;
    let hub = Hub::<TestEvent>::with_config(config);
    let app = ChannelRouter::new(hub.clone())
        .publish(only_with_token)
        .limits(Limits::default().retry_after(Duration::from_secs(3)))
        .into_router();
    let server = Server::start(app).await;
    hub.publish("held", TestEvent::Note("x".repeat(90)))
        .await
        .unwrap();
    // Read, so the broker may not evict it to make room.
    let mut reader = open(&server, Transport::Sse, "/t/held/sse").await;
    reader.ready().await;
    let body = serde_json::to_string(&TestEvent::Note("y".repeat(90))).unwrap();
    let response = post(&server, "/t/other")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "3");
    let text = response.text().await.unwrap();
    assert!(text.contains("no room for an event of"), "{text}");
}

/// A hub whose publishers are paced: `ahead` events at most, `max_wait` each.
fn paced_hub(ahead: u64, max_wait: Duration, history_len: usize) -> Hub<TestEvent> {
    let mut config = HubConfig::default();
    config.history_len = history_len;
    config.backpressure = Some(Backpressure::new().ahead(ahead).max_wait(max_wait));
    Hub::with_config(config)
}

/// A subscriber that keeps up: takes what there is, spends a (virtual)
/// millisecond on it as a socket write would, comes back. Publishes the
/// sequence number of the newest event it took.
fn keep_up(mut subscription: Subscription) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let taken = Arc::new(AtomicU64::new(0));
    let position = Arc::clone(&taken);
    let task = tokio::spawn(async move {
        let mut batch = Vec::new();
        loop {
            batch.clear();
            subscription.next_batch(&mut batch, 16).await;
            position.store(subscription.position().seq(), Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    (taken, task)
}

/// With `Backpressure::ahead(2)`, a publisher that awaits each publish is
/// never more than 2 events ahead of a subscriber that keeps up, even one
/// that is busy (its millisecond of writing) when events are appended.
/// Without pacing the publisher, which never waits, would finish all 50
/// before the subscriber took one.
#[tokio::test(start_paused = true)]
async fn a_paced_publisher_stays_within_its_distance_of_a_subscriber_that_keeps_up() {
    let hub = paced_hub(2, Duration::from_secs(3600), 1024);
    let (taken, task) = keep_up(hub.subscribe("t", Start::Now, None).await.unwrap());
    for n in 1..=50 {
        let cursor = hub.publish("t", note(n)).await.unwrap();
        let seen = taken.load(Ordering::SeqCst);
        assert!(
            seen + 2 >= cursor.seq(),
            "published {} while the subscriber had taken only {seen}",
            cursor.seq()
        );
    }
    task.abort();
}

/// A subscriber that stops reading holds a paced publisher once, for
/// `max_wait` and no longer, and not again: it is behind from then on.
/// The subscriber that keeps up still gets every event; the stalled one,
/// when it reads again, gets a gap for what the history no longer holds.
#[tokio::test(start_paused = true)]
async fn a_stalled_subscriber_holds_a_paced_publisher_once_and_for_its_bound_only() {
    let max_wait = Duration::from_millis(100);
    let hub = paced_hub(0, max_wait, 4);
    let mut stalled = hub.subscribe("t", Start::Now, None).await.unwrap();
    let (taken, task) = keep_up(hub.subscribe("t", Start::Now, None).await.unwrap());
    let started = tokio::time::Instant::now();
    hub.publish("t", note(1)).await.unwrap();
    assert_eq!(
        started.elapsed(),
        max_wait,
        "the first publish waits for the stalled subscriber, for max_wait exactly"
    );
    let started = tokio::time::Instant::now();
    for n in 2..=10 {
        let cursor = hub.publish("t", note(n)).await.unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), cursor.seq());
    }
    assert!(
        started.elapsed() < max_wait,
        "later publishes wait for the subscriber that keeps up only ({:?} for 9)",
        started.elapsed()
    );
    let mut batch = Vec::new();
    stalled.next_batch(&mut batch, 16).await;
    assert!(
        matches!(batch.first(), Some(Delivery::Gap(gap)) if gap.missed == Some(6)),
        "the stalled subscriber gets a gap for events 1 to 6: {batch:?}"
    );
    task.abort();
}

/// A subscriber that goes away is not waited for: dropping it releases a
/// publisher waiting for it at once, long before `max_wait`.
#[tokio::test(start_paused = true)]
async fn a_subscriber_that_goes_away_releases_a_paced_publisher() {
    let hub = paced_hub(0, Duration::from_secs(3600), 1024);
    let gone = hub.subscribe("t", Start::Now, None).await.unwrap();
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.publish("t", note(1)).await.unwrap() })
    };
    // Let the publish reach its wait (the runtime is idle, time paused).
    tokio::task::yield_now().await;
    assert!(!publisher.is_finished(), "it waits for the subscriber");
    let started = tokio::time::Instant::now();
    drop(gone);
    let cursor = publisher.await.unwrap();
    assert_eq!(cursor.seq(), 1);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

/// Without back-pressure (the default) a publish never waits for anyone.
#[tokio::test(start_paused = true)]
async fn an_unpaced_publish_waits_for_no_subscriber() {
    let hub = Hub::<TestEvent>::new();
    let _stalled = hub.subscribe("t", Start::Now, None).await.unwrap();
    let started = tokio::time::Instant::now();
    for n in 1..=10 {
        hub.publish("t", note(n)).await.unwrap();
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
}

/// The publish route of a paced hub answers once the SSE subscriber that
/// was waiting has the event (it was written to its socket in the step
/// that took it), and that subscriber reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_route_of_a_paced_hub_answers_and_delivers() {
    let hub = paced_hub(0, Duration::from_secs(30), 1024);
    let server = server(&hub).await;
    let mut conn = open(&server, Transport::Sse, "/t/room/sse").await;
    conn.ready().await;
    for n in 1..=5 {
        let response = post(&server, "/t/room")
            .header("content-type", "application/json")
            .body(format!(r#"{{"note":"n{n}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let frame = conn.next_frame().await;
        assert_eq!(frame.data, serde_json::json!({ "note": format!("n{n}") }));
    }
}

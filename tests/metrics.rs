//! `push_runtime::metrics`: the figures an operator scrapes at `/metrics`
//! move as the traffic does. Each test builds its own hub and its own
//! `Metrics` (nothing is global), so tests of this binary running at once
//! never see each other's figures.
//!
//! The Redis test needs `redis-server` on `PATH` (it runs its own, on a
//! free port, to cut its connections); without one it says why and passes,
//! except under CI.

mod support;

use futures_util::StreamExt;
use push_runtime::broker::{RedisBroker, RedisConfig};
use push_runtime::metrics::{CONTENT_TYPE, Metrics};
use push_runtime::{
    AuthRequest, ChannelRouter, Cursor, Hub, HubConfig, IframeConfig, Limits, PollConfig,
    Principal, Refusal, SseConfig, Start, WsConfig,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::channel::{TestEvent, note};
use support::redis_setup::OwnRedis;
use support::{PATIENCE, Server, TRANSPORTS, Transport, open, refused};

/// The samples of one scrape: `name{labels}` to value.
struct Samples(HashMap<String, f64>);

impl Samples {
    fn parse(text: &str) -> Self {
        let mut samples = HashMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value = match value {
                "+Inf" => f64::INFINITY,
                value => value.parse().expect("a number"),
            };
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "{series} rendered twice"
            );
        }
        Self(samples)
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in the scrape: {:?}", self.0.keys()))
    }

    fn hub(&self, name: &str) -> f64 {
        self.get(&format!("{name}{{channel=\"/t\"}}"))
    }

    fn connections(&self, transport: &str) -> f64 {
        self.get(&format!(
            "push_connections{{channel=\"/t\",transport=\"{transport}\"}}"
        ))
    }

    fn gaps(&self, cause: &str) -> f64 {
        self.get(&format!(
            "push_gaps_total{{channel=\"/t\",cause=\"{cause}\"}}"
        ))
    }
}

/// `GET /metrics`, checked to be the Prometheus text format.
async fn scrape(server: &Server) -> Samples {
    let response = reqwest::get(server.url("/metrics")).await.expect("scrape");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        CONTENT_TYPE
    );
    Samples::parse(&response.text().await.expect("scrape body"))
}

/// Scrapes until `condition` holds, bounded by [`PATIENCE`]: for what the
/// server counts after the client saw it (a socket's close, a write's end).
async fn scrape_until(
    server: &Server,
    what: &str,
    condition: impl Fn(&Samples) -> bool,
) -> Samples {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let samples = scrape(server).await;
        if condition(&samples) {
            return samples;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn route(transport: Transport, query: &str) -> String {
    format!("/t/room/{}?{query}", transport.route_name())
}

/// Quick heartbeats and pings, so that a closed connection is noticed soon.
fn routes(hub: &Hub<TestEvent>) -> ChannelRouter<TestEvent> {
    ChannelRouter::new(hub.clone())
        .sse(SseConfig::default().heartbeat(Duration::from_millis(100)))
        .websocket(WsConfig::default().ping_interval(Duration::from_millis(200)))
        .iframe(IframeConfig::default().heartbeat(Duration::from_millis(100)))
        .poll(PollConfig::default().long_poll_timeout(Duration::from_millis(300)))
}

async fn serve(hub: &Hub<TestEvent>, routes: ChannelRouter<TestEvent>) -> Server {
    let metrics = Metrics::new().hub(hub);
    Server::start(routes.into_router().merge(metrics.router())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_publishes_and_deliveries_move_on_every_transport() {
    let hub = Hub::<TestEvent>::new();
    let server = serve(&hub, routes(&hub)).await;
    let before = scrape(&server).await;
    for transport in TRANSPORTS {
        assert_eq!(before.connections(transport.route_name()), 0.0);
    }
    assert_eq!(before.hub("push_events_published_total"), 0.0);
    assert_eq!(before.hub("push_events_delivered_total"), 0.0);
    assert_eq!(before.hub("push_publish_duration_seconds_count"), 0.0);

    let mut conns = Vec::new();
    for transport in TRANSPORTS {
        let mut conn = open(&server, transport, &route(transport, "")).await;
        conn.ready().await;
        conns.push(conn);
    }
    // The streams are open until closed; a poll counts only while answered.
    let open_now = scrape(&server).await;
    for name in ["sse", "ws", "iframe"] {
        assert_eq!(open_now.connections(name), 1.0, "{name}");
    }
    assert_eq!(open_now.hub("push_subscribed_topics"), 1.0);

    const EVENTS: usize = 3;
    for n in 0..EVENTS {
        hub.publish("room", note(n)).await.expect("publish");
    }
    for conn in &mut conns {
        assert_eq!(conn.frames(EVENTS).await.len(), EVENTS);
    }
    let after = scrape(&server).await;
    assert_eq!(after.hub("push_events_published_total"), EVENTS as f64);
    assert_eq!(
        after.hub("push_publish_duration_seconds_count"),
        EVENTS as f64
    );
    assert_eq!(
        after.get("push_publish_duration_seconds_bucket{channel=\"/t\",le=\"+Inf\"}"),
        EVENTS as f64
    );
    // Each event once to each of the five subscribers: the streams take
    // it from the history once, the polls in exactly one answer each.
    assert_eq!(
        after.hub("push_events_delivered_total"),
        (EVENTS * TRANSPORTS.len()) as f64
    );
    assert_eq!(after.gaps("slow_client"), 0.0);
    assert!(after.hub("push_written_bytes_total") > before.hub("push_written_bytes_total"));

    drop(conns);
    scrape_until(&server, "every connection closed", |samples| {
        TRANSPORTS
            .iter()
            .all(|t| samples.connections(t.route_name()) == 0.0)
            && samples.hub("push_subscribed_topics") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_written_are_the_bytes_the_client_received() {
    let hub = Hub::<TestEvent>::new();
    let server = serve(&hub, ChannelRouter::new(hub.clone())).await;
    let response = reqwest::get(server.url("/t/room/sse")).await.expect("sse");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    // The prelude ends with `push.ready`'s block.
    while !String::from_utf8_lossy(&received).contains("push.ready") {
        received.extend_from_slice(&body.next().await.expect("prelude").expect("bytes"));
    }
    for n in 0..4 {
        hub.publish("room", note(n)).await.expect("publish");
    }
    while String::from_utf8_lossy(&received)
        .matches("\nevent: note\n")
        .count()
        < 4
    {
        let chunk = tokio::time::timeout(PATIENCE, body.next())
            .await
            .expect("events in time");
        received.extend_from_slice(&chunk.expect("events").expect("bytes"));
    }
    let received = received.len() as f64;
    // Counted when hyper lets go of a chunk, just after writing it.
    scrape_until(&server, "the written count catches up", |samples| {
        samples.hub("push_written_bytes_total") >= received
    })
    .await;
    let samples = scrape(&server).await;
    assert_eq!(samples.hub("push_written_bytes_total"), received);
    assert_eq!(samples.hub("push_buffered_bytes"), 0.0);
}

#[tokio::test]
async fn gaps_are_counted_by_cause() {
    let mut config = HubConfig::default();
    config.history_len = 2;
    let hub = Hub::<TestEvent>::with_config(config);
    let metrics = Metrics::new().hub(&hub);
    let samples = || Samples::parse(&metrics.render());
    let mut items = Vec::new();

    // Behind by more than the ring holds: a slow client's gap.
    let mut slow = hub.subscribe("room", Start::Now, None).await.unwrap();
    let mut last = None;
    for n in 0..5 {
        last = Some(hub.publish("room", note(n)).await.unwrap());
    }
    slow.fill(&mut items, 10);
    assert_eq!(items.len(), 3, "a gap, then the two events kept");
    let now = samples();
    assert_eq!(now.gaps("slow_client"), 1.0);
    assert_eq!(now.gaps("trimmed_history"), 0.0);
    assert_eq!(now.hub("push_events_delivered_total"), 2.0);

    // Resuming from before the oldest event kept.
    let last = last.unwrap();
    let early = Cursor::new(last.epoch(), 1);
    let mut resumed = hub
        .subscribe("room", Start::After(early), None)
        .await
        .unwrap();
    items.clear();
    resumed.fill(&mut items, 10);
    assert_eq!(items.len(), 3);
    assert_eq!(samples().gaps("trimmed_history"), 1.0);

    // Resuming from another epoch (a restarted node, a lost history).
    let other = Cursor::new(last.epoch().wrapping_add(1), 3);
    let mut elsewhere = hub
        .subscribe("room", Start::After(other), None)
        .await
        .unwrap();
    items.clear();
    elsewhere.fill(&mut items, 10);
    let now = samples();
    assert_eq!(now.gaps("epoch_change"), 1.0);
    assert_eq!(now.gaps("slow_client"), 1.0, "unchanged");
    assert_eq!(now.gaps("lost"), 0.0);
    assert_eq!(now.hub("push_events_delivered_total"), 6.0);
}

/// `?ticket=`: `ok` forever, `short` for 300 ms, `gone` already expired,
/// anything else refused.
async fn authorize(request: AuthRequest) -> Result<Principal, Refusal> {
    let query = request.parts.uri.query().unwrap_or_default();
    let ticket = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("ticket="));
    let principal = Principal::new("someone");
    match ticket {
        Some("ok") => Ok(principal),
        Some("short") => Ok(principal.expires_in(Duration::from_millis(300))),
        Some("gone") => Ok(principal.expires_at(SystemTime::now() - Duration::from_secs(1))),
        _ => Err(Refusal::unauthorized("a ticket is required")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_expiries_and_limits_are_counted() {
    let hub = Hub::<TestEvent>::new();
    let routes = routes(&hub)
        .authorize(authorize)
        .limits(Limits::default().max_connections(1));
    let server = serve(&hub, routes).await;

    let (status, _) = refused(
        &server,
        Transport::Sse,
        &route(Transport::Sse, "ticket=bad"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = refused(
        &server,
        Transport::WebSocket,
        &route(Transport::WebSocket, ""),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = refused(
        &server,
        Transport::Sse,
        &route(Transport::Sse, "ticket=gone"),
    )
    .await;
    assert_eq!(status, 401);
    let samples = scrape(&server).await;
    assert_eq!(
        samples.get("push_authorization_refusals_total{channel=\"/t\",reason=\"hook\"}"),
        2.0
    );
    assert_eq!(
        samples.get("push_authorization_refusals_total{channel=\"/t\",reason=\"expired\"}"),
        1.0
    );
    assert_eq!(samples.hub("push_authorization_expiries_total"), 0.0);

    // The one connection allowed, then one too many.
    let mut short = open(
        &server,
        Transport::Sse,
        &route(Transport::Sse, "ticket=short"),
    )
    .await;
    short.ready().await;
    let (status, _) = refused(&server, Transport::Sse, &route(Transport::Sse, "ticket=ok")).await;
    assert_eq!(status, 503);
    assert_eq!(
        scrape(&server).await.hub("push_refused_at_limit_total"),
        1.0
    );

    // The short authorization ends the stream with `push.expired`.
    let last = short.next_frame().await;
    assert_eq!(last.event, "push.expired");
    let samples = scrape_until(&server, "the expired stream closed", |samples| {
        samples.connections("sse") == 0.0
    })
    .await;
    assert_eq!(samples.hub("push_authorization_expiries_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_broker_reports_its_health() {
    let test = "the_redis_broker_reports_its_health";
    let Some(redis) = OwnRedis::start(test).await else {
        return;
    };
    let url = redis.url();
    let config = RedisConfig::new(&url)
        .epoch_check_interval(Duration::from_millis(100))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100));
    let broker = Arc::new(RedisBroker::connect(config).await.expect("connect"));
    let hub = Hub::<TestEvent>::with_broker(broker, HubConfig::default());
    let metrics = Metrics::new().hub(&hub);
    let samples = || Samples::parse(&metrics.render());
    let wait = async |what: &str, condition: &dyn Fn(&Samples) -> bool| {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !condition(&samples()) {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let broker = |name: &str| format!("{name}{{broker=\"0\"}}");

    let mut reader = hub.subscribe("room", Start::Now, None).await.unwrap();
    wait("the reader connected", &|s| {
        s.get(&broker("push_broker_connected")) == 1.0
    })
    .await;
    let now = samples();
    assert_eq!(now.get(&broker("push_broker_mirrored_topics")), 1.0);
    assert_eq!(now.get(&broker("push_broker_reconnects_total")), 0.0);

    let cursor = hub.publish("room", note(1)).await.expect("publish");
    let mut items = Vec::new();
    tokio::time::timeout(PATIENCE, reader.next_batch(&mut items, 8))
        .await
        .expect("the event comes back from redis");
    assert_eq!(items[0].cursor(), cursor);
    wait("caught up at an epoch check", &|s| {
        s.get(&broker("push_broker_reader_lag_events")) == 0.0
    })
    .await;

    // Every client connection dropped: the reader reconnects.
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
    wait("the reader reconnected", &|s| {
        s.get(&broker("push_broker_reconnects_total")) >= 1.0
            && s.get(&broker("push_broker_connected")) == 1.0
    })
    .await;
}

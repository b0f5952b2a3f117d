//! The typed client against the real server routes, on all five transports:
//! delivery of every variant shape, order, resume across forced disconnects,
//! gaps, filters and permanent errors; and `Transport::Auto`, which settles on
//! WebSocket against the full router and falls back to SSE when a proxy
//! drops the upgrade. Over `https://`/`wss://` (a TLS relay with a
//! certificate from an authority made in the test) on every transport, an
//! untrusted certificate refused, and a channel whose authorization hook
//! wants a bearer token (a header, a provider, the typed 401/403).
//!
//! Every test waits on items (the client's `Ready`, events), never on sleeps,
//! and runs under a deadline so that a hang fails instead of blocking CI.

// Only the relays: the rest of `support` is the raw wire readers of `conformance.rs`.
#[path = "support/relay.rs"]
mod relay;
#[path = "support/tls.rs"]
mod tls;

use futures_util::StreamExt;
use push_runtime::client::{
    Client, ClientConfig, ClientError, Credentials, CredentialsReason, Subscription, Transport,
    Update,
};
use push_runtime::{
    AuthRequest, Channel, ChannelRouter, Cursor, EventKind, Gap, Hub, HubConfig, Principal, Refusal,
};
use relay::Relay;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tls::{Authority, TlsRelay};

/// Every variant shape serde has, externally tagged, one renamed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Feed {
    Tick,
    Pair(u32, String),
    Wrapped(String),
    #[serde(rename = "note")]
    Note {
        id: u64,
        text: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FeedKind {
    Tick,
    Pair,
    Wrapped,
    Note,
}

impl EventKind for FeedKind {
    const ALL: &'static [Self] = &[
        FeedKind::Tick,
        FeedKind::Pair,
        FeedKind::Wrapped,
        FeedKind::Note,
    ];
    const NAMES: &'static [&'static str] = &["Tick", "Pair", "Wrapped", "note"];

    fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }

    fn index(self) -> usize {
        self as usize
    }
}

// Written by hand as `#[push_channel(path = "/feed")]` would generate it.
impl Channel for Feed {
    type Kind = FeedKind;
    const PATH: &'static str = "/feed";

    fn kind(&self) -> FeedKind {
        match self {
            Feed::Tick => FeedKind::Tick,
            Feed::Pair(..) => FeedKind::Pair,
            Feed::Wrapped(_) => FeedKind::Wrapped,
            Feed::Note { .. } => FeedKind::Note,
        }
    }
}

/// The same channel as seen by an older client that only knows two variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum OldFeed {
    Tick,
    #[serde(rename = "note")]
    Note {
        id: u64,
        text: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum OldFeedKind {
    Tick,
    Note,
}

impl EventKind for OldFeedKind {
    const ALL: &'static [Self] = &[OldFeedKind::Tick, OldFeedKind::Note];
    const NAMES: &'static [&'static str] = &["Tick", "note"];

    fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl Channel for OldFeed {
    type Kind = OldFeedKind;
    const PATH: &'static str = "/feed";

    fn kind(&self) -> OldFeedKind {
        match self {
            OldFeed::Tick => OldFeedKind::Tick,
            OldFeed::Note { .. } => OldFeedKind::Note,
        }
    }
}

/// The n-th test event: the shapes in turn.
fn event(n: u64) -> Feed {
    match n % 4 {
        0 => Feed::Tick,
        1 => Feed::Pair(n as u32, format!("pair {n}")),
        2 => Feed::Wrapped(format!("wrapped \"{n}\"\nwith a line break")),
        _ => Feed::Note {
            id: n,
            text: format!("note {n} é ✓"),
        },
    }
}

/// How long a whole test may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

async fn within<T>(future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("test did not finish within {DEADLINE:?}"),
    }
}

/// Serves `hub`'s routes on `127.0.0.1:0`.
async fn serve(hub: &Hub<Feed>) -> SocketAddr {
    serve_app(ChannelRouter::new(hub.clone()).into_router()).await
}

/// Serves `app` on `127.0.0.1:0`.
async fn serve_app(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the server");
    let address = listener.local_addr().expect("server address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

fn config() -> ClientConfig {
    ClientConfig::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(200))
        .max_retries(Some(50))
        .poll_interval(Duration::from_millis(20))
}

fn client<C: Channel>(base: &str) -> Client<C> {
    Client::with_config(base, config()).expect("client")
}

async fn publish(hub: &Hub<Feed>, topic: &str, event: &Feed) -> Cursor {
    hub.publish(topic, event).await.expect("publish")
}

/// The next item that is not `Reconnecting`.
async fn next_update<C: Channel + std::fmt::Debug>(stream: &mut Subscription<C>) -> Update<C> {
    loop {
        match stream.next().await {
            Some(Ok(Update::Reconnecting { .. })) => {}
            Some(Ok(update)) => return update,
            Some(Err(error)) => panic!("unexpected error: {error}"),
            None => panic!("the stream ended"),
        }
    }
}

async fn wait_ready<C: Channel + std::fmt::Debug>(stream: &mut Subscription<C>) -> Cursor {
    match next_update(stream).await {
        Update::Ready { cursor } => cursor,
        other => panic!("expected ready, got {other:?}"),
    }
}

async fn next_event<C: Channel + std::fmt::Debug>(stream: &mut Subscription<C>) -> (Cursor, C) {
    loop {
        match next_update(stream).await {
            Update::Event { cursor, event } => return (cursor, event),
            Update::Ready { .. } => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

macro_rules! all_transports {
    ($($scenario:ident),* $(,)?) => {
        all_transports!(@mod sse, Sse; $($scenario),*);
        all_transports!(@mod websocket, WebSocket; $($scenario),*);
        all_transports!(@mod short_poll, ShortPoll; $($scenario),*);
        all_transports!(@mod long_poll, LongPoll; $($scenario),*);
        all_transports!(@mod iframe, Iframe; $($scenario),*);
    };
    (@mod $module:ident, $transport:ident; $($scenario:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::within(super::$scenario(super::Transport::$transport)).await;
                }
            )*
        }
    };
}

all_transports!(
    delivers_every_shape_in_order,
    resumes_after_forced_disconnects_without_loss_or_duplicates,
    reports_a_gap_when_resuming_from_beyond_the_history,
    reports_a_gap_across_epochs,
    filters_by_kind,
    rejects_a_bad_topic_with_the_servers_message,
    rejects_a_cursor_ahead_of_the_topic,
    skips_an_event_it_cannot_decode,
    skips_items_over_the_client_limit_and_loses_nothing_else,
    streams_over_tls_and_resumes_after_a_cut,
    refuses_an_untrusted_certificate_with_a_clear_error,
    streams_from_a_channel_that_requires_a_bearer_token,
    renews_a_token_that_expires_mid_stream_and_loses_nothing,
    delivers_nothing_past_an_expiry_without_a_fresh_token,
);

async fn delivers_every_shape_in_order(transport: Transport) {
    let hub = Hub::<Feed>::new();
    let base = format!("http://{}", serve(&hub).await);
    let mut stream = client::<Feed>(&base)
        .subscribe("room-1")
        .transport(transport)
        .stream();
    let ready = wait_ready(&mut stream).await;
    assert_eq!(stream.position(), Some(ready));

    let mut published = Vec::new();
    for n in 0..40 {
        let sent = event(n);
        published.push((publish(&hub, "room-1", &sent).await, sent));
    }
    for expected in &published {
        assert_eq!(&next_event(&mut stream).await, expected);
        assert_eq!(stream.position(), Some(expected.0));
    }
}

async fn resumes_after_forced_disconnects_without_loss_or_duplicates(transport: Transport) {
    const BATCH: u64 = 75;
    const BATCHES: u64 = 4;
    const TOTAL: usize = (BATCH * BATCHES) as usize;
    // One cut in the middle of each batch but the last; each cut releases the
    // next batch, which can only arrive over a new connection.
    const CUT_AT: [usize; 3] = [40, 115, 190];
    let hub = Hub::<Feed>::new();
    let relay = Relay::start(serve(&hub).await).await.expect("relay");
    let mut stream = client::<Feed>(&relay.url())
        .subscribe("busy")
        .transport(transport)
        .stream();
    wait_ready(&mut stream).await;

    // Publishing goes on while the reader is cut off and reconnects.
    let (go, mut batches) = tokio::sync::mpsc::channel::<()>(BATCHES as usize);
    let publisher = tokio::spawn({
        let hub = hub.clone();
        async move {
            let mut published = Vec::new();
            for batch in 0..BATCHES {
                batches.recv().await.expect("a go for every batch");
                for n in batch * BATCH..(batch + 1) * BATCH {
                    let sent = event(n);
                    published.push((publish(&hub, "busy", &sent).await, sent));
                    tokio::task::yield_now().await;
                }
            }
            published
        }
    });
    go.send(()).await.expect("publisher");

    let mut received = Vec::new();
    let mut reconnections = 0;
    let mut readies = 0;
    while received.len() < TOTAL {
        match stream.next().await {
            Some(Ok(Update::Event { cursor, event })) => {
                received.push((cursor, event));
                if CUT_AT.contains(&received.len()) {
                    relay.cut();
                    go.send(()).await.expect("publisher");
                }
            }
            Some(Ok(Update::Reconnecting { .. })) => reconnections += 1,
            Some(Ok(Update::Ready { cursor })) => {
                // A reconnection resumes exactly after the last event seen.
                assert_eq!(Some(cursor), received.last().map(|(cursor, _)| *cursor));
                readies += 1;
            }
            other => panic!("unexpected item: {other:?}"),
        }
    }
    let published = publisher.await.expect("publisher");
    assert_eq!(received, published);
    assert!(relay.accepted() > CUT_AT.len());
    if let Transport::ShortPoll | Transport::LongPoll = transport {
        // A cut between two polls only closes an idle pooled connection,
        // which the HTTP client replaces without an error: not every cut is
        // a reconnection, but every reconnection is followed by a `Ready`.
        assert!(readies <= reconnections, "{readies} > {reconnections}");
    } else {
        assert!(
            reconnections >= CUT_AT.len(),
            "{reconnections} reconnections"
        );
        assert_eq!(readies, CUT_AT.len());
    }
}

/// A hub that keeps only 4 events per topic.
fn small_hub() -> Hub<Feed> {
    let mut config = HubConfig::default();
    config.history_len = 4;
    Hub::with_config(config)
}

async fn reports_a_gap_when_resuming_from_beyond_the_history(transport: Transport) {
    let hub = small_hub();
    let base = format!("http://{}", serve(&hub).await);
    let mut cursors = Vec::new();
    for n in 0..10 {
        cursors.push(publish(&hub, "old", &event(n)).await);
    }
    // Resume after the 2nd event: the 3rd to the 6th are gone.
    let mut stream = client::<Feed>(&base)
        .subscribe("old")
        .transport(transport)
        .after(cursors[1])
        .stream();
    let mut gap = None;
    let mut events = Vec::new();
    while events.len() < 4 {
        match next_update(&mut stream).await {
            Update::Gap(seen) => {
                assert!(
                    events.is_empty(),
                    "the gap comes before the events after it"
                );
                assert_eq!(gap.replace(seen), None, "one gap");
            }
            Update::Event { cursor, event } => events.push((cursor, event)),
            Update::Ready { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        gap,
        Some(Gap {
            from: cursors[1],
            to: cursors[5],
            missed: Some(4),
        })
    );
    let expected: Vec<_> = (6..10).map(|n| (cursors[n as usize], event(n))).collect();
    assert_eq!(events, expected);
    assert_eq!(stream.position(), Some(cursors[9]));
}

async fn reports_a_gap_across_epochs(transport: Transport) {
    let hub = small_hub();
    let base = format!("http://{}", serve(&hub).await);
    let newest = publish(&hub, "epochs", &event(0)).await;
    let elsewhere = Cursor::new(newest.epoch().wrapping_add(1), 1);
    let mut stream = client::<Feed>(&base)
        .subscribe("epochs")
        .transport(transport)
        .after(elsewhere)
        .stream();
    loop {
        match next_update(&mut stream).await {
            Update::Gap(gap) => {
                assert_eq!(gap.from, elsewhere);
                assert_eq!(gap.missed, None);
                assert_eq!(gap.to.epoch(), newest.epoch());
                break;
            }
            Update::Ready { .. } => {}
            other => panic!("expected a gap first, got {other:?}"),
        }
    }
}

async fn filters_by_kind(transport: Transport) {
    let hub = Hub::<Feed>::new();
    let base = format!("http://{}", serve(&hub).await);
    let mut stream = client::<Feed>(&base)
        .subscribe("filtered")
        .transport(transport)
        .kinds([FeedKind::Pair, FeedKind::Note])
        .stream();
    wait_ready(&mut stream).await;
    let mut expected = Vec::new();
    for n in 0..20 {
        let sent = event(n);
        let cursor = publish(&hub, "filtered", &sent).await;
        if matches!(sent, Feed::Pair(..) | Feed::Note { .. }) {
            expected.push((cursor, sent));
        }
    }
    for wanted in &expected {
        assert_eq!(&next_event(&mut stream).await, wanted);
    }
}

/// The first item, which must be a permanent error; the stream then ends.
async fn permanent_error<C: Channel + std::fmt::Debug>(mut stream: Subscription<C>) -> ClientError {
    let error = match stream.next().await {
        Some(Err(error)) => error,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(!error.is_retryable(), "{error}");
    assert!(
        stream.next().await.is_none(),
        "the stream ends after a permanent error"
    );
    error
}

async fn rejects_a_bad_topic_with_the_servers_message(transport: Transport) {
    let hub = Hub::<Feed>::new();
    let base = format!("http://{}", serve(&hub).await);
    let bad = "no spaces allowed";
    let server_says = hub.topic(bad).expect_err("an invalid topic").to_string();
    let error = permanent_error(
        client::<Feed>(&base)
            .subscribe(bad)
            .transport(transport)
            .stream(),
    )
    .await;
    match error {
        ClientError::Rejected { status, message } => {
            assert_eq!(status, 400);
            assert!(
                message.contains(&server_says) || server_says.contains(&message),
                "{message}"
            );
        }
        other => panic!("expected a rejection, got {other}"),
    }
}

async fn rejects_a_cursor_ahead_of_the_topic(transport: Transport) {
    let hub = Hub::<Feed>::new();
    let base = format!("http://{}", serve(&hub).await);
    let newest = publish(&hub, "short", &event(0)).await;
    let ahead = Cursor::new(newest.epoch(), newest.seq() + 100);
    let stream = client::<Feed>(&base)
        .subscribe("short")
        .transport(transport)
        .after(ahead)
        .stream();
    match permanent_error(stream).await {
        ClientError::Rejected {
            status: 400,
            message,
        } => {
            assert!(message.contains(&ahead.to_string()), "{message}");
        }
        other => panic!("expected a 400 rejection, got {other}"),
    }
}

async fn skips_an_event_it_cannot_decode(transport: Transport) {
    let hub = Hub::<Feed>::new();
    let base = format!("http://{}", serve(&hub).await);
    let mut stream = client::<OldFeed>(&base)
        .subscribe("mixed")
        .transport(transport)
        .stream();
    wait_ready(&mut stream).await;
    let unknown = publish(&hub, "mixed", &Feed::Pair(1, "new".into())).await;
    let known = publish(&hub, "mixed", &Feed::Tick).await;
    match stream.next().await {
        Some(Err(ClientError::Decode { cursor, event, .. })) => {
            assert_eq!(cursor, unknown);
            assert_eq!(event, "Pair");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(stream.position(), Some(unknown));
    assert_eq!(next_event(&mut stream).await, (known, OldFeed::Tick));
}

/// A client limit of 4 KiB: an event of 100 KiB is over it (and over a
/// poll answer's 64 KiB budget, so polls narrow down to it too).
const SMALL_LIMIT: usize = 4096;

fn big(n: u64) -> Feed {
    Feed::Wrapped(format!("{n:03}{}", "x".repeat(100 * 1024)))
}

/// What a subscription yields for each event: the event, or `None` for
/// one skipped as too large (with the cursor it named, if any).
type Seen<C> = (Cursor, Option<C>);

/// Reads until `want` events or skips have arrived, ignoring `Ready`
/// (a WebSocket is reopened after each skip) and, unless `strict`,
/// reconnections; any other item fails.
async fn read_with_skips<C: Channel + std::fmt::Debug>(
    stream: &mut Subscription<C>,
    want: usize,
    strict: bool,
) -> Vec<(Option<Cursor>, Option<C>)> {
    let mut seen = Vec::new();
    while seen.len() < want {
        match stream.next().await {
            Some(Ok(Update::Event { cursor, event })) => {
                assert_eq!(stream.position(), Some(cursor));
                seen.push((Some(cursor), Some(event)));
            }
            Some(Err(ClientError::TooLarge { limit, cursor })) => {
                assert_eq!(limit, SMALL_LIMIT);
                if cursor.is_some() {
                    assert_eq!(stream.position(), cursor);
                }
                seen.push((cursor, None));
            }
            Some(Ok(Update::Ready { .. })) => {}
            Some(Ok(Update::Reconnecting { .. })) if !strict => {}
            other => panic!("after {} items: {other:?}", seen.len()),
        }
    }
    seen
}

/// What `read_with_skips` must give for `published`: the cursor of a
/// skipped item is known except on SSE and the forever frame.
fn expected_with_skips(
    published: &[Seen<Feed>],
    transport: Transport,
) -> Vec<(Option<Cursor>, Option<Feed>)> {
    let named = !matches!(transport, Transport::Sse | Transport::Iframe);
    published
        .iter()
        .map(|(cursor, event)| match event {
            Some(event) => (Some(*cursor), Some(event.clone())),
            None => (named.then_some(*cursor), None),
        })
        .collect()
}

/// Publishes `events`, each as itself (`Some`) or as a big event (`None`).
async fn publish_mixed(hub: &Hub<Feed>, topic: &str, events: &[Option<Feed>]) -> Vec<Seen<Feed>> {
    let mut published = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let sent = event.clone().unwrap_or_else(|| big(n as u64));
        published.push((publish(hub, topic, &sent).await, event.clone()));
    }
    published
}

/// A server that takes events of up to 1 MiB and a client that reads items
/// of up to 4 KiB: each event over it is one `TooLarge` item (naming its
/// cursor where the transport knows it), in its place; every other event
/// arrives once, in order, and the stream goes on, from history and live.
/// On WebSocket the client finds the skipped item with a one-item poll and
/// reopens the socket after it; `Auto` stays on WebSocket.
async fn skips_items_over_the_client_limit_and_loses_nothing_else(transport: Transport) {
    let hub = Hub::<Feed>::new();
    let base = format!("http://{}", serve(&hub).await);
    let start = publish(&hub, "large", &Feed::Tick).await;
    // From history: small, big, small, big, big, small.
    let backlog = [
        Some(event(1)),
        None,
        Some(event(2)),
        None,
        None,
        Some(event(3)),
    ];
    let mut published = publish_mixed(&hub, "large", &backlog).await;
    let config = config().max_item_size(SMALL_LIMIT).max_retries(Some(0));
    let client = Client::<Feed>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("large")
        .transport(transport)
        .after(start)
        .stream();
    let got = read_with_skips(&mut stream, published.len(), true).await;
    assert_eq!(got, expected_with_skips(&published, transport));
    // Live: big first, then small, big, small.
    let live = publish_mixed(&hub, "large", &[None, Some(event(5)), None, Some(event(7))]).await;
    let got = read_with_skips(&mut stream, live.len(), true).await;
    assert_eq!(got, expected_with_skips(&live, transport));
    published.extend(live);
    assert_eq!(
        stream.position(),
        published.last().map(|(cursor, _)| *cursor)
    );
    assert_eq!(
        stream.transport(),
        match transport {
            Transport::Auto => Transport::WebSocket,
            other => other,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_skips_items_over_the_client_limit_on_websocket_without_falling_back() {
    // `read_with_skips` fails on a `Fallback` item.
    within(skips_items_over_the_client_limit_and_loses_nothing_else(
        Transport::Auto,
    ))
    .await;
}

/// A front without the polling routes (`404`).
async fn without_poll_route(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.uri().path().ends_with("/poll") {
        let not_found = (axum::http::StatusCode::NOT_FOUND, "no such route\n");
        return axum::response::IntoResponse::into_response(not_found);
    }
    next.run(request).await
}

/// Without a poll route to locate it, a WebSocket message over the limit
/// ends the stream with `TooLarge` (after what came before it), rather than
/// reconnecting into it again and again; `Auto` does not take the poll's
/// `404` for its own route missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_ends_on_an_item_over_the_limit_when_polls_are_missing() {
    within(async {
        let hub = Hub::<Feed>::new();
        let app: axum::Router = ChannelRouter::new(hub.clone())
            .into_router()
            .layer(axum::middleware::from_fn(without_poll_route));
        let base = format!("http://{}", serve_app(app).await);

        for transport in [Transport::WebSocket, Transport::Auto] {
            let topic = format!("no-polls-{transport:?}");
            let config = config().max_item_size(SMALL_LIMIT);
            let client = Client::<Feed>::with_config(&base, config).expect("client");
            let mut stream = client.subscribe(&topic).transport(transport).stream();
            wait_ready(&mut stream).await;
            let first = publish(&hub, &topic, &event(1)).await;
            publish(&hub, &topic, &big(2)).await;
            assert_eq!(next_event(&mut stream).await, (first, event(1)));
            match stream.next().await {
                Some(Err(ClientError::TooLarge {
                    limit: SMALL_LIMIT,
                    cursor: None,
                })) => {}
                other => panic!("{transport:?}: expected the end, got {other:?}"),
            }
            assert!(stream.next().await.is_none(), "{transport:?}");
            assert_eq!(stream.position(), Some(first));
        }
    })
    .await;
}

/// The poll that locates an item over the limit carries the subscription's
/// headers (here its bearer token, without which the route answers `401`)
/// and its event filter (events of other kinds in between are not items).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_locates_an_item_over_the_limit_with_its_credentials_and_filter() {
    within(async {
        let hub = Hub::<Feed>::new();
        let app: axum::Router = ChannelRouter::new(hub.clone())
            .authorize(bearer)
            .into_router();
        let base = format!("http://{}", serve_app(app).await);

        let config = config()
            .max_item_size(SMALL_LIMIT)
            .max_retries(Some(0))
            .header("authorization", "Bearer good")
            .expect("valid header");
        let client = Client::<Feed>::with_config(&base, config).expect("client");
        let mut stream = client
            .subscribe("private")
            .transport(Transport::WebSocket)
            .kinds([FeedKind::Wrapped, FeedKind::Note])
            .stream();
        wait_ready(&mut stream).await;
        let mut published = Vec::new();
        for event in [
            Feed::Tick,
            Feed::Wrapped("small".into()),
            Feed::Tick,
            big(1),
            Feed::Tick,
            big(2),
            Feed::Tick,
            event(3),
        ] {
            let cursor = publish(&hub, "private", &event).await;
            match &event {
                Feed::Tick => {}
                Feed::Wrapped(text) if text.len() > SMALL_LIMIT => published.push((cursor, None)),
                _ => published.push((cursor, Some(event))),
            }
        }
        let got = read_with_skips(&mut stream, published.len(), true).await;
        assert_eq!(got, expected_with_skips(&published, Transport::WebSocket));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_settles_on_websocket_and_stays_there_across_reconnections() {
    within(async {
        let hub = Hub::<Feed>::new();
        let relay = Relay::start(serve(&hub).await).await.expect("relay");
        let mut stream = client::<Feed>(&relay.url())
            .subscribe("auto")
            .transport(Transport::Auto)
            .stream();
        let ready = wait_ready(&mut stream).await;
        assert_eq!(stream.transport(), Transport::WebSocket);
        let first = (publish(&hub, "auto", &event(1)).await, event(1));
        assert_eq!(next_event(&mut stream).await, first);
        assert!(first.0 > ready);

        // Publish only once reconnected: the cut takes effect asynchronously,
        // and an event sent meanwhile could still use the old connection.
        relay.cut();
        loop {
            match stream.next().await {
                Some(Ok(Update::Reconnecting { .. })) => {}
                Some(Ok(Update::Ready { cursor })) => {
                    assert_eq!(cursor, first.0);
                    break;
                }
                other => panic!("expected a reconnection, got {other:?}"),
            }
        }
        let second = (publish(&hub, "auto", &event(2)).await, event(2));
        assert_eq!(next_event(&mut stream).await, second);
        assert_eq!(stream.transport(), Transport::WebSocket);
    })
    .await;
}

/// A front that forwards only plain HTTP routes: the WebSocket route is not
/// found. (A proxy that drops the hop-by-hop `Connection`/`Upgrade` headers
/// instead gets a `400` from the server, which `Auto` must take for a bad
/// request: see the protocol's error table.)
async fn without_websocket_route(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.uri().path().ends_with("/ws") {
        let not_found = (axum::http::StatusCode::NOT_FOUND, "no such route\n");
        return axum::response::IntoResponse::into_response(not_found);
    }
    next.run(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_sse_when_the_websocket_route_is_missing() {
    within(async {
        let hub = Hub::<Feed>::new();
        let app: axum::Router = ChannelRouter::new(hub.clone())
            .into_router()
            .layer(axum::middleware::from_fn(without_websocket_route));
        let base = format!("http://{}", serve_app(app).await);

        let mut stream = client::<Feed>(&base)
            .subscribe("behind-proxy")
            .transport(Transport::Auto)
            .stream();
        match stream.next().await {
            Some(Ok(Update::Fallback {
                from, to, cause, ..
            })) => {
                assert_eq!((from, to), (Transport::WebSocket, Transport::Sse));
                assert!(
                    matches!(cause, ClientError::Rejected { status: 404, .. }),
                    "{cause}"
                );
            }
            other => panic!("expected a fallback, got {other:?}"),
        }
        wait_ready(&mut stream).await;
        assert_eq!(stream.transport(), Transport::Sse);
        let sent = (publish(&hub, "behind-proxy", &event(3)).await, event(3));
        assert_eq!(next_event(&mut stream).await, sent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ends_on_a_bad_topic_without_falling_back() {
    within(async {
        let hub = Hub::<Feed>::new();
        let base = format!("http://{}", serve(&hub).await);
        let stream = client::<Feed>(&base)
            .subscribe("no spaces allowed")
            .transport(Transport::Auto)
            .stream();
        assert!(matches!(
            permanent_error(stream).await,
            ClientError::Rejected { status: 400, .. }
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iframe_resumes_at_once_each_time_the_server_ends_the_document() {
    within(async {
        let hub = Hub::<Feed>::new();
        // A document ends with `push.end` once it holds 2 KiB.
        let app: axum::Router = ChannelRouter::new(hub.clone())
            .iframe(push_runtime::IframeConfig::default().max_bytes(2048))
            .into_router();
        let base = format!("http://{}", serve_app(app).await);

        let mut stream = client::<Feed>(&base)
            .subscribe("long")
            .transport(Transport::Iframe)
            .stream();
        wait_ready(&mut stream).await;
        // One event at a time, so that each goes in its own chunk.
        let mut published = Vec::new();
        let mut received = Vec::new();
        let mut readies = 0;
        for n in 0..60 {
            published.push((publish(&hub, "long", &event(n)).await, event(n)));
            while received.len() < published.len() {
                match stream.next().await {
                    Some(Ok(Update::Event { cursor, event })) => received.push((cursor, event)),
                    Some(Ok(Update::Ready { cursor })) => {
                        assert_eq!(Some(cursor), received.last().map(|(cursor, _)| *cursor));
                        readies += 1;
                    }
                    other => panic!("push.end is no failure, got {other:?}"),
                }
            }
        }
        assert_eq!(received, published);
        assert!(readies >= 2, "{readies} new documents");
    })
    .await;
}

/// A channel whose payload JSON is written verbatim, raw line breaks and all.
#[push_runtime::push_channel(path = "/raw")]
#[derive(Clone, Debug, Serialize, Deserialize)]
enum RawFeed {
    Raw(Box<serde_json::value::RawValue>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_a_payload_with_raw_line_breaks_on_every_transport() {
    within(async {
        let hub = Hub::<RawFeed>::new();
        let app: axum::Router = ChannelRouter::new(hub.clone()).into_router();
        let base = format!("http://{}", serve_app(app).await);
        // LF, CRLF, a lone CR and an empty line, each where JSON allows whitespace.
        let text = "{\n  \"a\": [1,\r\n2],\r\"b\": \"x\"\n\n}";
        let raw = serde_json::value::RawValue::from_string(text.to_owned()).expect("JSON");
        let expected = serde_json::json!({"a": [1, 2], "b": "x"});
        for transport in [
            Transport::Sse,
            Transport::WebSocket,
            Transport::ShortPoll,
            Transport::LongPoll,
            Transport::Iframe,
        ] {
            let topic = format!("raw-{transport:?}");
            let mut stream = client::<RawFeed>(&base)
                .subscribe(&topic)
                .transport(transport)
                .stream();
            wait_ready(&mut stream).await;
            let mut published = Vec::new();
            for _ in 0..2 {
                let event = RawFeed::Raw(raw.clone());
                published.push(hub.publish(&topic, &event).await.expect("publish"));
            }
            for cursor in published {
                let (got, RawFeed::Raw(data)) = next_event(&mut stream).await;
                let data: serde_json::Value = serde_json::from_str(data.get()).expect("JSON");
                assert_eq!((got, data), (cursor, expected.clone()), "{transport:?}");
            }
        }
    })
    .await;
}

/// A backlog of large events larger than one poll answer's budget arrives
/// over several answers: the client asks for what it can hold (`limit=`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_read_a_backlog_of_large_events_over_several_answers() {
    within(async {
        let mut hub_config = HubConfig::default();
        hub_config.history_len = 64;
        let hub = Hub::<Feed>::with_config(hub_config);
        let address = serve(&hub).await;
        let start = publish(&hub, "backlog", &Feed::Tick).await;
        let events: Vec<Feed> = (0..40)
            .map(|n| Feed::Wrapped(format!("{n:03}{}", "x".repeat(200 * 1024))))
            .collect();
        for event in &events {
            publish(&hub, "backlog", event).await;
        }
        // An answer holds 16 items of 256 KiB: 4 MiB, fewer than the 8 MiB backlog.
        let item = 256 * 1024;
        assert!(item * ClientConfig::POLL_ANSWER_ITEMS < 40 * 200 * 1024);
        for transport in [Transport::ShortPoll, Transport::LongPoll] {
            let client = Client::<Feed>::with_config(
                &format!("http://{address}"),
                config().max_item_size(item).max_retries(Some(0)),
            )
            .expect("client");
            let mut stream = client
                .subscribe("backlog")
                .transport(transport)
                .after(start)
                .stream();
            let mut got = Vec::new();
            while got.len() < events.len() {
                match stream.next().await {
                    Some(Ok(Update::Event { event, .. })) => got.push(event),
                    Some(Ok(Update::Ready { .. })) => {}
                    other => panic!("{transport:?}: {other:?} after {} events", got.len()),
                }
            }
            assert!(got == events, "{transport:?}");
        }
    })
    .await;
}

/// A client trusting `authority`, for `https://` servers it signed for.
fn trusting(authority: &Authority) -> ClientConfig {
    config()
        .root_certificate_pem(authority.pem().as_bytes())
        .expect("the authority's certificate")
}

async fn streams_over_tls_and_resumes_after_a_cut(transport: Transport) {
    let hub = Hub::<Feed>::new();
    // client -(tls)-> TLS relay -> cuttable relay -> plain server.
    let relay = Relay::start(serve(&hub).await).await.expect("relay");
    let authority = Authority::new("push test ca");
    let secure = TlsRelay::start(relay.address(), authority.server_config()).await;
    let base = secure.url();
    assert!(base.starts_with("https://"));
    let client = Client::<Feed>::with_config(&base, trusting(&authority)).expect("client");
    let mut stream = client.subscribe("secure").transport(transport).stream();
    wait_ready(&mut stream).await;
    let mut published = Vec::new();
    for n in 0..10 {
        if n == 5 {
            // The TLS connection loses its upstream: the client reconnects over TLS.
            relay.cut();
        }
        let sent = event(n);
        published.push((publish(&hub, "secure", &sent).await, sent));
    }
    let mut received = Vec::new();
    while received.len() < published.len() {
        received.push(next_event(&mut stream).await);
    }
    assert_eq!(received, published);
}

async fn refuses_an_untrusted_certificate_with_a_clear_error(transport: Transport) {
    let hub = Hub::<Feed>::new();
    let plain = serve(&hub).await;
    let authority = Authority::new("push test ca");
    let secure = TlsRelay::start(plain, authority.server_config()).await;
    // Mozilla's roots only; then another private authority.
    let stranger = Authority::new("another ca");
    for config in [config(), trusting(&stranger)] {
        let client = Client::<Feed>::with_config(&secure.url(), config).expect("client");
        let stream = client.subscribe("secure").transport(transport).stream();
        match permanent_error(stream).await {
            ClientError::Tls { reason } => {
                assert!(reason.contains("UnknownIssuer"), "{reason}");
                assert!(reason.contains("root_certificate_pem"), "{reason}");
            }
            other => panic!("expected a tls error, got {other}"),
        }
    }
    // `https://` to a server that does not speak TLS.
    let client = Client::<Feed>::with_config(&format!("https://{plain}"), trusting(&authority))
        .expect("client");
    let stream = client.subscribe("secure").transport(transport).stream();
    match permanent_error(stream).await {
        ClientError::Tls { reason } => assert!(reason.contains("speak tls"), "{reason}"),
        other => panic!("expected a tls error, got {other}"),
    }
}

/// An authorization hook that wants `Authorization: Bearer good`.
async fn bearer(request: AuthRequest) -> Result<Principal, Refusal> {
    let token = request
        .parts
        .headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match token {
        Some("good") => Ok(Principal::new("ann")),
        Some(_) => Err(Refusal::forbidden("unknown token")),
        None => Err(Refusal::unauthorized("a bearer token is required")),
    }
}

async fn streams_from_a_channel_that_requires_a_bearer_token(transport: Transport) {
    let hub = Hub::<Feed>::new();
    let app: axum::Router = ChannelRouter::new(hub.clone())
        .authorize(bearer)
        .into_router();
    let base = format!("http://{}", serve_app(app).await);

    // A fixed header.
    let with_header = config()
        .header("authorization", "Bearer good")
        .expect("valid header");
    let client = Client::<Feed>::with_config(&base, with_header).expect("client");
    let mut stream = client.subscribe("private").transport(transport).stream();
    wait_ready(&mut stream).await;
    let first = publish(&hub, "private", &event(1)).await;
    assert_eq!(next_event(&mut stream).await, (first, event(1)));
    drop(stream);

    // A provider whose first token is refused (403): asked again, it gives a good one.
    let with_provider = config().credentials(|why: CredentialsReason| async move {
        let token = match why {
            CredentialsReason::Connect => "stale",
            CredentialsReason::Refused { status: 403, .. } => "good",
            _ => return None,
        };
        Credentials::bearer(token).ok()
    });
    let client = Client::<Feed>::with_config(&base, with_provider).expect("client");
    let mut stream = client
        .subscribe("private")
        .transport(transport)
        .after(first)
        .stream();
    match stream.next().await {
        Some(Ok(Update::Reauthorized { reason, .. })) => assert_eq!(
            reason,
            CredentialsReason::Refused {
                status: 403,
                message: "unknown token".to_owned()
            }
        ),
        other => panic!("expected a re-authorization, got {other:?}"),
    }
    assert_eq!(wait_ready(&mut stream).await, first);
    let second = publish(&hub, "private", &event(2)).await;
    assert_eq!(next_event(&mut stream).await, (second, event(2)));
    drop(stream);

    // Nothing: the typed 401 with the hook's message ends the stream.
    let client = Client::<Feed>::with_config(&base, config()).expect("client");
    match permanent_error(client.subscribe("private").transport(transport).stream()).await {
        ClientError::Unauthorized { status, message } => {
            assert_eq!(
                (status, message.as_str()),
                (401, "a bearer token is required")
            );
        }
        other => panic!("expected unauthorized, got {other}"),
    }
    // A provider that declines after a refusal: the refusal ends the stream.
    let declining = config().credentials(|why: CredentialsReason| async move {
        match why {
            CredentialsReason::Connect => Credentials::bearer("wrong").ok(),
            _ => None,
        }
    });
    let client = Client::<Feed>::with_config(&base, declining).expect("client");
    match permanent_error(client.subscribe("private").transport(transport).stream()).await {
        ClientError::Unauthorized { status: 403, .. } => {}
        other => panic!("expected forbidden, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_settles_on_wss_over_https() {
    within(async {
        let hub = Hub::<Feed>::new();
        let authority = Authority::new("push test ca");
        let secure = TlsRelay::start(serve(&hub).await, authority.server_config()).await;
        let client =
            Client::<Feed>::with_config(&secure.url(), trusting(&authority)).expect("client");
        let mut stream = client.subscribe("auto").transport(Transport::Auto).stream();
        wait_ready(&mut stream).await;
        assert_eq!(stream.transport(), Transport::WebSocket);
        let cursor = publish(&hub, "auto", &event(3)).await;
        assert_eq!(next_event(&mut stream).await, (cursor, event(3)));
    })
    .await;
}

/// Tokens that expire: `short-*` a second and a half after the hook first
/// sees them (so the expiry falls while the stream is live, however slowly
/// the machine connects), any other an hour after.
fn expiring_tokens() -> impl push_runtime::Authorize {
    let first_use = Arc::new(Mutex::new(HashMap::<String, std::time::SystemTime>::new()));
    move |request: AuthRequest| {
        let first_use = Arc::clone(&first_use);
        async move {
            let token = request
                .parts
                .headers
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .ok_or_else(|| Refusal::unauthorized("a bearer token is required"))?
                .to_owned();
            let lifetime = if token.starts_with("short-") {
                Duration::from_millis(1500)
            } else {
                Duration::from_secs(3600)
            };
            let since = *first_use
                .lock()
                .expect("tokens")
                .entry(token.clone())
                .or_insert_with(std::time::SystemTime::now);
            Ok(Principal::new(token).expires_at(since + lifetime))
        }
    }
}

async fn serve_expiring(hub: &Hub<Feed>) -> String {
    let app: axum::Router = ChannelRouter::new(hub.clone())
        .authorize(expiring_tokens())
        .into_router();
    let base = format!("http://{}", serve_app(app).await);
    base
}

/// A token expires mid-stream: the server ends the stream at the expiry,
/// the client asks its provider, gets a fresh token and resumes from where
/// the stream stood. Every event, published before or after the expiry,
/// arrives once and in order, and the re-authorization names the cursor of
/// the last item before it.
async fn renews_a_token_that_expires_mid_stream_and_loses_nothing(transport: Transport) {
    let hub = Hub::<Feed>::new();
    let base = serve_expiring(&hub).await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    let renewing = config().credentials(move |why: CredentialsReason| {
        let log = Arc::clone(&log);
        async move {
            let token = match &why {
                CredentialsReason::Connect => "short-1",
                CredentialsReason::Expired { .. } => "fresh",
                _ => return None,
            };
            log.lock().expect("log").push(why);
            Credentials::bearer(token).ok()
        }
    });
    let client = Client::<Feed>::with_config(&base, renewing).expect("client");
    let mut stream = client.subscribe("expiring").transport(transport).stream();
    let mut last = wait_ready(&mut stream).await;
    let mut published = vec![publish(&hub, "expiring", &event(1)).await];
    let mut received = Vec::new();
    let mut renewed_at = None;
    // Until the renewal: events as they come, the re-authorization once.
    while renewed_at.is_none() {
        match next_update(&mut stream).await {
            Update::Event { cursor, .. } => {
                received.push(cursor);
                last = cursor;
            }
            Update::Ready { cursor } => last = cursor,
            Update::Reauthorized { reason, .. } => {
                let CredentialsReason::Expired { cursor } = reason else {
                    panic!("expected an expiry, got {reason:?}");
                };
                assert_eq!(
                    cursor,
                    Some(last),
                    "the resume point is the last item's cursor"
                );
                renewed_at = cursor;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // After the renewal: more events, delivered on the fresh token.
    for n in 2..=4 {
        published.push(publish(&hub, "expiring", &event(n)).await);
    }
    while received.len() < published.len() {
        let (cursor, _) = next_event(&mut stream).await;
        received.push(cursor);
    }
    assert_eq!(received, published, "nothing lost, nothing twice, in order");
    assert_eq!(
        *asked.lock().expect("log"),
        [
            CredentialsReason::Connect,
            CredentialsReason::Expired { cursor: renewed_at }
        ]
    );
}

/// Without a fresh token the stream ends at the expiry with a typed error
/// naming the resume point, and nothing published afterwards reaches it.
async fn delivers_nothing_past_an_expiry_without_a_fresh_token(transport: Transport) {
    let hub = Hub::<Feed>::new();
    let base = serve_expiring(&hub).await;
    let declining = config().credentials(|why: CredentialsReason| async move {
        match why {
            CredentialsReason::Connect => Credentials::bearer("short-2").ok(),
            _ => None,
        }
    });
    let client = Client::<Feed>::with_config(&base, declining).expect("client");
    let mut stream = client.subscribe("expiring").transport(transport).stream();
    let mut last = wait_ready(&mut stream).await;
    let first = publish(&hub, "expiring", &event(1)).await;
    let cursor = loop {
        match stream.next().await {
            Some(Ok(Update::Event { cursor, .. })) => {
                assert_eq!(cursor, first);
                last = cursor;
            }
            Some(Ok(Update::Ready { cursor })) => last = cursor,
            Some(Err(ClientError::Expired { cursor })) => break cursor,
            other => panic!("expected events then the expiry, got {other:?}"),
        }
    };
    assert_eq!(cursor, Some(last));
    publish(&hub, "expiring", &event(2)).await;
    assert!(
        stream.next().await.is_none(),
        "the stream ended at the expiry"
    );
}

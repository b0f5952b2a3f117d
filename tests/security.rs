//! Secure by default and hard to break: the origin policy, authorization,
//! limits, slow and dead clients, and faults, each checked on every
//! transport. Each test fails if its protection is removed.

mod support;

use push_runtime::broker::MemoryBroker;
use push_runtime::{
    AuthRequest, ChannelRouter, DenyAll, Hub, HubConfig, IframeConfig, Limits, OriginPolicy,
    PollConfig, Principal, Refusal, SseConfig, WsConfig,
};
use std::sync::Arc;
use std::time::Duration;
use support::channel::{TestEvent, note};
use support::{Item, PATIENCE, Server, TRANSPORTS, Transport, open};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn config(history_len: usize, max_topics: usize) -> HubConfig {
    let mut config = HubConfig::default();
    config.history_len = history_len;
    config.max_topics = max_topics;
    config
}

fn hub_on(broker: &Arc<MemoryBroker>) -> Hub<TestEvent> {
    Hub::with_broker(broker.clone(), HubConfig::default())
}

/// A subscription path of `transport` on `topic` that answers at once.
fn path(transport: Transport, topic: &str) -> String {
    let route = transport.route_name();
    match transport {
        Transport::LongPoll => format!("/t/{topic}/{route}?timeout=0"),
        _ => format!("/t/{topic}/{route}"),
    }
}

/// What a server answered to the opening request of a subscription.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    allow_origin: Option<String>,
    allow_credentials: Option<String>,
    csp: Option<String>,
    body: String,
}

/// Makes the opening request of `transport` with extra headers; the
/// connection is dropped right after the status line and headers.
async fn answer(
    server: &Server,
    transport: Transport,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let header = |map: &reqwest::header::HeaderMap, name: &str| {
        map.get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    if transport == Transport::WebSocket {
        let mut request = server.ws_url(path).into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let connect = tokio_tungstenite::connect_async(request);
        return match tokio::time::timeout(PATIENCE, connect).await.unwrap() {
            Ok((_socket, response)) => Answer {
                status: response.status().as_u16(),
                retry_after: None,
                allow_origin: None,
                allow_credentials: None,
                csp: None,
                body: String::new(),
            },
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Answer {
                status: response.status().as_u16(),
                retry_after: header(response.headers(), "retry-after"),
                allow_origin: None,
                allow_credentials: None,
                csp: None,
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            },
            Err(other) => panic!("websocket {path}: {other}"),
        };
    }
    let mut request = reqwest::Client::new().get(server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(PATIENCE, request.send())
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let map = response.headers().clone();
    // Streams never end: read a body only when it is an error's message.
    let body = if status >= 400 {
        response.text().await.unwrap_or_default()
    } else {
        String::new()
    };
    Answer {
        status,
        retry_after: header(&map, "retry-after"),
        allow_origin: header(&map, "access-control-allow-origin"),
        allow_credentials: header(&map, "access-control-allow-credentials"),
        csp: header(&map, "content-security-policy"),
        body,
    }
}

fn accepted(transport: Transport) -> u16 {
    if transport == Transport::WebSocket {
        101
    } else {
        200
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------- origins

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_policy_is_applied_to_every_transport_before_subscribing() {
    let broker = Arc::new(MemoryBroker::new(16));
    let hub = hub_on(&broker);
    let policy = OriginPolicy::default()
        .allow(["https://app.example"])
        .unwrap();
    let server = Server::start(
        ChannelRouter::new(hub.clone())
            .origins(policy)
            .into_router(),
    )
    .await;

    for transport in TRANSPORTS {
        let path = path(transport, "o");
        for headers in [
            &[("origin", "https://evil.example")][..],
            &[("origin", "null")][..],
            &[("origin", "http://app.example")][..], // another scheme is another origin
        ] {
            let answer = answer(&server, transport, &path, headers).await;
            assert_eq!(answer.status, 403, "{transport:?} {headers:?}: {answer:?}");
        }
        if transport != Transport::Iframe {
            let cross = [("sec-fetch-site", "cross-site")];
            let answer = answer(&server, transport, &path, &cross).await;
            assert_eq!(answer.status, 403, "{transport:?} cross-site: {answer:?}");
        }
    }
    // Refused before anything was subscribed: no topic was even created.
    assert_eq!(broker.topic_count(), 0);
    assert_eq!(hub.stats().connections, 0);

    let own = format!("http://{}", server.addr);
    for transport in TRANSPORTS {
        let path = path(transport, "o");
        let listed = answer(
            &server,
            transport,
            &path,
            &[("origin", "https://app.example")],
        )
        .await;
        assert_eq!(
            listed.status,
            accepted(transport),
            "{transport:?}: {listed:?}"
        );
        if transport != Transport::WebSocket {
            assert_eq!(listed.allow_origin.as_deref(), Some("https://app.example"));
            assert_eq!(
                listed.allow_credentials, None,
                "allowed to read, not with credentials"
            );
        }
        for headers in [
            &[("origin", own.as_str())][..],
            &[("sec-fetch-site", "same-origin")][..],
            &[][..], // not a browser
        ] {
            let answer = answer(&server, transport, &path, headers).await;
            assert_eq!(
                answer.status,
                accepted(transport),
                "{transport:?} {headers:?}"
            );
            assert_eq!(answer.allow_origin, None, "no CORS for the own origin");
        }
    }

    // Preflights, on every route a script calls: allowed origins get the
    // methods and headers, others 403.
    for route in ["sse", "ws", "poll", "long-poll"] {
        let preflight = |origin: &'static str| {
            reqwest::Client::new()
                .request(
                    reqwest::Method::OPTIONS,
                    server.url(&format!("/t/o/{route}")),
                )
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "if-none-match")
                .send()
        };
        let ok = preflight("https://app.example").await.unwrap();
        assert_eq!(ok.status(), 204, "{route}");
        let allowed = ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap();
        assert!(allowed.contains("if-none-match") && allowed.contains("last-event-id"));
        assert_eq!(
            ok.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(
            preflight("https://evil.example").await.unwrap().status(),
            403,
            "{route}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_over_http_follows_the_same_origin_policy() {
    let hub = Hub::<TestEvent>::new();
    let router = ChannelRouter::new(hub.clone())
        .publish(
            |request: push_runtime::PublishRequest<TestEvent>| async move { Ok(request.event) },
        )
        .into_router();
    let server = Server::start(router).await;
    let own = format!("http://{}", server.addr);
    for (origin, status) in [
        (Some("https://evil.example"), 403),
        (Some(own.as_str()), 200),
        (None, 200),
    ] {
        let mut request = reqwest::Client::new()
            .post(server.url("/t/p"))
            .header("content-type", "application/json")
            .body(r#"{"note":"hi"}"#);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        assert_eq!(request.send().await.unwrap().status(), status, "{origin:?}");
        // The preflight a page would send first gets the same verdict.
        let mut preflight = reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, server.url("/t/p"))
            .header("access-control-request-method", "POST");
        if let Some(origin) = origin {
            preflight = preflight.header("origin", origin);
        }
        let expected = if status == 200 { 204 } else { status };
        assert_eq!(
            preflight.send().await.unwrap().status(),
            expected,
            "{origin:?}"
        );
    }
    let start = push_runtime::Start::After(push_runtime::Cursor::new(0, 0));
    let mut sub = hub.subscribe("p", start, None).await.unwrap();
    let mut out = Vec::new();
    sub.fill(&mut out, 10);
    assert_eq!(
        out.len(),
        3,
        "a gap, then only the two allowed publishes: {out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_is_same_origin_only_and_a_wildcard_never_carries_credentials() {
    let hub = Hub::<TestEvent>::new();
    let server = Server::start(ChannelRouter::new(hub.clone()).into_router()).await;
    for transport in TRANSPORTS {
        let path = path(transport, "d");
        let other = answer(
            &server,
            transport,
            &path,
            &[("origin", "https://a.example")],
        )
        .await;
        assert_eq!(other.status, 403, "{transport:?}");
        assert!(other.body.is_empty() || other.body.contains("not allowed"));
        let framed = answer(
            &server,
            transport,
            &path,
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
        assert_eq!(
            framed.status, 403,
            "{transport:?}: no page may embed it by default"
        );
    }

    let any = OriginPolicy::default().allow(["*"]).unwrap();
    let server = Server::start(ChannelRouter::new(hub).origins(any).into_router()).await;
    let answer = answer(
        &server,
        Transport::Sse,
        "/t/d/sse",
        &[("origin", "https://a.example")],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.allow_origin.as_deref(), Some("*"));
    assert_eq!(answer.allow_credentials, None);
}

/// What the authorization hook saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    route: String,
    cookie: Option<String>,
    authorization: Option<String>,
}

/// A hook that records what it sees and allows everything.
fn recording_hook(
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
) -> impl Fn(AuthRequest) -> std::future::Ready<Result<Principal, Refusal>> + Clone {
    move |request: AuthRequest| {
        let header = |name| {
            request
                .parts
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("?").to_owned())
        };
        let route = request.parts.uri.path().rsplit('/').next().unwrap_or("");
        seen.lock().unwrap().push(Seen {
            route: route.to_owned(),
            cookie: header("cookie"),
            authorization: header("authorization"),
        });
        std::future::ready(Ok(Principal::new("someone")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambient_credentials_of_foreign_pages_never_reach_the_hook_unless_allowed() {
    let hub = Hub::<TestEvent>::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let policy = OriginPolicy::default()
        .allow(["https://read.example"])
        .unwrap()
        .allow_credentials(["https://me.example"])
        .unwrap();
    let server = Server::start(
        ChannelRouter::new(hub.clone())
            .origins(policy)
            .authorize(recording_hook(seen.clone()))
            .into_router(),
    )
    .await;
    let own = format!("http://{}", server.addr);
    let ambient = [("cookie", "session=ann"), ("authorization", "Bearer ann")];
    // (origin class, its `Origin`, whether the hook gets its ambient
    // credentials, `Access-Control-Allow-Credentials` on the answer).
    let classes = [
        ("own page", Some(own.as_str()), true, None),
        ("not a browser", None, true, None),
        (
            "credentialed origin",
            Some("https://me.example"),
            true,
            Some("true"),
        ),
        (
            "read-only origin",
            Some("https://read.example"),
            false,
            None,
        ),
    ];
    for (class, origin, kept, credentials) in classes {
        for transport in TRANSPORTS {
            seen.lock().unwrap().clear();
            let mut all = ambient.to_vec();
            all.extend(origin.map(|origin| ("origin", origin)));
            let answer = answer(&server, transport, &path(transport, "c"), &all).await;
            assert_eq!(
                answer.status,
                accepted(transport),
                "{class} {transport:?}: {answer:?}"
            );
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.len(), 1, "{class} {transport:?}: {seen:?}");
            // A page's own `Authorization` (set by `fetch`) is never ambient;
            // on a WebSocket or a frame only the browser could have set it.
            let made_by_fetch = !matches!(transport, Transport::WebSocket | Transport::Iframe);
            assert_eq!(
                seen[0].cookie.is_some(),
                kept,
                "{class} {transport:?}: cookie seen by the hook: {seen:?}"
            );
            assert_eq!(
                seen[0].authorization.is_some(),
                kept || made_by_fetch,
                "{class} {transport:?}: Authorization seen by the hook: {seen:?}"
            );
            if transport != Transport::WebSocket {
                assert_eq!(
                    answer.allow_credentials.as_deref(),
                    credentials,
                    "{class} {transport:?}"
                );
            }
        }
    }

    // Frame navigations carry no `Origin`: the frame's declared parent
    // (`origin=`) decides, and a frame with credentials is pinned to it.
    let frame = |parent: &str| format!("/t/c/iframe?origin={parent}");
    for site in ["cross-site", "same-site"] {
        let navigation = [
            ambient[0],
            ambient[1],
            ("sec-fetch-site", site),
            ("sec-fetch-dest", "iframe"),
        ];
        seen.lock().unwrap().clear();
        let me = answer(
            &server,
            Transport::Iframe,
            &frame("https://me.example"),
            &navigation,
        )
        .await;
        assert_eq!(me.status, 200, "{site}: {me:?}");
        assert_eq!(
            me.csp.as_deref(),
            Some("frame-ancestors https://me.example"),
            "{site}: a frame with credentials is pinned to its parent"
        );
        let read = answer(
            &server,
            Transport::Iframe,
            &frame("https://read.example"),
            &navigation,
        )
        .await;
        assert_eq!(read.status, 200, "{site}: {read:?}");
        let csp = read.csp.unwrap_or_default();
        assert!(
            csp.starts_with("frame-ancestors 'self'") && csp.contains("https://read.example"),
            "{site}: {csp}"
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.iter()
                .map(|s| (s.cookie.is_some(), s.authorization.is_some()))
                .collect::<Vec<_>>(),
            [(true, true), (false, false)],
            "{site}: the credentialed parent's frame keeps them, the read-only one's loses both"
        );
    }
    wait_until("connections released", || hub.stats().connections == 0).await;

    // Any page may read a `*` channel, and none of them as the user.
    let any = OriginPolicy::default().allow(["*"]).unwrap();
    seen.lock().unwrap().clear();
    let server = Server::start(
        ChannelRouter::new(hub)
            .origins(any)
            .authorize(recording_hook(seen.clone()))
            .into_router(),
    )
    .await;
    for transport in TRANSPORTS {
        let all = [ambient[0], ("origin", "https://anyone.example")];
        let answer = answer(&server, transport, &path(transport, "w"), &all).await;
        assert_eq!(answer.status, accepted(transport), "{transport:?}");
        assert_eq!(answer.allow_credentials, None);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.cookie.is_none()), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_hook_never_sees_a_read_only_origin_s_cookie() {
    let hub = Hub::<TestEvent>::new();
    let cookies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = cookies.clone();
    let policy = OriginPolicy::default()
        .allow(["https://read.example"])
        .unwrap()
        .allow_credentials(["https://me.example"])
        .unwrap();
    let router = ChannelRouter::new(hub)
        .origins(policy)
        .publish(move |request: push_runtime::PublishRequest<TestEvent>| {
            let cookie = request.parts.headers.get("cookie").cloned();
            record.lock().unwrap().push(cookie.is_some());
            async move {
                match cookie {
                    Some(_) => Ok(request.event),
                    None => Err(Refusal::unauthorized("sign in to publish")),
                }
            }
        })
        .into_router();
    let server = Server::start(router).await;
    for (origin, status) in [("https://me.example", 200), ("https://read.example", 401)] {
        let response = reqwest::Client::new()
            .post(server.url("/t/p"))
            .header("origin", origin)
            .header("cookie", "session=ann")
            .header("content-type", "application/json")
            .body(r#"{"note":"hi"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{origin}");
    }
    assert_eq!(*cookies.lock().unwrap(), [true, false]);
}

// ---------------------------------------------------------- authorization

async fn bearer(request: AuthRequest) -> Result<Principal, Refusal> {
    let token = request.parts.headers.get("authorization");
    match token.and_then(|t| t.to_str().ok()) {
        Some("Bearer ann") if request.topic.as_str() != "secret" => Ok(Principal::new("ann")),
        Some("Bearer ann") => Err(Refusal::forbidden("ann may not read this topic")),
        Some(_) => Err(Refusal::forbidden("unknown token")),
        None => Err(Refusal::unauthorized("a bearer token is required")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_hook_decides_on_every_transport() {
    let broker = Arc::new(MemoryBroker::new(16));
    let hub = hub_on(&broker);
    let server = Server::start(
        ChannelRouter::new(hub.clone())
            .authorize(bearer)
            .into_router(),
    )
    .await;
    for transport in TRANSPORTS {
        let none = answer(&server, transport, &path(transport, "a"), &[]).await;
        assert_eq!(none.status, 401, "{transport:?}: {none:?}");
        let wrong = [("authorization", "Bearer bob")];
        let wrong = answer(&server, transport, &path(transport, "a"), &wrong).await;
        assert_eq!(wrong.status, 403, "{transport:?}");
        let ann = [("authorization", "Bearer ann")];
        let topic = answer(&server, transport, &path(transport, "secret"), &ann).await;
        assert_eq!(topic.status, 403, "{transport:?}: the hook sees the topic");
    }
    assert_eq!(broker.topic_count(), 0, "refused before subscribing");
    for transport in TRANSPORTS {
        let ann = [("authorization", "Bearer ann")];
        let ok = answer(&server, transport, &path(transport, "a"), &ann).await;
        assert_eq!(ok.status, accepted(transport), "{transport:?}");
    }

    // Deny-by-default in one line.
    let server = Server::start(ChannelRouter::new(hub).authorize(DenyAll).into_router()).await;
    for transport in TRANSPORTS {
        let answer = answer(&server, transport, &path(transport, "a"), &[]).await;
        assert_eq!(answer.status, 401, "{transport:?}");
    }
}

// ----------------------------------------------------------------- limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_answer_503_with_retry_after_and_lose_nothing() {
    let hub = Hub::<TestEvent>::new();
    let limits = Limits::default()
        .max_connections(2)
        .max_connections_per_topic(1)
        .retry_after(Duration::from_secs(7));
    let server = Server::start(ChannelRouter::new(hub.clone()).limits(limits).into_router()).await;
    let mut held = open(&server, Transport::Sse, "/t/busy/sse").await;
    let ready = held.ready().await;
    for transport in TRANSPORTS {
        let answer = answer(&server, transport, &path(transport, "busy"), &[]).await;
        assert_eq!(answer.status, 503, "{transport:?}: {answer:?}");
        assert_eq!(answer.retry_after.as_deref(), Some("7"), "{transport:?}");
    }
    // Published while refused: nothing is lost to a client that comes back.
    for n in 1..=3 {
        hub.publish("busy", note(n)).await.unwrap();
    }
    let mut other = open(&server, Transport::Sse, "/t/quiet/sse").await;
    other.ready().await;
    let total = answer(&server, Transport::Sse, "/t/third/sse", &[]).await;
    assert_eq!(total.status, 503, "the total is reached too");
    drop(other);
    assert_eq!(held.next_frame().await.seq(), 1);
    drop(held);
    wait_until("connections released", || hub.stats().connections == 0).await;
    let mut back = open(
        &server,
        Transport::Sse,
        &format!("/t/busy/sse?after={ready}"),
    )
    .await;
    back.ready().await;
    let seqs: Vec<u64> = [
        back.next_frame().await,
        back.next_frame().await,
        back.next_frame().await,
    ]
    .iter()
    .map(|f| f.seq())
    .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert!(hub.stats().refused_at_limit >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_alive_are_bounded_and_an_evicted_topic_comes_back_with_a_gap() {
    let hub = Hub::<TestEvent>::with_config(config(1024, 1));
    let limits = Limits::default().retry_after(Duration::from_secs(9));
    let server = Server::start(ChannelRouter::new(hub.clone()).limits(limits).into_router()).await;
    let first = hub.publish("a", note(1)).await.unwrap();
    let mut reader = open(&server, Transport::Sse, "/t/a/sse").await;
    reader.ready().await;
    // `a` is being read: no room for another topic.
    assert!(hub.publish("b", note(1)).await.is_err());
    for transport in TRANSPORTS {
        let answer = answer(&server, transport, &path(transport, "b"), &[]).await;
        assert_eq!(answer.status, 503, "{transport:?}: {answer:?}");
        assert_eq!(answer.retry_after.as_deref(), Some("9"), "{transport:?}");
    }
    drop(reader);
    wait_until("reader gone", || hub.stats().connections == 0).await;
    // `a` is idle now, but a reader of a new topic may not take the place
    // of a topic with events (random names cost no history)...
    for transport in TRANSPORTS {
        let answer = answer(&server, transport, &path(transport, "b"), &[]).await;
        assert_eq!(answer.status, 503, "{transport:?}: {answer:?}");
    }
    // ...a publisher may: `b` evicts `a`, then `a` evicts `b`.
    hub.publish("b", note(1)).await.unwrap();
    let again = hub.publish("a", note(2)).await.unwrap();
    assert_ne!(again.epoch(), first.epoch());
    // Resuming `a` from before the eviction: a gap, never a silent hole.
    for transport in TRANSPORTS {
        let mut conn = open(
            &server,
            transport,
            &format!("/t/a/{}?after={first}", transport.route_name()),
        )
        .await;
        conn.ready().await;
        let gap = conn.next_frame().await;
        assert_eq!(gap.event, "push.gap", "{transport:?}");
        assert_eq!(gap.data["missed"], serde_json::Value::Null, "{transport:?}");
        assert_eq!(
            conn.next_frame().await.cursor,
            again.to_string(),
            "{transport:?}"
        );
        drop(conn);
        wait_until("released", || hub.stats().connections == 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_targets_get_414_on_every_transport() {
    let hub = Hub::<TestEvent>::new();
    let server = Server::start(ChannelRouter::new(hub).into_router()).await;
    let long_query = format!("events={}", "x".repeat(1500));
    for transport in TRANSPORTS {
        let path = format!("/t/q/{}?{long_query}", transport.route_name());
        let answer = answer(&server, transport, &path, &[]).await;
        assert_eq!(answer.status, 414, "{transport:?}: {answer:?}");
    }
}

// --------------------------------------------------- slow and dead clients

/// A client that sends `request` and then never reads, with a tiny
/// receive window so the server's writes back up quickly.
async fn stalled(server: &Server, request: String) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

fn get_request(server: &Server, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr)
}

fn ws_request(server: &Server, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        server.addr
    )
}

const BATCH: usize = 8;
const BUDGET: usize = 16 * 1024;

fn slow_client_router(hub: &Hub<TestEvent>, stall: Duration) -> axum::Router {
    ChannelRouter::new(hub.clone())
        .sse(SseConfig::default().max_batch(BATCH))
        .websocket(WsConfig::default().max_batch(BATCH))
        .iframe(
            IframeConfig::default()
                .max_batch(BATCH)
                .max_bytes(usize::MAX)
                .max_duration(Duration::MAX),
        )
        .limits(
            Limits::default()
                .max_buffered_per_connection(BUDGET)
                .stall_timeout(stall),
        )
        .into_router()
}

fn big(n: usize) -> TestEvent {
    TestEvent::Note(format!("{n:06}{}", "x".repeat(1000)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_costs_bounded_memory_then_resumes_with_a_gap() {
    let hub = Hub::<TestEvent>::with_config(config(64, 100));
    let server = Server::start(slow_client_router(&hub, PATIENCE * 3)).await;
    let mut sse = stalled(&server, get_request(&server, "/t/s/sse")).await;
    let _frame = stalled(&server, get_request(&server, "/t/s/iframe")).await;
    let _ws = stalled(&server, ws_request(&server, "/t/s/ws")).await;
    wait_until("three subscriptions", || hub.stats().connections == 3).await;

    // Publish until every stream holds its budget, then a lot more.
    let mut published = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.stats().held_back < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never stalled: {:?}",
            hub.stats()
        );
        for _ in 0..64 {
            published += 1;
            hub.publish("s", big(published)).await.unwrap();
        }
        tokio::task::yield_now().await;
    }
    for _ in 0..5_000 {
        published += 1;
        hub.publish("s", big(published)).await.unwrap();
    }
    let stats = hub.stats();
    // Streams hand bytes over in pieces of a quarter of the budget and stop
    // at the budget; a WebSocket holds at most one batch of ~1.2 KB frames.
    let bound = (BUDGET + BUDGET / 4).max(BATCH * 1200 + 512);
    println!(
        "stalled clients: peak {} bytes per connection (bound {bound}), {} bytes buffered for 3 connections after {published} events",
        stats.peak_buffered_per_connection, stats.buffered_bytes
    );
    assert!(stats.peak_buffered_per_connection <= bound, "{stats:?}");
    assert!(stats.buffered_bytes <= 3 * bound, "{stats:?}");

    // The SSE client reads again: a gap, then the newest events.
    let last = format!("-{published}\n");
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let n = sse.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if text.contains("event: push.gap") && text.contains(&last) {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no gap and newest event after resuming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_silent_peers_are_cut() {
    let hub = Hub::<TestEvent>::with_config(config(64, 100));
    let server = Server::start(slow_client_router(&hub, Duration::from_millis(300))).await;
    let _sse = stalled(&server, get_request(&server, "/t/c/sse")).await;
    let _frame = stalled(&server, get_request(&server, "/t/c/iframe")).await;
    let _ws = stalled(&server, ws_request(&server, "/t/c/ws")).await;
    wait_until("three subscriptions", || hub.stats().connections == 3).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut n = 0;
    while hub.stats().connections > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not cut: {:?}",
            hub.stats()
        );
        for _ in 0..64 {
            n += 1;
            hub.publish("c", big(n)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(hub.stats().stalled_cut >= 3, "{:?}", hub.stats());

    // A WebSocket peer that answers no ping is closed even with nothing to send.
    let router = ChannelRouter::new(hub.clone())
        .websocket(WsConfig::default().ping_interval(Duration::from_millis(400)))
        .into_router();
    let server = Server::start(router).await;
    let _silent = stalled(&server, ws_request(&server, "/t/quiet/ws")).await;
    wait_until("subscribed", || hub.stats().connections == 1).await;
    wait_until("silent peer closed", || hub.stats().connections == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_sending_without_pause_neither_starves_nor_is_starved() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    const EVENTS: usize = 2_000;
    let hub = Hub::<TestEvent>::with_config(config(EVENTS + 16, 100));
    let server = Server::start(ChannelRouter::new(hub.clone()).into_router()).await;
    let (ws, _) = tokio_tungstenite::connect_async(server.ws_url("/t/busy/ws"))
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    // The server says it is ready first.
    let ready = stream.next().await.unwrap().unwrap();
    assert!(ready.to_text().unwrap().contains("push.ready"), "{ready:?}");
    // Pings without pause, while every event is published.
    let pinger = tokio::spawn(async move {
        for _ in 0..EVENTS {
            sink.send(Message::Ping(Vec::new().into())).await.unwrap();
        }
        sink
    });
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for n in 0..EVENTS {
                hub.publish("busy", note(n)).await.unwrap();
            }
        })
    };
    // Every event arrives, in order, and every ping is answered, in between.
    let (mut events, mut pongs) = (0, 0);
    while events < EVENTS || pongs < EVENTS {
        let message = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .unwrap_or_else(|_| panic!("starved: {events} events, {pongs} pongs"))
            .unwrap()
            .unwrap();
        match message {
            Message::Text(text) => {
                assert!(text.contains(&format!("\"n{events}\"")), "{text}");
                events += 1;
            }
            Message::Pong(_) => pongs += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    publisher.await.unwrap();
    let mut sink = pinger.await.unwrap();
    // And the peer's close ends the connection.
    sink.send(Message::Close(None)).await.unwrap();
    wait_until("closed", || hub.stats().connections == 0).await;
}

// ----------------------------------------------------------------- faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_old_cursors_get_a_gap_never_a_false_resume() {
    let before = Hub::<TestEvent>::new();
    let mut stale = None;
    for n in 1..=3 {
        stale = Some(before.publish("r", note(n)).await.unwrap());
    }
    let stale = stale.unwrap();
    drop(before);
    // The restarted server has as many events: same sequence numbers.
    let after = Hub::<TestEvent>::new();
    for n in 11..=13 {
        after.publish("r", note(n)).await.unwrap();
    }
    let server = Server::start(ChannelRouter::new(after.clone()).into_router()).await;
    for transport in TRANSPORTS {
        let path = format!("/t/r/{}?after={stale}", transport.route_name());
        let mut conn = open(&server, transport, &path).await;
        conn.ready().await;
        let gap = conn.next_frame().await;
        assert_eq!(gap.event, "push.gap", "{transport:?}");
        assert_eq!(gap.data["from"], stale.to_string());
        assert_eq!(gap.data["missed"], serde_json::Value::Null);
        let first = conn.next_frame().await;
        assert_eq!(
            first.data,
            serde_json::json!({"note": "n11"}),
            "{transport:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_every_stream_and_loses_nothing() {
    let broker = Arc::new(MemoryBroker::new(1024));
    let hub = hub_on(&broker);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = ChannelRouter::new(hub.clone())
        .poll(PollConfig::default().long_poll_timeout(PATIENCE * 3))
        .into_router();
    let shutting = hub.clone();
    let serve = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
                shutting.shutdown();
            })
            .await
    });
    let server = Server::attach(addr);
    let mut conns = Vec::new();
    for transport in [Transport::Sse, Transport::WebSocket, Transport::Iframe] {
        let mut conn = open(
            &server,
            transport,
            &format!("/t/g/{}", transport.route_name()),
        )
        .await;
        let ready = conn.ready().await;
        conns.push((transport, conn, ready));
    }
    // A long poll held across the shutdown is answered.
    let newest = hub.publish("g", note(0)).await.unwrap();
    let held = tokio::spawn({
        let url = server.url(&format!("/t/g/long-poll?after={newest}&timeout=60"));
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    });
    wait_until("long poll held", || hub.stats().connections == 4).await;
    for n in 1..=50 {
        hub.publish("g", note(n)).await.unwrap();
    }
    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, serve)
        .await
        .expect("the server stops once its streams end")
        .unwrap()
        .unwrap();
    assert_eq!(held.await.unwrap(), 200);
    // A shut-down hub takes no new subscriptions.
    let late = Server::start(ChannelRouter::new(hub.clone()).into_router()).await;
    for transport in TRANSPORTS {
        let answer = answer(&late, transport, &path(transport, "g"), &[]).await;
        assert_eq!(answer.status, 503, "{transport:?}");
        assert!(answer.retry_after.is_some());
    }

    // Each client read up to the end, then resumes on a new server over the
    // same history: every event arrives exactly once.
    let restarted = Server::start(ChannelRouter::new(hub_on(&broker)).into_router()).await;
    for (transport, mut conn, mut cursor) in conns {
        let mut seqs = Vec::new();
        loop {
            match conn.next_item().await {
                Some(Item::Frame(frame)) if frame.event == "push.end" => {
                    cursor = frame.cursor.clone();
                    break;
                }
                Some(Item::Frame(frame)) => {
                    seqs.push(frame.seq());
                    cursor = frame.cursor.clone();
                }
                Some(Item::Closed(code, _)) => {
                    assert_eq!(code, 1001, "{transport:?}");
                    break;
                }
                Some(_) => {}
                None => panic!("{transport:?} ended without telling the client"),
            }
        }
        let path = format!("/t/g/{}?after={cursor}", transport.route_name());
        let mut again = open(&restarted, transport, &path).await;
        again.ready().await;
        while seqs.last().copied().unwrap_or(0) < 51 {
            let frame = again.next_frame().await;
            assert_ne!(frame.event, "push.gap", "{transport:?}");
            seqs.push(frame.seq());
        }
        assert_eq!(seqs, (1..=51).collect::<Vec<_>>(), "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cut_mid_frame_hurt_nobody() {
    let hub = Hub::<TestEvent>::new();
    let server = Server::start(ChannelRouter::new(hub.clone()).into_router()).await;
    let mut bystander = open(&server, Transport::WebSocket, "/t/m/ws").await;
    bystander.ready().await;
    // Half a request line, half the headers, half a WebSocket frame.
    for partial in [
        "GET /t/m/s".to_owned(),
        format!("GET /t/m/sse HTTP/1.1\r\nhost: {}\r\nlast-ev", server.addr),
    ] {
        let mut raw = TcpStream::connect(server.addr).await.unwrap();
        raw.write_all(partial.as_bytes()).await.unwrap();
        drop(raw);
    }
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(ws_request(&server, "/t/m/ws").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    raw.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    // A masked text frame header announcing 100 bytes, then 3 of them.
    raw.write_all(&[0x81, 0x80 | 100, 1, 2, 3, 4, b'a', b'b', b'c'])
        .await
        .unwrap();
    drop(raw);
    // A stream cut mid-response by its client.
    let mut sse = stalled(&server, get_request(&server, "/t/m/sse")).await;
    let mut some = [0u8; 10];
    sse.read_exact(&mut some).await.unwrap();
    drop(sse);

    hub.publish("m", note(1)).await.unwrap();
    assert_eq!(bystander.next_frame().await.seq(), 1);
    wait_until("cut clients released", || hub.stats().connections == 1).await;
}

// -------------------------------------------- random bytes from WebSocket clients

/// One client-to-server WebSocket frame, well formed or not.
fn ws_frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    (
        any::<bool>(),                                                      // fin
        0u8..16,       // opcode, reserved ones too
        any::<bool>(), // masked (clients must mask)
        prop_oneof![0u64..126, Just(126u64), Just(65_535), Just(u64::MAX)], // claimed length
        prop::collection::vec(any::<u8>(), 0..200),
        any::<[u8; 4]>(),
    )
        .prop_map(|(fin, opcode, masked, claimed, payload, key)| {
            let mut out = vec![(u8::from(fin) << 7) | opcode];
            let mask_bit = u8::from(masked) << 7;
            match claimed {
                0..=125 => out.push(mask_bit | payload.len().min(125) as u8),
                126..=65_535 => {
                    out.push(mask_bit | 126);
                    out.extend_from_slice(&(claimed as u16).to_be_bytes());
                }
                _ => {
                    out.push(mask_bit | 127);
                    out.extend_from_slice(&claimed.to_be_bytes());
                }
            }
            if masked {
                out.extend_from_slice(&key);
            }
            out.extend_from_slice(&payload);
            out
        })
}

fn client_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        prop::collection::vec(ws_frame(), 1..4).prop_map(|frames| frames.concat()),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

static SERVER_PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn random_bytes_from_websocket_clients_never_hurt_the_server() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        SERVER_PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        default_hook(info);
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hub = Hub::<TestEvent>::new();
    let (server, mut bystander) = runtime.block_on(async {
        let server = Server::start(ChannelRouter::new(hub.clone()).into_router()).await;
        let mut bystander = open(&server, Transport::WebSocket, "/t/f/ws").await;
        bystander.ready().await;
        (server, bystander)
    });
    // proptest's case count (256, or PROPTEST_CASES): one connection each.
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&client_bytes(), |bytes| {
            runtime.block_on(async {
                let mut raw = TcpStream::connect(server.addr).await.unwrap();
                raw.write_all(ws_request(&server, "/t/f/ws").as_bytes())
                    .await
                    .unwrap();
                let mut head = [0u8; 12];
                raw.read_exact(&mut head).await.unwrap();
                assert_eq!(&head, b"HTTP/1.1 101");
                // The server may close while we write: that is a fine answer.
                let _ = raw.write_all(&bytes).await;
            });
            Ok(())
        })
        .unwrap();
    runtime.block_on(async {
        hub.publish("f", note(1)).await.unwrap();
        assert_eq!(bystander.next_frame().await.seq(), 1);
        wait_until("every fuzzing connection released", || {
            hub.stats().connections == 1
        })
        .await;
    });
    assert_eq!(SERVER_PANICS.load(std::sync::atomic::Ordering::SeqCst), 0);
}

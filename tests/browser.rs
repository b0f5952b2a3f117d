//! End-to-end tests in headless Chromium: the chat example's demo page
//! (`examples/chat/index.html`, the browser client `/chat/client.js`) over all
//! five transports, pages of other origins, and credentials: cookies from a
//! page of another site (127.0.0.1 and localhost are different sites to
//! Chromium) with the page's origin allowed to read with credentials or only
//! to read, the client's credentials provider on every transport, and its
//! handling of an expired authorization (against a scripted server).
//!
//! `apt-get install chromium chromium-driver`, then `cargo test --test browser`.
//! The demo page's screenshot is written to `target/browser/demo.png`.

#[path = "../examples/chat/event.rs"]
mod event;
#[path = "browser/harness.rs"]
mod harness;

use axum::response::{Html, IntoResponse};
use axum::routing::get;
use event::ChatEvent;
use harness::{Browser, ONE_BROWSER, Site, output_dir};
use push_runtime::{ChannelRouter, Hub, HubConfig, IframeConfig, PublishRequest, Refusal};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const TRANSPORTS: [&str; 5] = ["websocket", "sse", "long-poll", "poll", "iframe"];
const DEMO: &str = include_str!("../examples/chat/index.html");

async fn allow(request: PublishRequest<ChatEvent>) -> Result<ChatEvent, Refusal> {
    Ok(request.event)
}

/// The chat example's page and routes, on a hub keeping `history` events per topic.
fn demo_app(history: usize, iframe: IframeConfig) -> axum::Router {
    let hub = Hub::<ChatEvent>::with_config({
        let mut config = HubConfig::default();
        config.history_len = history;
        config
    });
    axum::Router::new()
        .route("/", get(|| async { Html(DEMO) }))
        .merge(
            ChannelRouter::new(hub)
                .iframe(iframe)
                .publish(allow)
                .into_router(),
        )
}

async fn publish(site: &Site, topic: &str, from: &str, text: &str) {
    let body = json!({ "type": "message", "from": from, "text": text }).to_string();
    let response = reqwest::Client::new()
        .post(site.url(&format!("/chat/{topic}")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("publish");
    assert!(
        response.status().is_success(),
        "publish: {}",
        response.status()
    );
}

async fn publish_all(site: &Site, topic: &str, texts: &[String]) {
    for text in texts {
        publish(site, topic, "ann", text).await;
    }
}

fn texts(prefix: &str, range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|n| format!("{prefix}{n}")).collect()
}

/// Script: every demo panel is live.
const ALL_LIVE: &str = "const d = window.__demo; return !!d && Object.values(d.panels).every(p => p.status === 'live');";

/// Waits until every panel received exactly `expected` message texts, in order.
async fn wait_for_texts(browser: &Browser, expected: &[String]) {
    let script = format!(
        "const want = {}; const d = window.__demo;
         return Object.entries(d.panels).every(([t, p]) => JSON.stringify(p.events.map(e => e.data.text)) === JSON.stringify(want));",
        json!(expected)
    );
    let what = format!("every transport to receive {expected:?} in order");
    let deadline = std::time::Instant::now() + harness::PATIENCE;
    loop {
        if browser.js(&script, vec![]).await == json!(true) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let got = browser
                .js(
                    "return Object.fromEntries(Object.entries(window.__demo.panels).map(([t, p]) => [t, { texts: p.events.map(e => e.data.text), status: p.status, cursor: p.sub.cursor, stats: p.sub.stats, frames: document.querySelectorAll('iframe').length }]));",
                    vec![],
                )
                .await;
            panic!("timed out waiting for {what}; received {got:#}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn open_demo(browser: &Browser, site: &Site, topic: &str) {
    browser
        .client
        .goto(&site.url(&format!("/?topic={topic}")))
        .await
        .expect("open the demo page");
    browser
        .wait_for("every transport to be live", ALL_LIVE)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_delivers_in_order_and_resumes_after_cut_and_reload() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let mut site = Site::bind().await;
    // Small forever frames, so the frame also ends (`push.end`) and is
    // reloaded from its cursor several times along the way.
    site.serve(demo_app(1024, IframeConfig::default().max_bytes(1600)));
    browser
        .run(|browser| async move {
            let topic = "order";
            open_demo(browser, &site, topic).await;

            publish_all(&site, topic, &texts("m", 1..=5)).await;
            wait_for_texts(browser, &texts("m", 1..=5)).await;
            let frames = browser
                .js("const s = window.__demo.panels.iframe.sub.stats; return [s.requests, s.reconnects];", vec![])
                .await;
            assert!(
                frames[0].as_u64() >= Some(2) && frames[1] == json!(0),
                "the frame ended (push.end) and was reloaded without a reconnect: [requests, reconnects] = {frames}"
            );

            // Cut every connection, publish while they are down: nothing is lost or doubled.
            for transport in TRANSPORTS {
                browser
                    .js("window.__demo.cut(arguments[0]);", vec![json!(transport)])
                    .await;
            }
            publish_all(&site, topic, &texts("m", 6..=8)).await;
            wait_for_texts(browser, &texts("m", 1..=8)).await;
            let reconnects = browser
                .js(
                    "return Object.values(window.__demo.panels).map(p => p.sub.stats.reconnects);",
                    vec![],
                )
                .await;
            assert!(
                reconnects
                    .as_array()
                    .expect("array")
                    .iter()
                    .all(|n| n.as_u64() >= Some(1)),
                "every transport reconnected: {reconnects}"
            );

            // Leave the page, publish, come back: each transport resumes from
            // the cursor it kept in sessionStorage.
            browser.client.goto("about:blank").await.expect("leave");
            publish_all(&site, topic, &texts("m", 9..=11)).await;
            open_demo(browser, &site, topic).await;
            wait_for_texts(browser, &texts("m", 9..=11)).await;

            // And a reload proper: what arrives after it continues the sequence.
            browser.client.refresh().await.expect("reload");
            browser
                .wait_for("every transport to be live after reload", ALL_LIVE)
                .await;
            publish_all(&site, topic, &texts("m", 12..=13)).await;
            wait_for_texts(browser, &texts("m", 12..=13)).await;
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_notices_reach_every_transport() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let mut site = Site::bind().await;
    site.serve(demo_app(4, IframeConfig::default()));
    browser
        .run(|browser| async move {
            let topic = "gaps";
            open_demo(browser, &site, topic).await;
            publish(&site, topic, "ann", "before").await;
            wait_for_texts(browser, &["before".to_owned()]).await;

            // Away for longer than the history reaches back (4 events).
            browser.client.goto("about:blank").await.expect("leave");
            publish_all(&site, topic, &texts("g", 1..=10)).await;
            open_demo(browser, &site, topic).await;
            wait_for_texts(browser, &texts("g", 7..=10)).await;
            let gaps = browser
                .js("return Object.fromEntries(Object.entries(window.__demo.panels).map(([t, p]) => [t, p.gaps]));", vec![])
                .await;
            for transport in TRANSPORTS {
                let gaps = gaps[transport].as_array().expect("gaps");
                assert_eq!(gaps.len(), 1, "{transport}: one gap, got {gaps:?}");
                assert_eq!(gaps[0]["missed"], json!(6), "{transport}: g1..g6 lost");
            }
        })
        .await;
}

/// Event data that would run script if any transport or the page let it through.
fn xss_corpus() -> Vec<String> {
    [
        "</script><script>parent.__pwned=1;window.__pwned=1</script>",
        "<!--<script>parent.__pwned=2</script>",
        "<script>parent.__pwned=3</script>-->",
        "line\u{2028}separator\u{2029}paragraph",
        "\"double\" 'single' `back` \\ \\\" \\u003c/script\\u003e",
        "<img src=x onerror=\"parent.__pwned=4\">&amp;&lt;",
        "]]></m(1)>\");parent.__pwned=5;(\"",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xss_corpus_executes_nothing_and_arrives_intact() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let mut site = Site::bind().await;
    site.serve(demo_app(1024, IframeConfig::default()));
    browser
        .run(|browser| async move {
            let topic = "xss";
            open_demo(browser, &site, topic).await;
            let corpus = xss_corpus();
            for text in &corpus {
                publish(&site, topic, text, text).await;
            }
            wait_for_texts(browser, &corpus).await;
            let froms = browser
                .js("return Object.values(window.__demo.panels).map(p => p.events.map(e => e.data.from));", vec![])
                .await;
            for from in froms.as_array().expect("array") {
                assert_eq!(from, &json!(corpus), "senders arrive intact");
            }
            let pwned = browser
                .js(
                    "return [window.__pwned, ...[...document.querySelectorAll('iframe')].map(f => { try { return f.contentWindow.__pwned } catch { return 'cross-origin' } })];",
                    vec![],
                )
                .await;
            assert!(
                pwned.as_array().expect("array").iter().all(Value::is_null),
                "no script ran: {pwned}"
            );

            // The page with real numbers, for the record.
            for n in 1..=20 {
                browser
                    .js(
                        "return window.__demo.publish('bob', arguments[0]);",
                        vec![json!(format!("hello {n}"))],
                    )
                    .await;
            }
            let mut expected = corpus.clone();
            expected.extend(texts("hello ", 1..=20));
            wait_for_texts(browser, &expected).await;
            // One more render of the table (it refreshes every 250 ms).
            browser
                .wait_for(
                    "the cost table to show every event",
                    &format!("return [...document.querySelectorAll('#costs tr')].every(r => r.children[1].textContent === '{}');", expected.len()),
                )
                .await;
            let png = browser.client.screenshot().await.expect("screenshot");
            let path = output_dir().join("demo.png");
            std::fs::create_dir_all(output_dir()).expect("target/browser");
            std::fs::write(&path, png).expect("write screenshot");
            println!("demo page screenshot: {}", path.display());
            let table = browser
                .js("return [...document.querySelectorAll('#costs tr')].map(r => [...r.children].map(c => c.textContent).join(' | '));", vec![])
                .await;
            println!("cost per event as the demo page shows it (transport | events | requests | bytes | requests/event | bytes/event | median latency | reconnects):");
            for row in table.as_array().expect("rows") {
                println!("  {}", row.as_str().unwrap_or_default());
            }
        })
        .await;
}

/// A page of another origin that imports the channel's client from `channel`
/// and subscribes with each transport, recording what arrives.
fn foreign_page(channel: &str) -> String {
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>elsewhere</title><body><script type="module">
const {{ subscribe, NAMES }} = await import("{channel}/chat/client.js");
window.__subs = {{}};
window.__start = (topic, transports, options) => {{
  for (const transport of transports) {{
    const state = {{ events: [], status: "connecting", sub: null }};
    state.sub = subscribe(topic, {{ transport, retry: {{ min: 100, max: 400 }}, ...options,
      onStatus: (status) => (state.status = status) }});
    // Typed callbacks, one per wire name the server filled in.
    for (const name of NAMES) {{
      state.sub.on(name, (data, item) => state.events.push(data.text ?? `${{item.event}}:${{data.name}}`));
    }}
    window.__subs[transport + (options.iframeOrigin ? "+origin" : "")] = state;
  }}
}};
window.__ready = true;
</script>"#
    )
}

/// Expression: what each subscription of the foreign page saw.
const SUBS: &str = "Object.fromEntries(Object.entries(window.__subs).map(([t, s]) => [t, { events: s.events, status: s.status, requests: s.sub.stats.requests }]))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_a_disallowed_origin_are_refused() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let mut allowed = Site::bind().await;
    let mut refused = Site::bind().await;
    let mut channel = Site::bind().await;
    channel.serve(demo_app(
        1024,
        IframeConfig::default()
            .allowed_origins([allowed.origin()])
            .expect("a valid origin"),
    ));
    let page = foreign_page(&channel.origin());
    let page_for_refused = page.clone();
    allowed.serve(axum::Router::new().route("/", get(move || async move { Html(page) })));
    refused
        .serve(axum::Router::new().route("/", get(move || async move { Html(page_for_refused) })));

    // The server side of the refusal: an origin outside the list is a 403.
    let status =
        reqwest::get(channel.url(&format!("/chat/cors/iframe?origin={}", refused.origin())))
            .await
            .expect("iframe request")
            .status();
    assert_eq!(status, 403);

    browser
        .run(|browser| async move {
            let topic = "cors";
            // The refused origin, with each HTTP transport; the frame both with
            // its own origin asked for (403) and without (`frame-ancestors`
            // and the postMessage target exclude it).
            browser.client.goto(&refused.url("/")).await.expect("open refused page");
            browser.wait_for("the refused page", "return window.__ready === true;").await;
            browser
                .js(
                    "window.__start(arguments[0], ['iframe', 'sse', 'long-poll', 'poll', 'websocket'], {}); window.__start(arguments[0], ['iframe'], { iframeOrigin: location.origin });",
                    vec![json!(topic)],
                )
                .await;
            // The allowed origin, in a second window, as the control.
            let refused_window = browser.client.window().await.expect("window");
            let control = browser.client.new_window(false).await.expect("new window");
            browser.client.switch_to_window(control.handle).await.expect("switch");
            browser.client.goto(&allowed.url("/")).await.expect("open allowed page");
            browser.wait_for("the allowed page", "return window.__ready === true;").await;
            browser
                .js("window.__start(arguments[0], ['iframe', 'websocket'], {});", vec![json!(topic)])
                .await;
            browser
                .wait_for(
                    "the allowed frame and websocket to be live",
                    "return window.__subs.iframe.status === 'live' && window.__subs.websocket.status === 'live';",
                )
                .await;
            publish_all(&channel, topic, &texts("c", 1..=3)).await;
            browser
                .wait_for(
                    "the allowed origin's frame to receive every event",
                    "return window.__subs.iframe.events.join() === 'c1,c2,c3' && window.__subs.websocket.events.join() === 'c1,c2,c3';",
                )
                .await;

            // Back on the refused page: every subscription was refused at least
            // twice (it keeps retrying) and received nothing.
            browser.client.switch_to_window(refused_window).await.expect("switch back");
            let subs = browser
                .wait_for(
                    "each refused subscription to have retried",
                    &format!("const s = {SUBS}; return Object.values(s).every(x => x.requests >= 2) && s;"),
                )
                .await;
            for (name, sub) in subs.as_object().expect("subs") {
                assert_eq!(sub["events"], json!([]), "{name} delivered events to a disallowed origin: {sub}");
                assert_ne!(sub["status"], json!("live"), "{name} went live for a disallowed origin");
            }
            // The WebSocket is refused by the server's origin policy (403
            // before the upgrade); SSE and the polls by the missing CORS grant.
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_from_a_refused_websocket_to_sse() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let mut site = Site::bind().await;
    let page = foreign_page("");
    // As a proxy that strips `Upgrade` would: the WebSocket route answers 426.
    let app = demo_app(1024, IframeConfig::default())
        .route("/auto", get(move || async move { Html(page) }))
        .layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                if request.uri().path().ends_with("/ws") {
                    return axum::http::StatusCode::UPGRADE_REQUIRED.into_response();
                }
                next.run(request).await
            },
        ));
    site.serve(app);
    browser
        .run(|browser| async move {
            let topic = "auto";
            browser
                .client
                .goto(&site.url("/auto"))
                .await
                .expect("open page");
            browser
                .wait_for("the page", "return window.__ready === true;")
                .await;
            browser
                .js(
                    "window.__start(arguments[0], ['auto'], {});",
                    vec![json!(topic)],
                )
                .await;
            browser
                .wait_for(
                    "auto to be live",
                    "return window.__subs.auto.status === 'live';",
                )
                .await;
            publish_all(&site, topic, &texts("a", 1..=3)).await;
            browser
                .wait_for(
                    "auto to receive every event",
                    "return window.__subs.auto.events.join() === 'a1,a2,a3';",
                )
                .await;
            let transport = browser
                .js("return window.__subs.auto.sub.transport;", vec![])
                .await;
            assert_eq!(transport, json!("sse"));

            // A filtered subscription sees only the events it asked for.
            browser
                .js(
                    "window.__start(arguments[0], ['long-poll'], { events: ['joined'] });",
                    vec![json!(topic)],
                )
                .await;
            browser
                .wait_for(
                    "the filtered subscription to be live",
                    "return window.__subs['long-poll'].status === 'live';",
                )
                .await;
            publish(&site, topic, "ann", "not for the filter").await;
            let joined = json!({ "type": "joined", "name": "zed" }).to_string();
            let response = reqwest::Client::new()
                .post(site.url(&format!("/chat/{topic}")))
                .header("content-type", "application/json")
                .body(joined)
                .send()
                .await
                .expect("publish joined");
            assert!(response.status().is_success());
            browser
                .wait_for(
                    "the filtered subscription to receive only `joined`",
                    "return window.__subs['long-poll'].events.join() === 'joined:zed';",
                )
                .await;
        })
        .await;
}

/// A channel whose payload JSON is written verbatim, raw line breaks and all.
#[push_runtime::push_channel(path = "/raw")]
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum RawEvent {
    Raw(Box<serde_json::value::RawValue>),
}

/// A page that imports the client of `{path}` and subscribes with each
/// transport, recording each event's data as JSON text.
fn recording_page(path: &str) -> String {
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>recording</title><body><script type="module">
const {{ subscribe, NAMES }} = await import("{path}/client.js");
window.__subs = {{}};
window.__start = (topic, transports, options) => {{
  for (const transport of transports) {{
    const state = {{ events: [], status: "connecting", sub: null }};
    state.sub = subscribe(topic, {{ transport, ...options, onStatus: (status) => (state.status = status) }});
    for (const name of NAMES) state.sub.on(name, (data) => state.events.push(JSON.stringify(data)));
    window.__subs[transport] = state;
  }}
}};
window.__ready = true;
</script>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_with_raw_line_breaks_arrives_intact_on_every_transport() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let hub = Hub::<RawEvent>::new();
    let mut site = Site::bind().await;
    let page = recording_page("/raw");
    site.serve(
        ChannelRouter::new(hub.clone())
            .into_router()
            .route("/", get(move || async move { Html(page) })),
    );
    browser
        .run(|browser| async move {
            browser.client.goto(&site.url("/")).await.expect("open page");
            browser.wait_for("the page", "return window.__ready === true;").await;
            browser
                .js("window.__start('lines', arguments[0], {});", vec![json!(TRANSPORTS)])
                .await;
            browser
                .wait_for(
                    "every transport to be live",
                    "return Object.values(window.__subs).length === 5 && Object.values(window.__subs).every(s => s.status === 'live');",
                )
                .await;
            // LF, CRLF, a lone CR and an empty line, each where JSON allows whitespace.
            let text = "{\n  \"a\": [1,\r\n2],\r\"b\": \"x\"\n\n}";
            let raw = serde_json::value::RawValue::from_string(text.to_owned()).expect("JSON");
            for _ in 0..2 {
                hub.publish("lines", RawEvent::Raw(raw.clone())).await.expect("publish");
            }
            let expected = r#"{"Raw":{"a":[1,2],"b":"x"}}"#;
            let seen = browser
                .wait_for(
                    "both events on every transport",
                    "const s = Object.fromEntries(Object.entries(window.__subs).map(([t, s]) => [t, s.events])); return Object.values(s).every(e => e.length >= 2) && s;",
                )
                .await;
            for transport in TRANSPORTS {
                assert_eq!(seen[transport], json!([expected, expected]), "{transport}: {seen}");
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forever_frame_that_brings_nothing_is_reopened_after_the_delay() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    // A server whose documents end right after `push.ready`: nothing, then `push.end`.
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let empty = move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let item = |event: &str| {
                format!(
                    r#"<script>m({{"cursor":"7-0","event":"{event}","data":{{"cursor":"7-0"}}}})</script>"#
                )
            };
            Html(format!(
                "<!doctype html><html><body>\n<script>\"use strict\";var t=location.origin;function m(x){{parent.postMessage(x,t)}}</script>\n{}\n{}</body></html>",
                item("push.ready"),
                item("push.end")
            ))
        }
    };
    let mut site = Site::bind().await;
    let page = foreign_page("");
    site.serve(
        demo_app(1024, IframeConfig::default())
            .route("/spin", get(move || async move { Html(page) }))
            .route("/empty/{topic}/iframe", get(empty)),
    );
    browser
        .run(|browser| async move {
            browser.client.goto(&site.url("/spin")).await.expect("open page");
            browser.wait_for("the page", "return window.__ready === true;").await;
            browser
                .js(
                    "window.__start('idle', ['iframe'], { base: location.origin + '/empty', retry: { min: 1000, max: 1000 } });",
                    vec![],
                )
                .await;
            browser
                .wait_for("the frame to be live", "return window.__subs.iframe.status === 'live';")
                .await;
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            // A delay of 0.5 to 1 s before each reopening: at most 5 in 2 s.
            let count = requests.load(Ordering::SeqCst);
            assert!(
                (2..=6).contains(&count),
                "{count} documents in 2 s: reopened at once instead of after the delay"
            );
        })
        .await;
}

// ------------------------------------------------------------ credentials

/// What the authorization hook saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    route: String,
    cookie: Option<String>,
    authorization: Option<String>,
    ticket: Option<String>,
}

type Record = std::sync::Arc<std::sync::Mutex<Vec<Seen>>>;

/// A hook that records what it sees; topics named `private…` need the
/// `session=ann` cookie, the others are open to anyone.
fn recording_hook(
    record: Record,
) -> impl Fn(push_runtime::AuthRequest) -> std::future::Ready<Result<push_runtime::Principal, Refusal>>
+ Clone {
    move |request: push_runtime::AuthRequest| {
        let header = |name| {
            request
                .parts
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("?").to_owned())
        };
        let route = request.parts.uri.path().rsplit('/').next().unwrap_or("");
        let ticket = request.parts.uri.query().and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("ticket="))
                .map(str::to_owned)
        });
        let cookie = header("cookie");
        record.lock().unwrap().push(Seen {
            route: route.to_owned(),
            cookie: cookie.clone(),
            authorization: header("authorization"),
            ticket,
        });
        let signed_in = cookie.is_some_and(|c| c.split("; ").any(|c| c == "session=ann"));
        std::future::ready(
            if request.topic.as_str().starts_with("private") && !signed_in {
                Err(Refusal::unauthorized("sign in first"))
            } else {
                Ok(push_runtime::Principal::new("someone"))
            },
        )
    }
}

/// A channel on `policy` with the recording hook, publishing open, and
/// `/login`, which gives the browser a session cookie that a page of another
/// site may carry (`SameSite=None; Secure`, which Chromium accepts from
/// `http://localhost`).
fn credentials_app(policy: push_runtime::OriginPolicy, record: Record) -> axum::Router {
    let login = || async {
        (
            [(
                axum::http::header::SET_COOKIE,
                "session=ann; Path=/; SameSite=None; Secure; HttpOnly",
            )],
            Html("signed in"),
        )
    };
    axum::Router::new().route("/login", get(login)).merge(
        ChannelRouter::new(Hub::<ChatEvent>::new())
            .origins(policy)
            .authorize(recording_hook(record))
            .publish(allow)
            .into_router(),
    )
}

/// A page that imports the channel's client from `channel` and subscribes
/// with each transport; `auth` picks a credentials provider: `"ticket"`
/// (a header on polls, a fresh `ticket` elsewhere, each call recorded in
/// `__authCalls`), `"decline"` (always `null`), `"once"` (a ticket for the
/// first connection, `null` after), or none.
fn credentials_page(channel: &str) -> String {
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>credentials</title><body><script type="module">
const {{ subscribe, NAMES }} = await import("{channel}/chat/client.js");
window.__subs = {{}};
window.__authCalls = [];
let tickets = 0;
const providers = {{
  ticket: async (context) => {{
    window.__authCalls.push(context);
    tickets += 1;
    if (context.transport === "poll" || context.transport === "long-poll") return {{ headers: {{ authorization: `Bearer b-${{tickets}}` }} }};
    return {{ query: {{ ticket: `t-${{tickets}}` }} }};
  }},
  decline: (context) => {{ window.__authCalls.push(context); return null; }},
  once: (context) => {{ window.__authCalls.push(context); return context.reason === "connect" ? {{ query: {{ ticket: "t-once" }} }} : null; }},
}};
window.__start = (topic, transports, options, auth) => {{
  for (const transport of transports) {{
    const state = {{ events: [], status: "connecting", error: null, sub: null }};
    state.sub = subscribe(topic, {{ transport, retry: {{ min: 100, max: 400 }}, ...options,
      // A frame of another origin posts to this page's (which that origin's policy lists).
      ...(transport === "iframe" && "{channel}" ? {{ iframeOrigin: location.origin }} : {{}}),
      ...(auth ? {{ auth: providers[auth] }} : {{}}),
      onStatus: (status, info) => {{ state.status = status; if (info.error) state.error = info.error; }} }});
    for (const name of NAMES) state.sub.on(name, (data) => state.events.push(data.text));
    window.__subs[transport] = state;
  }}
}};
window.__ready = true;
</script>"#
    )
}

/// Expression: each subscription's events, status, error and requests.
const CREDENTIAL_SUBS: &str = "Object.fromEntries(Object.entries(window.__subs).map(([t, s]) => [t, { events: s.events, status: s.status, error: s.error, requests: s.sub.stats.requests }]))";

/// Waits until `condition` (an expression over `s`, the page's
/// subscriptions as [`CREDENTIAL_SUBS`] shows them) holds; on a timeout the
/// panic shows the subscriptions and what the hook saw.
async fn wait_subs(browser: &Browser, record: &Record, what: &str, condition: &str) -> Value {
    let script = format!("const s = {CREDENTIAL_SUBS}; return ({condition}) ? s : false;");
    let deadline = std::time::Instant::now() + harness::PATIENCE;
    loop {
        let value = browser.js(&script, vec![]).await;
        if value != json!(false) {
            return value;
        }
        if std::time::Instant::now() > deadline {
            let subs = browser
                .js(&format!("return {CREDENTIAL_SUBS};"), vec![])
                .await;
            let seen = record.lock().unwrap().clone();
            panic!("timed out waiting for {what}; subscriptions {subs:#}; the hook saw {seen:#?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The page's site (127.0.0.1) and the channel's (localhost) are different
/// sites to Chromium: every request of the page to the channel is cross-site.
struct CrossSite {
    page: Site,
    channel: Site,
    record: Record,
}

impl CrossSite {
    async fn start(policy: impl FnOnce(&str) -> push_runtime::OriginPolicy) -> Self {
        let mut page = Site::bind().await;
        let mut channel = Site::bind().await;
        let record = Record::default();
        channel.serve(credentials_app(policy(&page.origin()), record.clone()));
        let html = credentials_page(&Self::channel_origin(&channel));
        page.serve(axum::Router::new().route("/", get(move || async move { Html(html) })));
        Self {
            page,
            channel,
            record,
        }
    }

    fn channel_origin(channel: &Site) -> String {
        format!("http://localhost:{}", channel.addr.port())
    }

    /// Signs the browser in on the channel's site, then opens the page.
    async fn open(&self, browser: &Browser) {
        let login = format!("{}/login", Self::channel_origin(&self.channel));
        browser.client.goto(&login).await.expect("sign in");
        browser
            .wait_for(
                "the session cookie",
                "return document.body.textContent === 'signed in';",
            )
            .await;
        browser
            .client
            .goto(&self.page.url("/"))
            .await
            .expect("open the page");
        browser
            .wait_for("the page", "return window.__ready === true;")
            .await;
    }

    /// The routes whose requests reached the hook, with whether each carried the cookie.
    fn cookies_seen(&self) -> std::collections::BTreeMap<String, Vec<bool>> {
        let mut map = std::collections::BTreeMap::<String, Vec<bool>>::new();
        for seen in self.record.lock().unwrap().iter() {
            map.entry(seen.route.clone())
                .or_default()
                .push(seen.cookie.is_some());
        }
        map
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentialed_origin_s_cookies_reach_the_hook_on_every_transport() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let sites = CrossSite::start(|page| {
        push_runtime::OriginPolicy::default()
            .allow_credentials([page])
            .expect("a valid origin")
    })
    .await;
    browser
        .run(|browser| async move {
            sites.open(browser).await;
            browser
                .js(
                    "window.__start('private-c', arguments[0], { credentials: 'include' });",
                    vec![json!(TRANSPORTS)],
                )
                .await;
            wait_subs(
                browser,
                &sites.record,
                "every transport to be live with the cookie",
                "Object.values(s).every(x => x.status === 'live')",
            )
            .await;
            let channel = &sites.channel;
            publish_all(channel, "private-c", &texts("c", 1..=3)).await;
            wait_subs(
                browser,
                &sites.record,
                "every transport to receive c1..c3",
                "Object.values(s).every(x => x.events.join() === 'c1,c2,c3')",
            )
            .await;
            let seen = sites.cookies_seen();
            for route in ["sse", "poll", "long-poll", "ws", "iframe"] {
                let cookies = seen.get(route).cloned().unwrap_or_default();
                assert!(
                    !cookies.is_empty() && cookies.iter().all(|c| *c),
                    "{route}: the hook saw the cookie on every request: {seen:?}"
                );
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_origin_s_cookies_never_reach_the_hook() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let sites = CrossSite::start(|page| {
        push_runtime::OriginPolicy::default()
            .allow([page])
            .expect("a valid origin")
    })
    .await;
    browser
        .run(|browser| async move {
            sites.open(browser).await;
            // A public topic, asking for cookies: the WebSocket and the frame
            // (whose cookies the browser sends anyway) go live anonymously;
            // the browser refuses SSE and the polls their answers, which grant
            // no credentials.
            browser
                .js(
                    "window.__start('open', arguments[0], { credentials: 'include' });",
                    vec![json!(TRANSPORTS)],
                )
                .await;
            wait_subs(browser, &sites.record, "the websocket and the frame to be live, the others to have retried", "s.websocket.status === 'live' && s.iframe.status === 'live' && s.sse.requests >= 2 && s.poll.requests >= 2 && s['long-poll'].requests >= 2").await;
            let channel = &sites.channel;
            publish_all(channel, "open", &texts("r", 1..=2)).await;
            let subs = wait_subs(browser, &sites.record, "the websocket and the frame to receive r1, r2", "s.websocket.events.join() === 'r1,r2' && s.iframe.events.join() === 'r1,r2'").await;
            for transport in ["sse", "poll", "long-poll"] {
                assert_eq!(subs[transport]["events"], json!([]), "{transport}: {subs}");
                assert_ne!(subs[transport]["status"], json!("live"), "{transport}: {subs}");
            }

            // A topic that needs the cookie: a page of this origin cannot
            // open a cookie-authenticated WebSocket or frame.
            browser
                .js(
                    "window.__subs = {}; window.__start('private-r', ['websocket', 'iframe'], { credentials: 'include' });",
                    vec![],
                )
                .await;
            let subs = wait_subs(browser, &sites.record, "the private websocket and frame to be refused twice", "s.websocket.requests >= 2 && s.iframe.requests >= 2").await;
            publish_all(channel, "private-r", &texts("p", 1..=2)).await;
            for transport in ["websocket", "iframe"] {
                assert_ne!(subs[transport]["status"], json!("live"), "{transport}: {subs}");
            }
            let seen = sites.cookies_seen();
            for route in ["sse", "poll", "long-poll", "ws", "iframe"] {
                let cookies = seen.get(route).cloned().unwrap_or_default();
                assert!(
                    !cookies.is_empty() && cookies.iter().all(|c| !c),
                    "{route}: requests reached the hook, none with the cookie: {seen:?}"
                );
            }
            let events = browser
                .js("return Object.values(window.__subs).map(s => s.events);", vec![])
                .await;
            assert_eq!(events, json!([[], []]), "nothing private arrived");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_provider_s_header_or_ticket_reaches_the_hook_on_every_transport() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let record = Record::default();
    let mut site = Site::bind().await;
    let page = credentials_page("");
    site.serve(
        credentials_app(push_runtime::OriginPolicy::default(), record.clone())
            .route("/", get(move || async move { Html(page) })),
    );
    browser
        .run(|browser| async move {
            browser.client.goto(&site.url("/")).await.expect("open page");
            browser.wait_for("the page", "return window.__ready === true;").await;
            browser
                .js("window.__start('tickets', arguments[0], {}, 'ticket');", vec![json!(TRANSPORTS)])
                .await;
            wait_subs(browser, &record, "every transport to be live", "Object.values(s).length === 5 && Object.values(s).every(x => x.status === 'live')").await;
            // A reconnect asks the provider again: a fresh ticket each time.
            for transport in TRANSPORTS {
                browser
                    .js("window.__subs[arguments[0]].sub.disconnect();", vec![json!(transport)])
                    .await;
            }
            publish_all(&site, "tickets", &texts("k", 1..=2)).await;
            wait_subs(browser, &record, "every transport to receive k1, k2 after its reconnect", "Object.values(s).every(x => x.status === 'live' && x.events.join() === 'k1,k2')").await;
            let calls = browser.js("return window.__authCalls;", vec![]).await;
            for transport in TRANSPORTS {
                let reasons: Vec<&Value> = calls
                    .as_array()
                    .expect("calls")
                    .iter()
                    .filter(|c| c["transport"] == json!(transport))
                    .map(|c| &c["reason"])
                    .collect();
                assert_eq!(reasons.first(), Some(&&json!("connect")), "{transport}: {calls}");
                assert!(reasons.contains(&&json!("reconnect")), "{transport}: {calls}");
            }
            let seen = record.lock().unwrap().clone();
            for route in ["sse", "poll", "long-poll", "ws", "iframe"] {
                let mine: Vec<&Seen> = seen.iter().filter(|s| s.route == route).collect();
                assert!(mine.len() >= 2, "{route}: connect and reconnect: {seen:?}");
                let mut credentials: Vec<String> = Vec::new();
                for s in &mine {
                    let credential = if route.ends_with("poll") {
                        assert_eq!(s.ticket, None, "{route}: no secret in the URL of a poll");
                        s.authorization.clone().filter(|a| a.starts_with("Bearer b-"))
                    } else {
                        s.ticket.clone().filter(|t| t.starts_with("t-"))
                    };
                    let credential = credential
                        .unwrap_or_else(|| panic!("{route}: every request has the provider's credential: {s:?}"));
                    credentials.push(credential);
                }
                credentials.dedup();
                assert!(credentials.len() >= 2, "{route}: a fresh one after the reconnect: {credentials:?}");
            }

            // A provider that declines: the subscription closes with an
            // error, and nothing connects without credentials.
            let before = record.lock().unwrap().len();
            browser
                .js("window.__subs = {}; window.__start('tickets', ['sse', 'poll'], {}, 'decline');", vec![])
                .await;
            let subs = wait_subs(browser, &record, "both to close with an error", "Object.values(s).every(x => x.status === 'closed')").await;
            for transport in ["sse", "poll"] {
                assert_eq!(subs[transport]["error"]["reason"], json!("connect"), "{subs}");
                assert_eq!(subs[transport]["requests"], json!(0), "{subs}");
            }
            assert_eq!(record.lock().unwrap().len(), before, "no request without credentials");

            // A 401 on a poll without a provider ends the subscription with
            // the status (EventSource, WebSocket and frames hide it from pages).
            browser
                .js("window.__subs = {}; window.__start('private-x', ['poll', 'long-poll'], {});", vec![])
                .await;
            let subs = wait_subs(
                browser,
                &record,
                "both polls to close on the 401",
                "Object.values(s).every(x => x.status === 'closed')",
            )
            .await;
            for transport in ["poll", "long-poll"] {
                assert_eq!(subs[transport]["error"]["reason"], json!("refused"), "{subs}");
                assert_eq!(subs[transport]["error"]["status"], json!(401), "{subs}");
                assert_eq!(subs[transport]["requests"], json!(1), "no retry: {subs}");
            }
        })
        .await;
}

// ------------------------------------------------- expiry (client side)

/// A request to the scripted server below: its route, query and `Authorization`.
type Request = (String, String, Option<String>);

/// One item of the scripted server below: `(cursor, event, data)`.
type Scripted = (&'static str, &'static str, Value);

/// What a scripted channel answers: a connection from the start delivers
/// `m1` and then says the authorization expired (as the protocol has it:
/// `push.expired` with the cursor to resume from, then the end; a WebSocket
/// closes with 4401; a poll is answered 401 `authorization expired`); one
/// resuming after `5-1` gets `m2`, then nothing more.
#[derive(Clone, Default)]
struct ExpiringChannel {
    /// Each request: its route, query and `Authorization`.
    requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
}

fn message(text: &str) -> Value {
    json!({ "type": "message", "from": "ann", "text": text })
}

impl ExpiringChannel {
    /// Records the request; whether it resumes after `5-1` and how many
    /// such requests its route had (this one included).
    fn record(&self, route: &str, request: &axum::http::request::Parts) -> (bool, usize) {
        let mut requests = self.requests.lock().unwrap();
        let authorization = request
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let query = request.uri.query().unwrap_or("").to_owned();
        let resumes = |query: &str| query.split('&').any(|pair| pair == "after=5-1");
        let resumed = resumes(&query);
        requests.push((route.to_owned(), query, authorization));
        let count = requests
            .iter()
            .filter(|r| r.0 == route && resumes(&r.1))
            .count();
        (resumed, count)
    }

    fn first() -> Vec<Scripted> {
        vec![
            ("5-0", "push.ready", json!({ "cursor": "5-0" })),
            ("5-1", "message", message("m1")),
            ("5-1", "push.expired", json!({ "cursor": "5-1" })),
        ]
    }

    fn resumed() -> Vec<Scripted> {
        vec![
            ("5-1", "push.ready", json!({ "cursor": "5-1" })),
            ("5-2", "message", message("m2")),
        ]
    }

    fn router(self) -> axum::Router {
        use axum::body::Body;
        use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
        use futures_util::StreamExt;
        let stream = |chunks: Vec<String>, end: bool| {
            let chunks = futures_util::stream::iter(
                chunks
                    .into_iter()
                    .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(c))),
            );
            // A resumed stream stays open, as a live one does.
            let rest = futures_util::stream::pending().take(if end { 0 } else { 1 });
            Body::from_stream(chunks.chain(rest))
        };
        let sse = {
            let this = self.clone();
            move |request: axum::extract::Request| {
                let this = this.clone();
                async move {
                    let (parts, _) = request.into_parts();
                    let (resumed, _) = this.record("sse", &parts);
                    let items = if resumed {
                        Self::resumed()
                    } else {
                        Self::first()
                    };
                    let chunks = items
                        .into_iter()
                        .map(|(cursor, event, data)| {
                            format!("id: {cursor}\nevent: {event}\ndata: {data}\n\n")
                        })
                        .collect();
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                        stream(chunks, !resumed),
                    )
                }
            }
        };
        let iframe = {
            let this = self.clone();
            move |request: axum::extract::Request| {
                let this = this.clone();
                async move {
                    let (parts, _) = request.into_parts();
                    let (resumed, _) = this.record("iframe", &parts);
                    let items = if resumed {
                        Self::resumed()
                    } else {
                        Self::first()
                    };
                    let mut chunks = vec![format!(
                        "<!doctype html><html><body>{}\n<script>\"use strict\";var t=location.origin;function m(x){{parent.postMessage(x,t)}}</script>\n",
                        " ".repeat(1024)
                    )];
                    for (cursor, event, data) in items {
                        let item = json!({ "cursor": cursor, "event": event, "data": data });
                        chunks.push(format!("<script>m({item})</script>\n"));
                    }
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                        stream(chunks, !resumed),
                    )
                }
            }
        };
        let ws = {
            let this = self.clone();
            move |upgrade: WebSocketUpgrade, request: axum::extract::Request| {
                let this = this.clone();
                async move {
                    let (parts, _) = request.into_parts();
                    let (resumed, _) = this.record("ws", &parts);
                    upgrade.on_upgrade(move |mut socket| async move {
                        let items = if resumed {
                            Self::resumed()
                        } else {
                            Self::first()
                        };
                        for (cursor, event, data) in items {
                            let item = json!({ "cursor": cursor, "event": event, "data": data });
                            let _ = socket.send(Message::Text(item.to_string().into())).await;
                        }
                        if !resumed {
                            let close = CloseFrame {
                                code: 4401,
                                reason: "authorization expired".into(),
                            };
                            let _ = socket.send(Message::Close(Some(close))).await;
                        }
                        // Until the client goes.
                        while let Some(Ok(_)) = socket.recv().await {}
                    })
                }
            }
        };
        let poll = |route: &'static str| {
            let this = self.clone();
            move |request: axum::extract::Request| {
                let this = this.clone();
                async move {
                    let (parts, _) = request.into_parts();
                    let (resumed, count) = this.record(route, &parts);
                    let from_start = !parts.uri.query().unwrap_or("").contains("after=");
                    let answer = |cursor: &str, events: Value| {
                        json!({ "cursor": cursor, "more": false, "events": events })
                            .to_string()
                            .into_response()
                    };
                    let item = |cursor: &str, text: &str| json!({ "cursor": cursor, "event": "message", "data": message(text) });
                    match (from_start, resumed, count) {
                        (true, ..) => answer("5-1", json!([item("5-1", "m1")])),
                        (_, true, 1) => (
                            axum::http::StatusCode::UNAUTHORIZED,
                            "authorization expired",
                        )
                            .into_response(),
                        (_, true, _) => answer("5-2", json!([item("5-2", "m2")])),
                        // Held for good: nothing more is published.
                        _ => futures_util::future::pending::<axum::response::Response>().await,
                    }
                }
            }
        };
        axum::Router::new()
            .route("/x/{topic}/sse", get(sse))
            .route("/x/{topic}/iframe", get(iframe))
            .route("/x/{topic}/ws", get(ws))
            .route("/x/{topic}/poll", get(poll("poll")))
            .route("/x/{topic}/long-poll", get(poll("long-poll")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_authorization_is_renewed_through_the_provider_and_nothing_is_lost() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let channel = ExpiringChannel::default();
    let mut site = Site::bind().await;
    let page = credentials_page("");
    site.serve(
        credentials_app(push_runtime::OriginPolicy::default(), Record::default())
            .merge(channel.clone().router())
            .route("/", get(move || async move { Html(page) })),
    );
    let record = Record::default();
    browser
        .run(|browser| async move {
            browser.client.goto(&site.url("/")).await.expect("open page");
            browser.wait_for("the page", "return window.__ready === true;").await;
            browser
                .js(
                    "window.__start('e', arguments[0], { base: location.origin + '/x', pollInterval: 50 }, 'ticket');",
                    vec![json!(TRANSPORTS)],
                )
                .await;
            let subs = wait_subs(
                browser,
                &record,
                "every transport to get m1 then m2 across the expiry",
                "Object.values(s).length === 5 && Object.values(s).every(x => x.events.join() === 'm1,m2' && x.status === 'live')",
            )
            .await;
            let calls = browser.js("return window.__authCalls;", vec![]).await;
            let requests = channel.requests.lock().unwrap().clone();
            for (transport, route) in [("sse", "sse"), ("websocket", "ws"), ("iframe", "iframe"), ("poll", "poll"), ("long-poll", "long-poll")] {
                let reasons: Vec<&Value> = calls
                    .as_array()
                    .expect("calls")
                    .iter()
                    .filter(|c| c["transport"] == json!(transport))
                    .map(|c| &c["reason"])
                    .collect();
                assert_eq!(reasons, [&json!("connect"), &json!("expired")], "{transport}: {calls}");
                let mine: Vec<_> = requests.iter().filter(|r| r.0 == route).collect();
                // The resumed request: from the expiry's cursor, with the fresh credential.
                // (The last from 5-1: a poll's first one was answered 401.)
                let resumed = mine
                    .iter()
                    .rev()
                    .find(|r| r.1.contains("after=5-1") && (r.1.contains("ticket=t-") || r.2.is_some()))
                    .unwrap_or_else(|| panic!("{transport}: no resume from 5-1: {mine:?}"));
                let first = mine.first().expect("a first request");
                let credential = |r: &&Request| {
                    r.2.clone().unwrap_or_else(|| r.1.clone())
                };
                assert_ne!(credential(first), credential(resumed), "{transport}: a fresh credential");
                assert_eq!(subs[transport]["error"], Value::Null, "{transport}: {subs}");
            }

            // Without a provider, an expiry ends the subscription with an error;
            // with one that declines, too.
            browser
                .js(
                    "window.__subs = {}; window.__start('e', ['sse'], { base: location.origin + '/x' }); window.__start('e', ['websocket'], { base: location.origin + '/x' }, 'once');",
                    vec![],
                )
                .await;
            let subs = wait_subs(
                browser,
                &record,
                "both to close after m1",
                "Object.values(s).every(x => x.status === 'closed')",
            )
            .await;
            for transport in ["sse", "websocket"] {
                assert_eq!(subs[transport]["events"], json!(["m1"]), "{transport}: {subs}");
                assert_eq!(subs[transport]["error"]["reason"], json!("expired"), "{transport}: {subs}");
            }
        })
        .await;
}

/// A same-origin page with one subscription, recording the text and cursor
/// of each event and every status change with its transport and detail.
const WATCH_PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>watch</title><body><script type="module">
const { subscribe, NAMES } = await import("/chat/client.js");
window.__start = (topic, options) => {
  const state = { events: [], cursors: [], status: "connecting", changes: [], sub: null };
  // `tickets`: a credentials provider handing out numbered tickets, recording why it was asked.
  window.__authCalls = [];
  if (options.tickets) options.auth = ({ transport, reason }) => {
    const ticket = `t${window.__authCalls.length}`;
    window.__authCalls.push({ transport, reason, ticket });
    return { query: { ticket } };
  };
  state.sub = subscribe(topic, { ...options, onStatus: (status, info) => {
    state.status = status;
    state.changes.push({ status, transport: info.transport, detail: info.detail ?? null });
  } });
  for (const name of NAMES) state.sub.on(name, (data, item) => { state.events.push(data.text); state.cursors.push(item.cursor); });
  window.__sub = state;
};
window.__subscribe = subscribe;
window.__ready = true;
</script>"#;

/// Expression: what the watch page's subscription saw and its counters.
const WATCHED: &str = "({ events: window.__sub.events, status: window.__sub.status, transport: window.__sub.sub.transport, stats: window.__sub.sub.stats, changes: window.__sub.changes })";

/// Waits until the watch page's subscription received exactly `expected`,
/// failing with what it saw when it received more or other events.
async fn wait_watched(browser: &Browser, what: &str, expected: &[String]) -> Value {
    let deadline = std::time::Instant::now() + harness::PATIENCE;
    loop {
        let seen = browser.js(&format!("return {WATCHED};"), vec![]).await;
        let events = seen["events"].as_array().expect("events").clone();
        if events.len() >= expected.len() {
            assert_eq!(
                events,
                json!(expected).as_array().cloned().unwrap_or_default(),
                "{what}: {seen:#}"
            );
            return seen;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}; saw {seen:#}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn open_watch(browser: &Browser, url: &str, topic: &str, options: Value) {
    browser.client.goto(url).await.expect("open the page");
    browser
        .wait_for("the page", "return window.__ready === true;")
        .await;
    browser
        .js(
            "window.__start(arguments[0], arguments[1]);",
            vec![json!(topic), options],
        )
        .await;
}

/// Issue 16 (4): a WebSocket that worked is kept through an outage. The
/// server (a relay standing for it) is killed, listener and connections,
/// for a few seconds and restarted on the same port; the client retries
/// WebSocket with a growing delay, never falls back, and resumes from its
/// cursor: the events published meanwhile (held by the hub's history)
/// arrive once each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_keeps_a_websocket_that_worked_through_an_outage_with_backoff_and_no_loss() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let mut backend = Site::bind().await;
    backend.serve(
        demo_app(1024, IframeConfig::default()).route("/watch", get(|| async { Html(WATCH_PAGE) })),
    );
    let mut relay = harness::Relay::start(backend.addr).await;
    let url = relay.url("/watch");
    browser
        .run(|browser| async move {
            let topic = "outage";
            let min_delay = 250.0;
            open_watch(browser, &url, topic, json!({ "transport": "auto", "retry": { "min": min_delay } })).await;
            browser
                .wait_for("auto to be live", "return window.__sub.status === 'live';")
                .await;
            publish_all(&backend, topic, &texts("o", 1..=3)).await;
            let seen = wait_watched(browser, "o1..o3 before the outage", &texts("o", 1..=3)).await;
            assert_eq!(seen["transport"], json!("websocket"), "{seen:#}");

            let before = seen["stats"]["requests"].as_u64().expect("requests");
            let down = std::time::Instant::now();
            relay.kill().await;
            browser
                .wait_for(
                    "the client to see the cut",
                    "return window.__sub.status === 'reconnecting';",
                )
                .await;
            // Published while the server is unreachable: the hub keeps them.
            publish_all(&backend, topic, &texts("o", 4..=6)).await;
            // Down long enough for several attempts, and a few seconds in all.
            browser
                .wait_for(
                    "three attempts while down",
                    &format!("return window.__sub.sub.stats.requests >= {} + 3;", before),
                )
                .await;
            tokio::time::sleep(std::time::Duration::from_secs(3).saturating_sub(down.elapsed()))
                .await;
            let attempts = browser
                .js("return window.__sub.sub.stats.requests;", vec![])
                .await
                .as_u64()
                .expect("requests")
                - before;
            let elapsed = down.elapsed().as_millis() as f64;
            relay.restart().await;

            // With delays of at least min/2 doubling, n attempts take at
            // least min/2 × (2^n − 1): at most log2(2·elapsed/min + 1) fit.
            // Falling back in a cascade (or no backoff) makes many more.
            let bound = (2.0 * elapsed / min_delay + 1.0).log2().floor() as u64;
            eprintln!("{attempts} connection attempts in {elapsed} ms down (bound {})", bound + 1);
            assert!(
                attempts <= bound + 1,
                "{attempts} connection attempts in {elapsed} ms down: no backoff (at most {} expected)",
                bound + 1
            );

            browser
                .wait_for(
                    "live again on websocket",
                    "return window.__sub.status === 'live' && window.__sub.sub.transport === 'websocket';",
                )
                .await;
            publish_all(&backend, topic, &texts("o", 7..=9)).await;
            let seen = wait_watched(browser, "every event once, in order", &texts("o", 1..=9)).await;
            assert_eq!(seen["transport"], json!("websocket"), "{seen:#}");
            assert_eq!(seen["stats"]["fallbacks"], json!(0), "{seen:#}");
            let transports: Vec<&Value> = seen["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .map(|change| &change["transport"])
                .collect();
            assert!(
                transports.iter().all(|t| **t == json!("websocket")),
                "never left WebSocket: {seen:#}"
            );
            let cursors = browser.js("return window.__sub.cursors;", vec![]).await;
            let unique: std::collections::BTreeSet<_> =
                cursors.as_array().expect("cursors").iter().map(Value::to_string).collect();
            assert_eq!(unique.len(), 9, "each event once: {cursors}");
        })
        .await;
}

/// Whether the test lets WebSocket handshakes through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WsGate {
    /// Answered `426`, as by a proxy that strips `Upgrade`.
    Refuse,
    /// Held until the gate opens.
    Hold,
    Open,
}

/// Issue 16 (4): `auto` leaves a WebSocket that never worked after
/// `fallbackAfter` attempts, is live on SSE, probes WebSocket every
/// `probeInterval`, and when a probe works moves to it: the probe opened
/// from the cursor of its start while SSE went on delivering (its handshake
/// held meanwhile), so it brings those events again, and they are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_from_a_refused_websocket_and_upgrades_when_it_works_without_loss_or_duplicate()
 {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (gate, _) = tokio::sync::watch::channel(WsGate::Refuse);
    let gate = std::sync::Arc::new(gate);
    type Routes = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;
    let routes: Routes = Default::default();
    let held = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut site = Site::bind().await;
    let app = {
        let (gate, routes, held) = (gate.clone(), routes.clone(), held.clone());
        demo_app(1024, IframeConfig::default())
            .route("/watch", get(|| async { Html(WATCH_PAGE) }))
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let (gate, routes, held) = (gate.clone(), routes.clone(), held.clone());
                    async move {
                        let route = request
                            .uri()
                            .path()
                            .rsplit('/')
                            .next()
                            .unwrap_or("")
                            .to_owned();
                        if ["ws", "sse", "long-poll", "poll"].contains(&route.as_str()) {
                            let ticket = request.uri().query().and_then(|query| {
                                query
                                    .split('&')
                                    .find_map(|pair| pair.strip_prefix("ticket="))
                                    .map(str::to_owned)
                            });
                            routes.lock().unwrap().push((route.clone(), ticket));
                        }
                        if route == "ws" {
                            let mut open = gate.subscribe();
                            let now = *open.borrow_and_update();
                            match now {
                                WsGate::Refuse => {
                                    return axum::http::StatusCode::UPGRADE_REQUIRED
                                        .into_response();
                                }
                                WsGate::Hold => {
                                    held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    let _ = open.wait_for(|gate| *gate == WsGate::Open).await;
                                }
                                WsGate::Open => {}
                            }
                        }
                        next.run(request).await
                    }
                },
            ))
    };
    site.serve(app);
    browser
        .run(|browser| async move {
            let topic = "upgrade";
            let options = json!({
                "transport": "auto",
                "fallbackAfter": 2,
                "probeInterval": 300,
                "retry": { "min": 100, "max": 400 },
                "tickets": true,
            });
            open_watch(browser, &site.url("/watch"), topic, options).await;
            browser
                .wait_for("auto to be live", "return window.__sub.status === 'live';")
                .await;
            publish_all(&site, topic, &texts("a", 1..=3)).await;
            let seen = wait_watched(browser, "a1..a3 over SSE", &texts("a", 1..=3)).await;
            assert_eq!(seen["transport"], json!("sse"), "{seen:#}");
            assert_eq!(seen["stats"]["fallbacks"], json!(1), "{seen:#}");
            {
                let routes = routes.lock().unwrap();
                let first_sse = routes.iter().position(|r| r.0 == "sse").expect("an SSE request");
                let before: Vec<&str> = routes[..first_sse].iter().map(|r| r.0.as_str()).collect();
                assert_eq!(
                    before,
                    ["ws", "ws"],
                    "SSE after exactly fallbackAfter WebSocket attempts: {routes:?}"
                );
            }

            // The next probe's handshake is held: SSE delivers meanwhile.
            gate.send_replace(WsGate::Hold);
            let deadline = std::time::Instant::now() + harness::PATIENCE;
            while held.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                assert!(std::time::Instant::now() < deadline, "no probe of WebSocket");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            publish_all(&site, topic, &texts("b", 1..=5)).await;
            let mut expected = texts("a", 1..=3);
            expected.extend(texts("b", 1..=5));
            let seen = wait_watched(browser, "b1..b5 over SSE during the probe", &expected).await;
            assert_eq!(seen["transport"], json!("sse"), "{seen:#}");

            // Released: the probe starts after a3 and brings b1..b5 again.
            gate.send_replace(WsGate::Open);
            browser
                .wait_for(
                    "the upgrade to WebSocket",
                    "return window.__sub.sub.transport === 'websocket' && window.__sub.status === 'live';",
                )
                .await;
            publish_all(&site, topic, &texts("c", 1..=3)).await;
            expected.extend(texts("c", 1..=3));
            let seen = wait_watched(browser, "every event once, in order, across the upgrade", &expected).await;
            assert_eq!(seen["stats"]["upgrades"], json!(1), "{seen:#}");
            assert_eq!(seen["stats"]["fallbacks"], json!(1), "{seen:#}");
            assert_eq!(seen["stats"]["events"], json!(expected.len()), "{seen:#}");
            let last = seen["changes"].as_array().expect("changes").last().cloned();
            assert_eq!(
                last,
                Some(json!({ "status": "live", "transport": "websocket", "detail": "upgraded from sse to websocket" })),
                "{seen:#}"
            );
            // The upgraded WebSocket carries a ticket the provider gave for an upgrade.
            let calls = browser.js("return window.__authCalls;", vec![]).await;
            let ticket = routes
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|r| r.0 == "ws")
                .and_then(|r| r.1.clone())
                .expect("a ticket on the WebSocket");
            let call = calls
                .as_array()
                .expect("calls")
                .iter()
                .find(|call| call["ticket"] == json!(ticket))
                .cloned();
            assert_eq!(
                call,
                Some(json!({ "transport": "websocket", "reason": "upgrade", "ticket": ticket })),
                "{calls}"
            );
            // Nothing more arrives late from the closed SSE stream.
            publish(&site, topic, "ann", "d1").await;
            expected.push("d1".into());
            wait_watched(browser, "d1 once", &expected).await;
        })
        .await;
}

/// `Retry-After` as an HTTP date (IMF-fixdate), `seconds` from now, rounded up.
fn http_date_in(seconds: u64) -> String {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + seconds
        + 1;
    let (days, rest) = (unix / 86_400, unix % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[month as usize - 1],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Issue 16 (4): a poll answered `503` or `429` waits for its `Retry-After`
/// (seconds, or an HTTP date) before asking again, though its backoff alone
/// would retry within 50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_refused_as_busy_waits_for_its_retry_after() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    type Log = std::sync::Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>>;
    let log: Log = Default::default();
    let mut site = Site::bind().await;
    let app = {
        let log = log.clone();
        demo_app(1024, IframeConfig::default())
            .route("/watch", get(|| async { Html(WATCH_PAGE) }))
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let log = log.clone();
                    async move {
                        let path = request.uri().path();
                        let route = path.rsplit('/').next().unwrap_or("").to_owned();
                        let topic = path.split('/').nth(2).unwrap_or("").to_owned();
                        if !["poll", "long-poll"].contains(&route.as_str()) {
                            return next.run(request).await;
                        }
                        let first = {
                            let mut log = log.lock().unwrap();
                            log.push((topic.clone(), std::time::Instant::now()));
                            log.iter().filter(|(t, _)| *t == topic).count() == 1
                        };
                        match (first, topic.as_str()) {
                            (true, "busy-seconds") => (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                [(axum::http::header::RETRY_AFTER, "2".to_owned())],
                                "try later",
                            )
                                .into_response(),
                            (true, "busy-date") => (
                                axum::http::StatusCode::TOO_MANY_REQUESTS,
                                [(axum::http::header::RETRY_AFTER, http_date_in(2))],
                                "slow down",
                            )
                                .into_response(),
                            _ => next.run(request).await,
                        }
                    }
                },
            ))
    };
    site.serve(app);
    browser
        .run(|browser| async move {
            for (topic, transport) in [("busy-seconds", "poll"), ("busy-date", "long-poll")] {
                let options = json!({ "transport": transport, "retry": { "min": 20, "max": 50 }, "pollInterval": 100 });
                open_watch(browser, &site.url("/watch"), topic, options).await;
                browser
                    .wait_for("live after the refusal", "return window.__sub.status === 'live';")
                    .await;
                let seen = browser.js(&format!("return {WATCHED};"), vec![]).await;
                assert_eq!(seen["stats"]["reconnects"], json!(1), "{topic}: {seen:#}");
                let times: Vec<std::time::Instant> = log
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(t, _)| t == topic)
                    .map(|(_, at)| *at)
                    .collect();
                assert!(times.len() >= 2, "{topic}: {} requests", times.len());
                // The retry was scheduled when the answer arrived, after the
                // first request was logged: the gap can only be longer.
                let waited = times[1] - times[0];
                assert!(
                    waited >= std::time::Duration::from_millis(1900),
                    "{topic}: asked again after {waited:?}, before Retry-After"
                );
                publish(&site, topic, "ann", "after").await;
                wait_watched(browser, "the event after the wait", &["after".to_owned()]).await;
            }

            // Options out of range are refused with a message naming them.
            for (options, message) in [
                (json!({ "probeInterval": -1 }), "probeInterval must be a number of at least 0, not -1"),
                (json!({ "fallbackAfter": 1.5 }), "fallbackAfter must be a whole number of at least 1, not 1.5"),
                (json!({ "retry": { "maxRetryAfter": "1s" } }), "retry.maxRetryAfter must be a number of at least 0, not \"1s\""),
            ] {
                let error = browser
                    .js(
                        "try { window.__subscribe('x', arguments[0]).close(); return 'accepted'; } catch (error) { return error.message; }",
                        vec![options.clone()],
                    )
                    .await;
                assert_eq!(error, json!(message), "{options}");
            }
        })
        .await;
}

/// The real server's expiry, in Chromium, on every transport: the first
/// credential of each subscription (`t-1`…`t-5` in the query, `b-…` on
/// polls) expires a second and a half after the hook first sees it, later
/// ones after an hour. The server ends each stream with `push.expired`
/// (WebSocket: close 4401; a held long poll or the next short poll: `401`),
/// the client asks its `auth` provider and resumes from the cursor: every
/// event, before and after the expiry, arrives once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_expiry_is_renewed_on_every_transport_with_nothing_lost() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let first_use = Arc::new(Mutex::new(HashMap::<String, SystemTime>::new()));
    let hook = move |request: push_runtime::AuthRequest| {
        let first_use = Arc::clone(&first_use);
        async move {
            let query = request.parts.uri.query().unwrap_or("");
            let credential = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("ticket="))
                .or_else(|| {
                    request
                        .parts
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                })
                .ok_or_else(|| Refusal::unauthorized("a credential is required"))?
                .to_owned();
            let number: u32 = credential
                .get(2..)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Refusal::forbidden("unknown credential"))?;
            let lifetime = if number <= 5 {
                Duration::from_millis(1500)
            } else {
                Duration::from_secs(3600)
            };
            let since = *first_use
                .lock()
                .unwrap()
                .entry(credential.clone())
                .or_insert_with(SystemTime::now);
            Ok(push_runtime::Principal::new(credential).expires_at(since + lifetime))
        }
    };
    let hub = Hub::<ChatEvent>::new();
    let mut site = Site::bind().await;
    let page = credentials_page("");
    site.serve(
        ChannelRouter::new(hub.clone())
            .authorize(hook)
            .into_router()
            .route("/", get(move || async move { Html(page) })),
    );
    let record = Record::default();
    let say = |text: &str| ChatEvent::Message {
        from: "server".into(),
        text: text.into(),
    };
    browser
        .run(|browser| async move {
            browser.client.goto(&site.url("/")).await.expect("open page");
            browser.wait_for("the page", "return window.__ready === true;").await;
            browser
                .js(
                    "window.__start('x', arguments[0], { pollInterval: 50 }, 'ticket');",
                    vec![json!(TRANSPORTS)],
                )
                .await;
            wait_subs(
                browser,
                &record,
                "every transport to be live",
                "Object.values(s).length === 5 && Object.values(s).every(x => x.status === 'live')",
            )
            .await;
            hub.publish("x", say("e1")).await.expect("publish");
            // Every subscription renews its credential after the expiry.
            let expired = "return ['websocket', 'sse', 'long-poll', 'poll', 'iframe'].every(t => window.__authCalls.some(c => c.transport === t && c.reason === 'expired'));";
            browser.wait_for("every transport to renew after its expiry", expired).await;
            hub.publish("x", say("e2")).await.expect("publish");
            hub.publish("x", say("e3")).await.expect("publish");
            let subs = wait_subs(
                browser,
                &record,
                "every transport to get e1, e2, e3",
                "Object.values(s).every(x => x.events.length >= 3)",
            )
            .await;
            for transport in TRANSPORTS {
                assert_eq!(
                    subs[transport]["events"],
                    json!(["e1", "e2", "e3"]),
                    "{transport}: nothing lost, nothing twice: {subs}"
                );
                assert_eq!(subs[transport]["error"], Value::Null, "{transport}: {subs}");
            }
        })
        .await;
}

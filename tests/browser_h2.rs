//! Headless Chromium over HTTPS and HTTP/2 against `serve::Server`: one page
//! holds 10 `EventSource` subscriptions plus a WebSocket, a long poll, a
//! short poll and a forever frame, all live at once, which HTTP/1.1's six
//! connections per server could not carry. Chromium runs with
//! `--ignore-certificate-errors` (the certificate is made by the test).

#[path = "browser/harness.rs"]
#[allow(dead_code, reason = "this test uses part of the harness")]
mod harness;
mod serving;
mod support;

use axum::response::Html;
use axum::routing::get;
use harness::{Browser, ONE_BROWSER};
use push_runtime::serve::Server;
use push_runtime::{ChannelRouter, Hub};
use serde_json::json;
use serving::TestPki;
use support::channel::{TestEvent, note};

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>many streams</title><body><script type="module">
const { subscribe, NAMES } = await import("/t/client.js");
window.__subs = {};
const transports = [...Array(10).keys()].map(() => "sse").concat(["websocket", "long-poll", "poll", "iframe"]);
transports.forEach((transport, i) => {
  const state = { transport, events: [], status: "connecting" };
  const sub = subscribe("room", { transport, onStatus: (status) => (state.status = status) });
  for (const name of NAMES) sub.on(name, (data) => state.events.push(JSON.stringify(data)));
  window.__subs[transport + i] = state;
});
window.__ready = true;
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_event_sources_and_every_transport_share_one_http2_connection() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start_with_args(&["--ignore-certificate-errors"]).await else {
        return;
    };
    let pki = TestPki::new();
    let hub = Hub::<TestEvent>::new();
    let app: axum::Router = ChannelRouter::new(hub.clone())
        .into_router()
        .route("/", get(|| async { Html(PAGE) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::new(listener, app).tls(pki.server_config());
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    let serving = tokio::spawn(server.run());

    browser
        .run(|browser| async move {
            let url = format!("https://127.0.0.1:{}/", addr.port());
            browser.client.goto(&url).await.expect("open page");
            browser.wait_for("the page", "return window.__ready === true;").await;
            browser
                .wait_for(
                    "14 subscriptions live",
                    "const s = Object.values(window.__subs); return s.length === 14 && s.every(s => s.status === 'live');",
                )
                .await;
            hub.publish("room", note(1)).await.expect("publish");
            let seen = browser
                .wait_for(
                    "the event on all 14",
                    "const s = Object.values(window.__subs); return s.every(s => s.events.length >= 1) && s.map(s => [s.transport, s.events[0]]);",
                )
                .await;
            for entry in seen.as_array().expect("a list") {
                assert_eq!(entry[1], json!(r#"{"note":"n1"}"#), "{seen}");
            }
            let protocols = browser
                .js(
                    "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(e => [e.name, e.nextHopProtocol]);",
                    vec![],
                )
                .await;
            for entry in protocols.as_array().expect("a list") {
                assert_eq!(entry[1], json!("h2"), "{protocols}");
            }
            // Over HTTP/1.1 the 14 would need 13 connections at least (and
            // Chromium allows 6). Chromium 156 opened 2 here, both HTTP/2.
            let (accepted, http2) = (stats.accepted(), stats.http2());
            assert_eq!(http2, accepted, "every connection spoke HTTP/2");
            assert!(accepted <= 3, "14 subscriptions over {accepted} connections");
        })
        .await;
    serving.abort();
}

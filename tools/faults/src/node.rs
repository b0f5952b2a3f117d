//! `faults node`: one node of the service, a hub over a [`RedisBroker`]
//! serving [`Probe`] on every transport and `POST /probe/{topic}`, with fast
//! settings (epoch check 200 ms, short backoff, quick heartbeats) so that
//! faults are noticed within a fraction of a second. Prints
//! `listening on http://ADDR` once it accepts connections; runs until killed.

use crate::probe::{HISTORY_LEN, Probe};
use axum::serve::ListenerExt;
use push_runtime::broker::{RedisBroker, RedisConfig};
use push_runtime::{
    ChannelRouter, Hub, HubConfig, IframeConfig, Limits, PollConfig, PublishRequest, Refusal,
    SseConfig, WsConfig,
};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn allow(request: PublishRequest<Probe>) -> Result<Probe, Refusal> {
    Ok(request.event)
}

/// Where the broker's Redis is.
#[derive(Clone, Debug)]
pub enum Backend {
    /// One server (`--redis URL`).
    Single(String),
    /// Seed URLs of a Redis Cluster's nodes (`--redis-cluster URL,URL,…`).
    Cluster(Vec<String>),
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Single(url) => f.write_str(url),
            Backend::Cluster(urls) => write!(f, "the cluster at {}", urls.join(",")),
        }
    }
}

/// The broker's settings: fast to notice and to recover.
fn redis_config(backend: &Backend, prefix: &str) -> RedisConfig {
    match backend {
        Backend::Single(url) => RedisConfig::new(url.as_str()),
        Backend::Cluster(urls) => RedisConfig::cluster(urls.iter().cloned()),
    }
    .key_prefix(prefix)
    .history_len(HISTORY_LEN)
    .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
    .command_timeout(Duration::from_secs(1))
    .epoch_check_interval(Duration::from_millis(200))
}

pub async fn run(redis: &Backend, prefix: &str, addr: &str) -> Result<(), String> {
    // Redis may be down when a node (re)starts: retry for a while.
    let deadline = Instant::now() + Duration::from_secs(15);
    let broker = loop {
        match RedisBroker::connect(redis_config(redis, prefix)).await {
            Ok(broker) => break broker,
            Err(error) if Instant::now() < deadline => {
                tracing::warn!(%error, "redis not reachable yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(format!("{redis}: {error}")),
        }
    };
    let mut config = HubConfig::default();
    config.history_len = HISTORY_LEN;
    let hub = Hub::<Probe>::with_broker(Arc::new(broker), config);
    let app: axum::Router = ChannelRouter::new(hub)
        .sse(SseConfig::default().heartbeat(Duration::from_millis(200)))
        .websocket(WsConfig::default().ping_interval(Duration::from_millis(300)))
        .iframe(IframeConfig::default().heartbeat(Duration::from_millis(200)))
        .poll(PollConfig::default().long_poll_timeout(Duration::from_secs(1)))
        .limits(Limits::default())
        .publish(allow)
        .into_router();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("bind {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{local}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    axum::serve(
        listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        }),
        app.into_make_service(),
    )
    .await
    .map_err(|e| e.to_string())
}

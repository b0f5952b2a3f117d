//! Two nodes of one service on two ports, sharing one Redis: publish on
//! either, subscribe on either, resume on the other with your cursor.
//!
//! ```text
//! cargo run --example redis_nodes      # REDIS_URL, PUSH_ADDRS override the defaults
//! REDIS_CLUSTER=redis://127.0.0.1:7000,redis://127.0.0.1:7001 cargo run --example redis_nodes   # a Redis Cluster
//! curl -N localhost:3001/news/world/sse                        # subscribe on node 1
//! curl -X POST localhost:3002/news/world \
//!      -H 'content-type: application/json' -d '{"headline":"hi"}'   # publish on node 2
//! curl -N 'localhost:3002/news/world/sse?after=<cursor seen on node 1>'   # resume on node 2
//! curl localhost:3001/metrics      # node 1's figures, its link to Redis included
//! ```
//!
//! In production each node is its own process (same code, one address each)
//! behind any load balancer; running them in one process here only saves
//! you a terminal.

use push_runtime::broker::{RedisBroker, RedisConfig};
use push_runtime::metrics::Metrics;
use push_runtime::{ChannelRouter, Hub, HubConfig, PublishRequest, Refusal};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

const DEFAULT_ADDRS: &str = "127.0.0.1:3001,127.0.0.1:3002";

/// A news feed.
#[push_runtime::push_channel(path = "/news")]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum NewsEvent {
    /// A headline.
    Headline { headline: String },
}

async fn accept(request: PublishRequest<NewsEvent>) -> Result<NewsEvent, Refusal> {
    Ok(request.event)
}

/// One node: its own hub and broker (its own Redis connections and reader), its own port.
async fn serve_node(
    addr: SocketAddr,
    redis: RedisConfig,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = HubConfig::default();
    let broker = RedisBroker::connect(redis.history_len(config.history_len)).await?;
    let hub = Hub::<NewsEvent>::with_broker(Arc::new(broker), config);
    // Each node's own figures at `/metrics`: scrape every node.
    let metrics = Metrics::new().hub(&hub);
    let app: axum::Router = ChannelRouter::new(hub)
        .publish(accept)
        .into_router()
        .merge(metrics.router());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("node listening on http://{}", listener.local_addr()?);
    println!("node listening on http://{}", listener.local_addr()?);
    // TCP_NODELAY, routes prepared once, HTTP/2, deadlines on stalled peers.
    push_runtime::serve::Server::new(listener, app).run().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // A cluster's seed nodes (REDIS_CLUSTER, comma-separated), or one server.
    let redis = match std::env::var("REDIS_CLUSTER") {
        Ok(seeds) => RedisConfig::cluster(seeds.split(',').map(str::trim)),
        Err(_) => RedisConfig::new(
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
        ),
    };
    let addrs = std::env::var("PUSH_ADDRS").unwrap_or_else(|_| DEFAULT_ADDRS.to_owned());
    let mut nodes = tokio::task::JoinSet::new();
    for addr in addrs.split(',') {
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|e| format!("PUSH_ADDRS must be addresses like {DEFAULT_ADDRS}: {e}"))?;
        nodes.spawn(serve_node(addr, redis.clone()));
    }
    // The first node to stop (an error, e.g. Redis unreachable at start) stops the example.
    if let Some(result) = nodes.join_next().await {
        result??;
    }
    Ok(())
}

//! A chat server: `ChatEvent`s pushed to every client of a room, over every
//! transport the framework offers.
//!
//! ```text
//! cargo run --example chat                      # listens on 127.0.0.1:3000 (PUSH_ADDR overrides)
//! curl -N localhost:3000/chat/lobby/sse         # subscribe (another terminal)
//! curl -X POST localhost:3000/chat/lobby \
//!      -H 'content-type: application/json' \
//!      -d '{"type":"message","from":"ann","text":"hi"}'
//! ```

mod event;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use event::ChatEvent;
use push_runtime::{ChannelRouter, Hub, PublishRequest, Refusal};
use std::net::SocketAddr;

const DEFAULT_ADDR: &str = "127.0.0.1:3000";

/// Anyone may publish in this demo, but a message must name its sender:
/// a real application would take the sender from the caller's credentials.
async fn check_publish(request: PublishRequest<ChatEvent>) -> Result<ChatEvent, Refusal> {
    let named = match &request.event {
        ChatEvent::Message { from, .. } => from,
        ChatEvent::Joined { name } | ChatEvent::Left { name } => name,
    };
    if named.trim().is_empty() {
        return Err(Refusal::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "a chat event needs a non-empty name",
        ));
    }
    Ok(request.event)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let addr: SocketAddr = std::env::var("PUSH_ADDR")
        .unwrap_or_else(|_| DEFAULT_ADDR.to_owned())
        .parse()
        .map_err(|e| format!("PUSH_ADDR must be an address like {DEFAULT_ADDR}: {e}"))?;

    let hub = Hub::<ChatEvent>::new();
    let app = Router::new().route("/", get(index)).merge(
        ChannelRouter::new(hub.clone())
            .publish(check_publish)
            .into_router(),
    );

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!("chat server listening on http://{local}");
    println!("listening on http://{local}");
    axum::serve(listener, app).await?;
    Ok(())
}

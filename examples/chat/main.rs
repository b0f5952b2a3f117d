//! A chat server: `ChatEvent`s pushed to every client of a room, over every
//! transport the framework offers.
//!
//! ```text
//! cargo run --example chat                      # listens on 127.0.0.1:3000 (PUSH_ADDR overrides)
//! curl -N localhost:3000/chat/lobby/sse         # subscribe (another terminal)
//! curl -X POST localhost:3000/chat/lobby \
//!      -H 'content-type: application/json' \
//!      -d '{"type":"message","from":"ann","text":"hi"}'
//! curl localhost:3000/metrics                   # the operator's figures (Prometheus text)
//! ```
//!
//! `PUSH_ALLOWED_ORIGINS=https://a.example,http://localhost:8080` lets pages
//! of those origins use every route (default: the server's own pages only).
//! Ctrl-C or SIGTERM ends every stream, telling clients to reconnect, and
//! stops the server.
//!
//! It serves HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port,
//! or, with `PUSH_TLS_CERT` and `PUSH_TLS_KEY` set to PEM files, HTTPS
//! with HTTP/2 or HTTP/1.1 chosen by ALPN (`push_runtime::serve::Server`):
//!
//! ```text
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
//!     -subj /CN=localhost -addext subjectAltName=DNS:localhost \
//!     -keyout key.pem -out cert.pem
//! PUSH_TLS_CERT=cert.pem PUSH_TLS_KEY=key.pem cargo run --example chat
//! curl -k --http2 -N https://localhost:3000/chat/lobby/sse
//! ```

mod event;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use event::ChatEvent;
use push_runtime::metrics::Metrics;
use push_runtime::serve::{Server, TlsConfig};
use push_runtime::{ChannelRouter, Hub, OriginPolicy, PublishRequest, Refusal};
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

    let origins = match std::env::var("PUSH_ALLOWED_ORIGINS") {
        Ok(list) => OriginPolicy::from_list(&list)
            .map_err(|e| format!("PUSH_ALLOWED_ORIGINS: {e} (comma-separated origins)"))?,
        Err(_) => OriginPolicy::same_origin(),
    };
    if !origins.allowed().is_empty() {
        tracing::info!(allowed = ?origins.allowed(), "pages of other origins allowed");
    }

    let hub = Hub::<ChatEvent>::new();
    let app = Router::new().route("/", get(index)).merge(
        ChannelRouter::new(hub.clone())
            .origins(origins)
            .publish(check_publish)
            .into_router(),
    );
    // `GET /metrics` for the operator's Prometheus. A real service would
    // serve it on an internal port, or behind its own guard.
    let app = app.merge(Metrics::new().hub(&hub).router());

    let tls = match (
        std::env::var_os("PUSH_TLS_CERT"),
        std::env::var_os("PUSH_TLS_KEY"),
    ) {
        (Some(cert), Some(key)) => Some(
            TlsConfig::from_pem_files(&cert, &key)
                .map_err(|e| format!("PUSH_TLS_CERT, PUSH_TLS_KEY: {e}"))?,
        ),
        (None, None) => None,
        _ => return Err("set both PUSH_TLS_CERT and PUSH_TLS_KEY (PEM files), or neither".into()),
    };

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("chat server listening on {scheme}://{local}");
    println!("listening on {scheme}://{local}");
    // TCP_NODELAY, HTTP/2, deadlines on stalled peers: see `Server`.
    let mut server = Server::new(listener, app);
    if let Some(tls) = tls {
        server = server.tls(tls);
    }
    server
        .run_until(async move {
            shutdown_requested().await;
            // Streams end (clients are told to resume), so the server can stop.
            hub.shutdown();
        })
        .await;
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_requested() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

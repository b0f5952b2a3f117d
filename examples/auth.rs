//! Subscriptions that need a bearer token (or a session cookie), deny by
//! default, with the subscriber's identity attached to the subscription.
//!
//! ```text
//! cargo run --example auth                                   # 127.0.0.1:3001 (PUSH_ADDR overrides)
//! curl -i localhost:3001/news/world/sse                      # 401: no credentials
//! curl -i -H 'authorization: Bearer nope' localhost:3001/news/world/sse   # 403
//! curl -N -H 'authorization: Bearer ann-token' localhost:3001/news/world/sse
//! curl -N --cookie 'session=bob-session' localhost:3001/news/world/sse
//! curl -i -H 'authorization: Bearer bob-token' localhost:3001/news/staff/sse  # 403: not staff
//! ```
//!
//! The same check guards every transport (`/sse`, `/ws`, `/poll`,
//! `/long-poll`, `/iframe`) before anything is subscribed.

use push_runtime::{AuthRequest, ChannelRouter, Hub, Principal, Refusal, push_channel};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

#[push_channel(path = "/news")]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum NewsEvent {
    Headline { text: String },
}

/// What the application knows about a user (a real one asks its database).
#[derive(Debug)]
struct User {
    staff: bool,
}

fn user_by_token(token: &str) -> Option<(&'static str, User)> {
    match token {
        "ann-token" | "ann-session" => Some(("ann", User { staff: true })),
        "bob-token" | "bob-session" => Some(("bob", User { staff: false })),
        _ => None,
    }
}

/// The credential of a request: `Authorization: Bearer …`, else the
/// `session` cookie.
fn credential(request: &AuthRequest) -> Option<&str> {
    let headers = &request.parts.headers;
    if let Some(bearer) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer);
    }
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("session="))
}

/// Deny by default: only a known user gets through, and only staff read `staff`.
async fn authorize(request: AuthRequest) -> Result<Principal, Refusal> {
    let Some(credential) = credential(&request) else {
        return Err(Refusal::unauthorized(
            "send `Authorization: Bearer <token>` or a session cookie",
        ));
    };
    let Some((name, user)) = user_by_token(credential) else {
        return Err(Refusal::forbidden("unknown credential"));
    };
    if request.topic.as_str() == "staff" && !user.staff {
        return Err(Refusal::forbidden("only staff may read this topic"));
    }
    tracing::info!(user = name, topic = %request.topic, "subscription allowed");
    // The authorization lasts as long as the credential: at the expiry the
    // server ends the stream with `push.expired` (WebSocket: close 4401), and
    // the client resumes from that cursor with a fresh credential, if it has
    // one (a real hook would take the expiry from the token's `exp`).
    Ok(Principal::new(name)
        .with(user)
        .expires_in(std::time::Duration::from_secs(3600)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = std::env::var("PUSH_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3001".to_owned())
        .parse()?;

    let hub = Hub::<NewsEvent>::new();
    let app = ChannelRouter::new(hub.clone())
        .authorize(authorize)
        .into_router::<()>();

    let publisher = hub.clone();
    tokio::spawn(async move {
        for n in 1.. {
            let text = format!("headline {n}");
            for topic in ["world", "staff"] {
                let event = NewsEvent::Headline { text: text.clone() };
                let _ = publisher.publish(topic, event).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // TCP_NODELAY, routes prepared once, HTTP/2, deadlines on stalled peers.
    push_runtime::serve::Server::new(listener, app)
        .run_until(async move {
            let _ = tokio::signal::ctrl_c().await;
            hub.shutdown();
        })
        .await;
    Ok(())
}

//! A typed client of the `chat` example server.
//!
//! ```text
//! cargo run --example chat                      # in one terminal
//! cargo run --example chat_client -- lobby ws   # in another: topic, transport
//! curl -X POST localhost:3000/chat/lobby -H 'content-type: application/json' \
//!      -d '{"type":"message","from":"ann","text":"hi"}'
//! ```
//!
//! The transport is one of `sse` (the default), `ws`, `poll` (short polling),
//! `long-poll`, `iframe` (forever frame) or `auto` (WebSocket, falling back to
//! SSE, long polling, short polling when one does not get through).
//!
//! `PUSH_URL` sets the server (default `http://127.0.0.1:3000`); `RUST_LOG=debug`
//! shows the client's connection log. Stop the server and start it again: the
//! client reconnects by itself, resuming where it was (with a gap if the
//! restarted server lost the history).

#[path = "chat/event.rs"]
mod event;

use event::ChatEvent;
use futures_util::StreamExt;
use push_runtime::client::{ClientError, Transport, Update};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();

    let url = std::env::var("PUSH_URL").unwrap_or_else(|_| "http://127.0.0.1:3000".to_owned());
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "lobby".to_owned());
    let transport = match args.next().as_deref() {
        None | Some("sse") => Transport::Sse,
        Some("ws") => Transport::WebSocket,
        Some("poll") => Transport::ShortPoll,
        Some("long-poll") => Transport::LongPoll,
        Some("iframe") => Transport::Iframe,
        Some("auto") => Transport::Auto,
        Some(other) => {
            eprintln!(
                "unknown transport `{other}`: use `sse`, `ws`, `poll`, `long-poll`, `iframe` or `auto`"
            );
            return ExitCode::FAILURE;
        }
    };

    let client = match ChatEvent::client(&url) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stream = client
        .subscribe(topic.as_str())
        .transport(transport)
        .stream();
    println!("subscribing to `{topic}` at {url} over {transport:?}");
    while let Some(item) = stream.next().await {
        match item {
            Ok(Update::Ready { cursor }) => {
                println!("[ready] live after {cursor} over {:?}", stream.transport());
            }
            Ok(Update::Event { cursor, event }) => match event {
                ChatEvent::Message { from, text } => println!("[{cursor}] {from}: {text}"),
                ChatEvent::Joined { name } => println!("[{cursor}] {name} joined"),
                ChatEvent::Left { name } => println!("[{cursor}] {name} left"),
            },
            Ok(Update::Gap(gap)) => match gap.missed {
                Some(missed) => {
                    println!("[gap] missed {missed} events ({} to {})", gap.from, gap.to)
                }
                None => println!("[gap] history lost between {} and {}", gap.from, gap.to),
            },
            Ok(Update::Reconnecting {
                attempt,
                delay,
                cause,
            }) => {
                println!("[reconnecting] {cause}; attempt {attempt} in {delay:?}");
            }
            Ok(Update::Fallback {
                from,
                to,
                delay,
                cause,
            }) => {
                println!("[fallback] {from:?} failed ({cause}); trying {to:?} in {delay:?}");
            }
            Ok(_) => {}
            Err(error @ (ClientError::Decode { .. } | ClientError::Malformed { .. })) => {
                println!("[skipped] {error}");
            }
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

//! A typed client of the `chat` example server.
//!
//! ```text
//! cargo run --example chat                      # in one terminal
//! cargo run --example chat_client -- lobby ws   # in another (topic, sse|ws)
//! curl -X POST localhost:3000/chat/lobby -H 'content-type: application/json' \
//!      -d '{"type":"message","from":"ann","text":"hi"}'
//! ```
//!
//! `PUSH_URL` sets the server (default `http://127.0.0.1:3000`); `RUST_LOG=debug`
//! shows the client's connection log. Stop the server and start it again: the
//! client reconnects by itself, resuming where it was (with a gap if the
//! restarted server lost the history).

use futures_util::StreamExt;
use push_runtime::client::{Client, ClientError, Transport, Update};
use push_runtime::{Channel, EventKind};
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

// The same enum as the chat server's. Until `#[push_channel]` lands, its two
// traits are written out here as the macro will generate them.
/// What happens in a chat room.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ChatEvent {
    /// Someone said something.
    Message { from: String, text: String },
    /// Someone came in.
    Joined { name: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ChatEventKind {
    Message,
    Joined,
}

impl EventKind for ChatEventKind {
    const ALL: &'static [Self] = &[ChatEventKind::Message, ChatEventKind::Joined];
    const NAMES: &'static [&'static str] = &["message", "joined"];

    fn name(self) -> &'static str {
        match self {
            ChatEventKind::Message => "message",
            ChatEventKind::Joined => "joined",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl Channel for ChatEvent {
    type Kind = ChatEventKind;
    const PATH: &'static str = "/chat";

    fn kind(&self) -> ChatEventKind {
        match self {
            ChatEvent::Message { .. } => ChatEventKind::Message,
            ChatEvent::Joined { .. } => ChatEventKind::Joined,
        }
    }
}

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
        Some(other) => {
            eprintln!("unknown transport `{other}`: use `sse` or `ws`");
            return ExitCode::FAILURE;
        }
    };

    let client = match Client::<ChatEvent>::new(&url) {
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
            Ok(Update::Ready { cursor }) => println!("[ready] live after {cursor}"),
            Ok(Update::Event { cursor, event }) => match event {
                ChatEvent::Message { from, text } => println!("[{cursor}] {from}: {text}"),
                ChatEvent::Joined { name } => println!("[{cursor}] {name} joined"),
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

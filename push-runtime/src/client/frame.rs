//! What every transport delivers, and what it means for the channel type.

use super::error::{ClientError, quote};
use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::history::Gap;
use crate::wire;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// One item off the wire, before interpretation: an SSE block, or a
/// WebSocket message object (as sent over WebSocket, in a poll answer, or in
/// a forever frame's `<script>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The cursor as sent (SSE `id`, WebSocket `cursor`).
    pub(crate) cursor: Option<String>,
    /// The wire name.
    pub(crate) event: String,
    /// The payload JSON.
    pub(crate) data: String,
}

/// What reading a connection produced.
#[derive(Debug)]
pub(crate) enum Read {
    /// A frame.
    Frame(Frame),
    /// An item that had to be skipped; the connection goes on.
    Skipped(ClientError),
    /// A polling transport's first answer: the subscription is live after
    /// this cursor (polls carry no `push.ready`, so the client makes its own).
    Ready(Cursor),
    /// The client's own end of a connection, as if the server had sent
    /// `push.end`: resume from this cursor (at once after progress). It
    /// ends the items a WebSocket skip brought.
    Resume(Cursor),
}

/// What a frame means.
#[derive(Debug)]
pub(crate) enum Meaning<C> {
    /// `push.ready`: the subscription is live after this cursor.
    Ready(Cursor),
    /// `push.gap`.
    Gap(Gap),
    /// One of the channel's events.
    Event { cursor: Cursor, event: C },
    /// `push.end`: the server ends this response; resume from the cursor at
    /// once (forever frame).
    End(Cursor),
    /// `push.expired`: the subscription's authorization expired; the server
    /// ends the response, and the client resumes from the cursor with fresh
    /// credentials or stops.
    Expired(Cursor),
    /// A control event this client does not know.
    Ignored,
    /// A frame that is not what the protocol promises.
    Invalid(ClientError),
}

#[derive(serde::Deserialize)]
struct ReadyPayload {
    cursor: Cursor,
}

/// The longest piece of server input quoted in an error, in characters.
const QUOTE_LIMIT: usize = 128;

/// Interprets a frame for channel `C`.
pub(crate) fn interpret<C: Channel>(frame: &Frame) -> Meaning<C> {
    match frame.event.as_str() {
        wire::READY => match serde_json::from_str::<ReadyPayload>(&frame.data) {
            Ok(ready) => Meaning::Ready(ready.cursor),
            Err(error) => malformed(format!("push.ready payload: {}", serde_reason(&error))),
        },
        wire::END => match serde_json::from_str::<ReadyPayload>(&frame.data) {
            Ok(end) => Meaning::End(end.cursor),
            Err(error) => malformed(format!("push.end payload: {}", serde_reason(&error))),
        },
        wire::EXPIRED => match serde_json::from_str::<ReadyPayload>(&frame.data) {
            Ok(expired) => Meaning::Expired(expired.cursor),
            Err(error) => malformed(format!("push.expired payload: {}", serde_reason(&error))),
        },
        wire::GAP => match serde_json::from_str::<Gap>(&frame.data) {
            Ok(gap) => Meaning::Gap(gap),
            Err(error) => malformed(format!("push.gap payload: {}", serde_reason(&error))),
        },
        name if name.starts_with("push.") => {
            tracing::debug!(event = %quote(name, QUOTE_LIMIT), "ignoring an unknown control event");
            Meaning::Ignored
        }
        name => {
            let Some(cursor) = frame.cursor.as_deref().and_then(|id| id.parse().ok()) else {
                return malformed(format!(
                    "event `{}` without a valid cursor (`{}`)",
                    quote(name, QUOTE_LIMIT),
                    quote(frame.cursor.as_deref().unwrap_or(""), QUOTE_LIMIT)
                ));
            };
            match serde_json::from_str::<C>(&frame.data) {
                Ok(event) => Meaning::Event { cursor, event },
                Err(source) => Meaning::Invalid(ClientError::Decode {
                    cursor,
                    event: quote(name, QUOTE_LIMIT),
                    source,
                }),
            }
        }
    }
}

/// serde's reason, bounded: it quotes a string of the input whole (e.g.
/// `invalid type: string "…"`), which could be as long as the item.
fn serde_reason(error: &serde_json::Error) -> String {
    quote(&error.to_string(), QUOTE_LIMIT)
}

fn malformed<C>(reason: String) -> Meaning<C> {
    Meaning::Invalid(ClientError::Malformed { reason })
}

/// `{"cursor":"…","event":"…","data":…}`, borrowed from the message.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    cursor: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Parses one JSON message (a WebSocket message, a poll answer's item, a
/// forever frame's item) into a frame.
pub(crate) fn parse_envelope(text: &str) -> Result<Frame, ClientError> {
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(envelope) => Ok(Frame {
            cursor: Some(envelope.cursor.into_owned()),
            event: envelope.event.into_owned(),
            data: envelope.data.get().to_owned(),
        }),
        Err(error) => Err(ClientError::Malformed {
            reason: format!("message `{}`: {}", quote(text, 64), serde_reason(&error)),
        }),
    }
}

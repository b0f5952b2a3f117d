//! The bytes that more than one transport writes, in one place:
//!
//! - the control events every transport sends (`push.ready`, `push.gap`,
//!   `push.end`, `push.expired`) and their payloads;
//! - the JSON message `{"cursor":…,"event":…,"data":…}`, which a WebSocket
//!   sends as one text message, a poll answer lists, and the forever frame
//!   hands to its page; it is framed once per event ([`Message`]) and shared.
//!
//! Cursors are written by [`Cursor::put`] only. What one transport alone
//! writes (an SSE block, a `<script>` item, a poll answer's envelope) stays
//! in that transport.

use crate::cursor::Cursor;
use crate::history::{Delivery, EncodedEvent, FrameSlot, Framing, Gap};
use bytes::{BufMut, Bytes, BytesMut};

/// The control event that opens every stream.
pub(crate) const READY: &str = "push.ready";
/// The control event that ends a response: resume from its cursor.
pub(crate) const END: &str = "push.end";
/// The control event that ends a stream whose authorization expired:
/// resume from its cursor, with fresh credentials.
pub(crate) const EXPIRED: &str = "push.expired";
/// The control event that announces lost events.
pub(crate) const GAP: &str = "push.gap";

/// `{"cursor":"<c>"}`: the payload of `push.ready`, `push.end` and `push.expired`.
pub(crate) fn ready_payload(cursor: Cursor) -> Bytes {
    let mut out = BytesMut::with_capacity(56);
    out.put_slice(b"{\"cursor\":\"");
    cursor.put(&mut out);
    out.put_slice(b"\"}");
    out.freeze()
}

/// `{"from":"<c>","to":"<c>","missed":<n|null>}`: the payload of `push.gap`.
pub(crate) fn gap_payload(gap: &Gap) -> Bytes {
    let mut out = BytesMut::with_capacity(96);
    out.put_slice(b"{\"from\":\"");
    gap.from.put(&mut out);
    out.put_slice(b"\",\"to\":\"");
    gap.to.put(&mut out);
    out.put_slice(b"\",\"missed\":");
    match gap.missed {
        Some(missed) => out.put_slice(itoa::Buffer::new().format(missed).as_bytes()),
        None => out.put_slice(b"null"),
    }
    out.put_u8(b'}');
    out.freeze()
}

/// Appends `{"cursor":"<c>","event":"<name>","data":<data>}`.
///
/// `data` is JSON from serde_json (or ours), so UTF-8; anything else is
/// written as `null`, so that every message is valid UTF-8 text.
fn put_message(out: &mut BytesMut, cursor: Cursor, name: &str, data: &[u8]) {
    let data = if std::str::from_utf8(data).is_ok() {
        data
    } else {
        b"null"
    };
    out.put_slice(b"{\"cursor\":\"");
    cursor.put(out);
    out.put_slice(b"\",\"event\":\"");
    // Wire names are validated by the macro to need no JSON escaping.
    out.put_slice(name.as_bytes());
    out.put_slice(b"\",\"data\":");
    out.put_slice(data);
    out.put_u8(b'}');
}

/// The JSON message of any item: valid UTF-8 (see [`put_message`]).
/// The most bytes a message adds to its payload: `{"cursor":"…","event":"…","data":`
/// and `}` around a cursor of at most 41 bytes and a wire name of at most 128.
pub(crate) const MAX_MESSAGE_OVERHEAD: usize = 256;

pub(crate) fn message(cursor: Cursor, name: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + name.len() + 48);
    put_message(&mut out, cursor, name, data);
    out.freeze()
}

/// The JSON message of an event, framed once per event and shared by every
/// subscriber of every transport that sends it.
pub(crate) struct Message;

impl Framing for Message {
    type Frame = Bytes;
    const SLOT: FrameSlot = FrameSlot::new(0);

    fn frame(event: &EncodedEvent) -> Bytes {
        message(event.cursor(), event.name(), event.data())
    }
}

/// The JSON message of an item: an event's shared frame, or a gap's.
pub(crate) fn delivery_message(delivery: &Delivery) -> Bytes {
    match delivery {
        Delivery::Event(event) => event.frame::<Message>(),
        Delivery::Gap(gap) => message(gap.to, GAP, &gap_payload(gap)),
    }
}

/// The JSON message of `push.ready`, `push.end` or `push.expired` at `cursor`.
pub(crate) fn control_message(cursor: Cursor, name: &str) -> Bytes {
    message(cursor, name, &ready_payload(cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_the_documented_json() {
        let gap = Gap {
            from: Cursor::new(3, 0),
            to: Cursor::new(3, 7),
            missed: Some(7),
        };
        assert_eq!(
            gap_payload(&gap),
            serde_json::to_vec(&gap).unwrap(),
            "the same text serde writes"
        );
        let unknown = Gap {
            missed: None,
            ..gap
        };
        assert_eq!(
            gap_payload(&unknown),
            r#"{"from":"3-0","to":"3-7","missed":null}"#
        );
        assert_eq!(ready_payload(Cursor::new(9, 0)), r#"{"cursor":"9-0"}"#);
        assert_eq!(
            control_message(Cursor::new(u64::MAX, 1), END),
            r#"{"cursor":"18446744073709551615-1","event":"push.end","data":{"cursor":"18446744073709551615-1"}}"#
        );
        assert_eq!(
            control_message(Cursor::new(4, 2), EXPIRED),
            r#"{"cursor":"4-2","event":"push.expired","data":{"cursor":"4-2"}}"#
        );
    }

    #[test]
    fn a_payload_that_is_not_utf8_is_written_as_null() {
        assert_eq!(
            message(Cursor::new(1, 2), "e", b"\"\xff\""),
            r#"{"cursor":"1-2","event":"e","data":null}"#
        );
    }
}

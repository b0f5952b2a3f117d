//! The five transports, one module each (short and long polling share
//! one). A transport only frames what the hub hands it: the checks, the
//! start and the subscription come from the one subscribe step
//! ([`subscribe`](crate::subscribe)), the bytes that several transports
//! write from [`wire`](crate::wire), and a long-lived connection's machinery
//! from [`stream`](crate::stream). Transports never import each other.

pub mod iframe;
pub mod poll;
pub mod sse;
pub mod ws;

#[cfg(test)]
mod tests {
    use crate::history::{FrameSlot, Framing};

    fn slot<F: Framing>() -> FrameSlot {
        F::SLOT
    }

    /// Each framing cached on events has a slot of its own.
    #[test]
    fn frame_slots_are_distinct() {
        let slots = [
            slot::<crate::wire::Message>(),
            slot::<super::sse::Block>(),
            slot::<super::iframe::Script>(),
            slot::<super::ws::Text>(),
        ];
        for (i, a) in slots.iter().enumerate() {
            for b in &slots[i + 1..] {
                assert_ne!(a, b, "two framings share a frame slot");
            }
        }
    }

    /// The Rust client recognises the server's expiry by the same close
    /// code and message the server writes.
    #[cfg(feature = "client")]
    #[test]
    fn the_client_reads_the_expiry_the_server_writes() {
        assert_eq!(
            crate::client::error::EXPIRED_CLOSE,
            super::ws::CLOSE_EXPIRED
        );
        assert_eq!(crate::client::error::EXPIRED_MESSAGE, crate::auth::EXPIRED);
    }
}

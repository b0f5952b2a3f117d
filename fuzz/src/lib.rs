//! The channel type the fuzz targets parse into: the chat example's event,
//! declared with `#[push_channel]` as an application would.

#[path = "../../examples/chat/event.rs"]
mod event;

pub use event::ChatEvent;

//! What every transport says the same way: control event names and payloads.

use crate::cursor::Cursor;
use crate::history::Gap;

/// The control event that opens every stream.
pub(crate) const READY: &str = "push.ready";
/// The control event that ends a response: resume from its cursor.
pub(crate) const END: &str = "push.end";
/// The control event that announces lost events.
pub(crate) const GAP: &str = "push.gap";

/// `{"cursor":"<c>"}`
pub(crate) fn ready_payload(cursor: Cursor) -> Vec<u8> {
    format!("{{\"cursor\":\"{cursor}\"}}").into_bytes()
}

/// `{"from":"<c>","to":"<c>","missed":<n|null>}`
pub(crate) fn gap_payload(gap: &Gap) -> Vec<u8> {
    // Cursors and numbers need no escaping, and serializing a Gap cannot fail.
    serde_json::to_vec(gap).unwrap_or_default()
}

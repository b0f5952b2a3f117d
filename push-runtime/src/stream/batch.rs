//! The batch a connection writes from: refilled at every wakeup, and
//! shrunk back after a burst so that an idle connection holds little.

use crate::history::Delivery;

/// The most items a connection's batch keeps room for while it waits.
pub(crate) const BATCH_KEEP: usize = 16;

/// Empties a connection's batch before the next wait, and gives its memory
/// back if a burst made it larger than [`BATCH_KEEP`] items: an idle
/// connection does not keep room for the largest batch it ever wrote
/// (up to `max_batch` items of about 56 bytes).
pub(crate) fn clear_batch(batch: &mut Vec<Delivery>) {
    if batch.capacity() > BATCH_KEEP {
        *batch = Vec::new();
    } else {
        batch.clear();
    }
}

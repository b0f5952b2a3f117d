//! The channel the nodes serve and the clients read: one event kind whose
//! `id` is unique per publish, so the checker can tell every delivery apart.

use push_runtime::push_channel;
use serde::{Deserialize, Serialize};

/// One probe event.
#[push_channel(path = "/probe")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Probe {
    /// Published once by one publisher: `id` is never sent twice in a run.
    Tick {
        /// Unique in the run.
        id: u64,
        /// Which publisher sent it.
        publisher: u32,
    },
}

/// The topic every client reads and every publisher writes against one
/// Redis; against a cluster, one topic per shard (`cluster::spread_topics`).
pub const TOPIC: &str = "probe";

/// Events kept per topic by the nodes (and in Redis): small enough that a
/// stalled client falls off the ring within seconds and gets a gap.
pub const HISTORY_LEN: usize = 256;

//! How each fault kind is injected into a running [`World`]. Every step
//! waits on a readiness signal (a process listening, Redis answering PING),
//! bounded in time; sleeps only pace the fault itself.

use crate::faults::Kind;
use crate::run::World;

pub async fn inject(world: &mut World, kind: Kind) -> Result<(), String> {
    let _ = world;
    match kind {}
}

//! How each fault kind is injected into a running [`World`]. Every step
//! waits on a readiness signal (a process listening, Redis answering PING),
//! bounded in time; sleeps only pace the fault itself.

use crate::faults::Kind;
use crate::run::World;

pub async fn inject(world: &mut World, kind: Kind) -> Result<(), String> {
    match kind {
        Kind::NodeKill => node_kill(world).await,
        Kind::ClientCut => {
            world.front.cut();
            Ok(())
        }
        Kind::RedisLink => {
            world.redis_proxy.block();
            tokio::time::sleep(world.rng.millis(500, 3000)).await;
            world.redis_proxy.unblock();
            Ok(())
        }
        Kind::RedisRestart => {
            world.redis.kill_and_forget().await;
            tokio::time::sleep(world.rng.millis(200, 1500)).await;
            world.redis.restart().await
        }
        Kind::RedisRollback => {
            crate::procs::redis_cmd(world.redis.port, &["SAVE"]).await?;
            tokio::time::sleep(world.rng.millis(500, 2500)).await;
            world.redis.kill().await;
            world.redis.restart().await
        }
        Kind::SlowClient => {
            // Its reading task sleeps until then before taking the next item;
            // the fault does not wait for it: other faults may overlap.
            let index = world.rng.range(0, world.subscribers.len() as u64 - 1) as usize;
            let until = world.clock.ms() + world.rng.range(2000, 6000);
            world.subscribers[index]
                .stall_until
                .store(until, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    }
}

/// SIGKILL one node (its clients reconnect to the others through the front
/// proxy), then start it again on a new port once it has been down a while.
async fn node_kill(world: &mut World) -> Result<(), String> {
    let index = world.rng.range(0, world.nodes.len() as u64 - 1) as usize;
    world.front.set_target(index, None);
    if let Some(mut node) = world.nodes[index].take() {
        node.kill().await;
    }
    tokio::time::sleep(world.rng.millis(300, 1500)).await;
    world.start_node(index).await
}

//! How each fault kind is injected into a running [`World`]. Every step
//! waits on a readiness signal (a process listening, Redis answering PING),
//! bounded in time; sleeps only pace the fault itself.

use crate::faults::Kind;
use crate::procs::loopback;
use crate::run::World;

pub async fn inject(world: &mut World, kind: Kind) -> Result<(), String> {
    match kind {
        Kind::NodeKill => node_kill(world).await,
        Kind::ClientCut => {
            world.front.cut();
            Ok(())
        }
        Kind::RedisLink if world.cluster.is_some() => {
            let topic = world
                .rng
                .pick(&world.topics.iter().collect::<Vec<_>>())
                .clone();
            let outage = world.rng.millis(500, 3000);
            let what = world.cluster()?.cut_link(&topic, outage).await?;
            eprintln!("faults: redis-link: {what}");
            Ok(())
        }
        Kind::RedisLink => {
            world.redis_proxy()?.block();
            tokio::time::sleep(world.rng.millis(500, 3000)).await;
            world.redis_proxy()?.unblock();
            Ok(())
        }
        Kind::RedisRestart => {
            world.own_redis()?.kill_and_forget().await;
            tokio::time::sleep(world.rng.millis(200, 1500)).await;
            world.own_redis()?.restart().await
        }
        Kind::RedisRollback => {
            save(world.own_redis()?.port).await?;
            tokio::time::sleep(world.rng.millis(500, 2500)).await;
            world.own_redis()?.kill().await;
            world.own_redis()?.restart().await
        }
        Kind::ReplicaPromote => replica_promote(world).await,
        Kind::ClusterFailover => {
            let topic = world
                .rng
                .pick(&world.topics.iter().collect::<Vec<_>>())
                .clone();
            let what = world.cluster()?.failover(&topic).await?;
            eprintln!("faults: cluster-failover: {what}");
            Ok(())
        }
        Kind::SlotMigrate => {
            let topic = world
                .rng
                .pick(&world.topics.iter().collect::<Vec<_>>())
                .clone();
            let mut rng = world.rng.clone();
            let what = world.cluster()?.migrate(&topic, &mut rng).await?;
            world.rng = rng;
            eprintln!("faults: slot-migrate: {what}");
            Ok(())
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

/// A failover that loses writes: the replica stops following the primary
/// (its link is cut), events are still published to the primary, then the
/// primary dies and the lagging replica is promoted and serves the nodes.
async fn replica_promote(world: &mut World) -> Result<(), String> {
    let Some(replica) = &world.replica else {
        return Err("replica-promote without a replica".to_owned());
    };
    replica.wait_synced().await?;
    if let Some(link) = &world.repl_proxy {
        link.block();
    }
    tokio::time::sleep(world.rng.millis(500, 2500)).await;
    world.own_redis()?.kill_and_forget().await;
    let mut promoted = world.replica.take().ok_or("no replica")?;
    promoted.promote().await?;
    let proxy = world.redis_proxy()?;
    proxy.set_target(0, Some(loopback(promoted.port)));
    proxy.cut();
    // The old primary is gone for good; the promoted replica is the primary.
    let _old = world.redis.replace(promoted);
    world.start_replica().await
}

/// `SAVE`, waiting for a background save under way (a replica's sync) to
/// end first: Redis refuses a `SAVE` meanwhile.
async fn save(port: u16) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match crate::procs::redis_cmd(port, &["SAVE"]).await {
            Err(error)
                if error.contains("save already in progress")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            result => return result.map(drop),
        }
    }
}

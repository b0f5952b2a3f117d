//! A TCP proxy the harness controls: in front of the nodes (round robin
//! over the live ones), between the nodes and Redis (one target), and in
//! front of each server of a cluster (the port it announces). It
//! can drop every connection at once (`cut`) and refuse new ones for a
//! while (`block`), and its targets can change (a node restarted on a new
//! port, a replica promoted).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    /// `None`: that target is down.
    targets: Mutex<Vec<Option<SocketAddr>>>,
    next: AtomicUsize,
    blocked: AtomicBool,
    /// Bumped to drop every open connection.
    cut: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(targets: Vec<Option<SocketAddr>>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            targets: Mutex::new(targets),
            next: AtomicUsize::new(0),
            blocked: AtomicBool::new(false),
            cut: watch::channel(0).0,
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    pub fn set_target(&self, index: usize, target: Option<SocketAddr>) {
        let mut targets = self
            .shared
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if index < targets.len() {
            targets[index] = target;
        }
    }

    /// Drops every open connection.
    pub fn cut(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// Drops every open connection and refuses new ones until unblocked.
    pub fn block(&self) {
        self.shared.blocked.store(true, Ordering::SeqCst);
        self.cut();
    }

    pub fn unblock(&self) {
        self.shared.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.blocked.load(Ordering::SeqCst) {
            drop(inbound);
            continue;
        }
        tokio::spawn(relay(inbound, Arc::clone(&shared)));
    }
}

/// Connects to the next live target (trying each at most once), then
/// copies both ways until either side closes or the proxy cuts.
async fn relay(mut inbound: TcpStream, shared: Arc<Shared>) {
    let mut cut = shared.cut.subscribe();
    cut.borrow_and_update();
    let _ = inbound.set_nodelay(true);
    let candidates: Vec<SocketAddr> = {
        let targets = shared.targets.lock().unwrap_or_else(|p| p.into_inner());
        let n = targets.len().max(1);
        let start = shared.next.fetch_add(1, Ordering::Relaxed);
        (0..targets.len())
            .filter_map(|i| targets[(start + i) % n])
            .collect()
    };
    let mut outbound = None;
    for target in candidates {
        let attempt = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(target));
        if let Ok(Ok(stream)) = attempt.await {
            outbound = Some(stream);
            break;
        }
    }
    let Some(mut outbound) = outbound else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.changed() => {}
    }
}

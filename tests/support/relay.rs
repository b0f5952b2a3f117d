//! A TCP relay between a client and a server, to sever connections on demand
//! without touching either.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Listens on `127.0.0.1:0` and relays each connection to a target address.
pub struct Relay {
    address: SocketAddr,
    cuts: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Relay {
    /// A relay in front of `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (cuts, _) = watch::channel(0);
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            target,
            cuts.clone(),
            accepted.clone(),
        ));
        Ok(Relay {
            address,
            cuts,
            accepted,
            task,
        })
    }

    /// `http://` and the relay's address: the base URL to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The relay's address, for another relay to chain in front of it.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Severs every connection relayed so far (both sides see the socket
    /// close). Connections made afterwards are relayed as usual.
    pub fn cut(&self) {
        self.cuts.send_modify(|generation| *generation += 1);
    }

    /// How many connections the relay has accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    cuts: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::SeqCst);
        // Subscribed at accept time: a later cut severs this connection.
        let cut = cuts.subscribe();
        tokio::spawn(relay(inbound, target, cut));
    }
}

async fn relay(mut inbound: TcpStream, target: SocketAddr, mut cut: watch::Receiver<u64>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.changed() => {}
    }
    // Dropping both sockets closes them.
}

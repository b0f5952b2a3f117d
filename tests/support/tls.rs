//! TLS for the client tests: a private certificate authority made by the
//! test (rcgen), a server certificate it signs for `127.0.0.1` and
//! `localhost`, and a relay that terminates TLS (tokio-rustls) in front of a
//! plain test server, so every transport is served over `https://` and
//! `wss://` by the very routes the plain tests use.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority of the test's own.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, key).expect("ca certificate");
        Self { issuer }
    }

    /// The authority's certificate, as a client adds it to its roots.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server configuration presenting a certificate this authority
    /// signed for `127.0.0.1` and `localhost`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone(), self.issuer.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server certificate and key");
        Arc::new(config)
    }
}

/// Listens on `127.0.0.1:0`, terminates TLS and relays the plain bytes to
/// `target`; stopped when dropped.
pub struct TlsRelay {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsRelay {
    pub async fn start(target: SocketAddr, config: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the tls relay");
        let address = listener.local_addr().expect("relay address");
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(relay(acceptor.clone(), socket, target));
            }
        });
        Self { address, task }
    }

    /// `https://` and the relay's address: the base URL to give a client.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: the handshake (a client that refuses the certificate
/// ends it here), then bytes both ways until either side closes.
async fn relay(acceptor: TlsAcceptor, socket: TcpStream, target: SocketAddr) {
    let Ok(mut secure) = acceptor.accept(socket).await else {
        return;
    };
    let Ok(mut plain) = TcpStream::connect(target).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut secure, &mut plain).await;
}

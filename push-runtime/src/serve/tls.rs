//! [`TlsConfig`]: a certificate and key for HTTPS, through rustls with the
//! ring provider.

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// The ALPN protocols a server offers: HTTP/2 first, then HTTP/1.1.
pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS setup of a [`Server`](super::Server): its certificate chain and
/// private key, offering HTTP/2 and HTTP/1.1 by ALPN.
///
/// ```no_run
/// use push_runtime::serve::TlsConfig;
/// let tls = TlsConfig::from_pem_files("cert.pem", "key.pem").expect("a usable certificate");
/// # let _ = tls;
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

/// Why a certificate and key are not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate PEM holds no `CERTIFICATE` block, or a bad one.
    #[error("no usable certificate in the certificate PEM: {0}")]
    Certificate(String),
    /// The key PEM holds no private key (PKCS#8, PKCS#1 or SEC1), or a bad one.
    #[error("no usable private key in the key PEM: {0}")]
    Key(String),
    /// rustls refused the pair (e.g. a key that does not match the certificate).
    #[error("the certificate and key cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsConfig {
    /// From PEM text: `cert_chain` the server's certificate first, then any
    /// intermediates; `key` its private key.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::Certificate("no CERTIFICATE block".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Key(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(Self::from_rustls(config))
    }

    /// From two PEM files (e.g. `PUSH_TLS_CERT` and `PUSH_TLS_KEY` in the
    /// chat example).
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Self::from_pem(&read(cert_chain.as_ref())?, &read(key.as_ref())?)
    }

    /// From a rustls configuration of your own (client certificates, a
    /// certificate resolver, …). Its ALPN list is replaced by `h2`,
    /// `http/1.1`: the server speaks exactly those.
    pub fn from_rustls(mut config: ServerConfig) -> Self {
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Self {
            config: Arc::new(config),
        }
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}

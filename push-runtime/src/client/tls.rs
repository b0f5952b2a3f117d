//! TLS for `https://` and `wss://` (feature `rustls`): one rustls
//! configuration per [`Client`](super::Client), with the `ring` crypto
//! provider, used by the HTTP pool (hyper-rustls) and by the WebSocket connector alike, so every
//! transport trusts the same roots.

use super::error::ClientError;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;

/// The certificates of a PEM bundle (one or more `CERTIFICATE` blocks;
/// other blocks are ignored), or why not.
pub(crate) fn parse_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ClientError::InvalidCertificate {
            reason: format!("not a pem bundle: {error}"),
        })?;
    if certificates.is_empty() {
        return Err(ClientError::InvalidCertificate {
            reason: "no `BEGIN CERTIFICATE` block in the pem text".to_owned(),
        });
    }
    // Parsed now, so that a bad certificate fails where it is given.
    let mut roots = RootCertStore::empty();
    for certificate in &certificates {
        roots
            .add(certificate.clone())
            .map_err(|error| ClientError::InvalidCertificate {
                reason: format!("not a usable ca certificate: {error}"),
            })?;
    }
    Ok(certificates)
}

/// The rustls configuration of a client: Mozilla's roots (`webpki-roots`)
/// unless `built_in` is off, plus `extra`; `ring`; TLS 1.2 and 1.3.
pub(crate) fn client_config(
    extra: &[CertificateDer<'static>],
    built_in: bool,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    if built_in {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for certificate in extra {
        roots
            .add(certificate.clone())
            .map_err(|error| ClientError::InvalidCertificate {
                reason: format!("not a usable ca certificate: {error}"),
            })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::InvalidCertificate {
            reason: format!("tls configuration: {error}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_empty_bundles_are_refused_with_a_reason() {
        for (pem, reason) in [
            (&b""[..], "no `BEGIN CERTIFICATE`"),
            (b"hello", "no `BEGIN CERTIFICATE`"),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "not a pem bundle",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not a usable ca certificate",
            ),
        ] {
            match parse_pem(pem) {
                Err(ClientError::InvalidCertificate { reason: said }) => {
                    assert!(said.contains(reason), "{said}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_generated_ca_is_accepted_with_or_without_the_built_in_roots() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("ca");
        let bundle = format!("junk before\n{}\n{}", ca.pem(), ca.pem());
        let parsed = parse_pem(bundle.as_bytes()).expect("two certificates");
        assert_eq!(parsed.len(), 2);
        assert!(client_config(&parsed, true).is_ok());
        assert!(client_config(&parsed, false).is_ok());
    }
}

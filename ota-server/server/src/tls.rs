//! HTTPS: a rustls server config from PEM files ([`crate::connections`] completes each handshake in its
//! connection's own task, so a slow or plain-HTTP client cannot hold up the others).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::ServerConfig;

/// How long a client may take to complete the handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads a certificate chain and private key (PEM) into a rustls server config (TLS 1.2 and 1.3, ring).
pub fn load_server_config(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read TLS certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("TLS certificate {} is not valid PEM", cert_path.display()))?;
    if certs.is_empty() {
        bail!(
            "{} contains no certificate (expected PEM 'BEGIN CERTIFICATE')",
            cert_path.display()
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    if is_ca_certificate(&certs[0], &provider) {
        bail!(
            "{} is a CA certificate, which no client accepts as a server's (CaUsedAsEndEntity): sign a server \
             certificate with it (the server's names as subjectAltName, CA:FALSE) and serve that; \
             docs/tls.md has the commands",
            cert_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("cannot read a PEM private key from {}", key_path.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol setup failed")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match or are unsupported")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether `leaf` is a CA certificate, checked as clients check it: verified with itself as the only root,
/// WebPKI answers `CaUsedAsEndEntity` (before looking at names or signatures' issuers).
fn is_ca_certificate(leaf: &CertificateDer<'static>, provider: &Arc<CryptoProvider>) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(leaf.clone()).is_err() {
        return false;
    }
    let Ok(verifier) =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()
    else {
        return false;
    };
    let name = ServerName::try_from("ota-server.invalid").expect("a valid DNS name");
    match verifier.verify_server_cert(leaf, &[], &name, &[], UnixTime::now()) {
        Err(rustls::Error::InvalidCertificate(e)) => format!("{e:?}").contains("CaUsedAsEndEntity"),
        _ => false,
    }
}

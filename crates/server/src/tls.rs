//! HTTPS on the API's listener (`--tls-cert`, `--tls-key`): the certificate chain and key
//! read from PEM files into a rustls server configuration (ring, TLS 1.2 and 1.3, HTTP/1.1
//! by ALPN). A file that cannot be read or holds no usable certificate or key stops the
//! process at start, naming the file.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The acceptor for `cert` (a PEM chain, the server's own certificate first) and `key`.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain = read_chain(cert)?;
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        anyhow::anyhow!(
            "--tls-key {}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            anyhow::anyhow!(
                "--tls-cert {} with --tls-key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_chain(cert: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let unusable = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "--tls-cert {}: no usable PEM certificate: {e}",
            cert.display()
        )
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| unusable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(&e))?;
    if chain.is_empty() {
        return Err(unusable(&"the file holds no CERTIFICATE block"));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let e = acceptor(&cert, &key).err().unwrap().to_string();
        assert!(e.contains("--tls-cert") && e.contains("cert.pem"), "{e}");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let e = acceptor(&cert, &key).err().unwrap().to_string();
        assert!(
            e.contains("cert.pem") && e.contains("no CERTIFICATE"),
            "{e}"
        );
    }
}

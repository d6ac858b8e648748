//! How our clients trust a TLS server: the public roots (Mozilla's, built
//! in: the static binary runs in images without a CA store), plus a
//! private CA (`--ca FILE`), or exactly one certificate.
//!
//! The last is what wsctl's own looks through a stack's public address
//! use: wsctl uploaded the certificate itself, so it expects Nginx to
//! present that one, whatever name or address the public address has (a
//! certificate for `chat.example.com` served on `127.0.0.1:8443`). That
//! also tells a rotation apart: after `wsctl tls reload`, a look that is
//! answered with the old certificate is a miss.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The public roots, and the CA certificates of `ca` (PEM) when given.
pub fn trusting(ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        use rustls::pki_types::pem::PemObject;
        let mut added = 0;
        for certificate in CertificateDer::pem_file_iter(ca)
            .map_err(|error| anyhow::anyhow!("--ca {}: {error:?}", ca.display()))?
        {
            let certificate =
                certificate.map_err(|error| anyhow::anyhow!("--ca {}: {error:?}", ca.display()))?;
            roots
                .add(certificate)
                .map_err(|error| anyhow::anyhow!("--ca {}: {error}", ca.display()))?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "--ca {}: holds no PEM certificate", ca.display());
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Trusts a server that presents `leaf` (DER) as its certificate, and no
/// other, whatever name it is reached by.
pub fn pinned(leaf: Vec<u8>) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = Pinned {
        leaf,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTP client with this trust.
pub fn http_client(
    config: Arc<ClientConfig>,
    builder: reqwest::ClientBuilder,
) -> anyhow::Result<reqwest::Client> {
    Ok(builder
        .use_preconfigured_tls(ClientConfig::clone(&config))
        .build()?)
}

/// The same trust for a WebSocket connect.
pub fn connector(config: Arc<ClientConfig>) -> tokio_tungstenite::Connector {
    tokio_tungstenite::Connector::Rustls(config)
}

/// Accepts exactly one end-entity certificate; the handshake's signatures
/// are still checked against it (so the server holds its key).
#[derive(Debug)]
struct Pinned {
    leaf: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match end_entity.as_ref() == self.leaf.as_slice() {
            true => Ok(ServerCertVerified::assertion()),
            false => Err(Error::General(
                "the server presented another certificate than wsctl.yaml's tls.certificate".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

//! HTTPS with rustls (ring provider): the server's configuration from
//! `server.tls_cert_file` and `server.tls_key_file`, and the client side of
//! `devicehub healthcheck`, which trusts exactly the configured certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::config::TlsFiles;
use crate::error::StartupError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the certificate chain and key; every problem is one line
/// naming the key at fault. The ALPN protocols (h2, http/1.1) are added by
/// actix-web when it listens.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, StartupError> {
    let certs = read_certs(&files.cert, "server.tls_cert_file")?;
    let key_file = files.key.display();
    let key_bytes = std::fs::read(&files.key).map_err(|e| {
        StartupError::new(format!("server.tls_key_file: cannot read {key_file}: {e}"))
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|_| {
        StartupError::new(format!(
            "server.tls_key_file: {key_file} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"
        ))
    })?;
    let provider = provider();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|_| {
        StartupError::new(format!(
            "server.tls_key_file: {key_file} is not an RSA, ECDSA or Ed25519 private key"
        ))
    })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(StartupError::new(format!(
                "server.tls_key_file: {key_file} is not the key of the certificate in server.tls_cert_file ({})",
                files.cert.display()
            )))
        }
        Err(e) => {
            return Err(StartupError::new(format!(
                "server.tls_cert_file: {}: the first certificate cannot be used: {e}",
                files.cert.display()
            )))
        }
    }
    Ok(ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError::new(format!("server.tls_cert_file: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified))))
}

/// The PEM certificates of `path`, leaf first; `key` names the setting.
fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, StartupError> {
    let shown = path.display();
    let bytes = std::fs::read(path)
        .map_err(|e| StartupError::new(format!("{key}: cannot read {shown}: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartupError::new(format!("{key}: {shown} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(StartupError::new(format!(
            "{key}: {shown} holds no PEM certificate"
        )));
    }
    Ok(certs)
}

/// A client that accepts exactly the leaf certificate of `cert_file` (the
/// server's own), so a self-signed certificate needs no CA and a certificate
/// from any CA works without its root: the healthcheck runs on the server's
/// box and reads the same file.
pub fn pinned_client_config(cert_file: &Path) -> Result<ClientConfig, StartupError> {
    let leaf = read_certs(cert_file, "server.tls_cert_file")?.swap_remove(0);
    let provider = provider();
    let verifier = Pinned {
        leaf,
        provider: provider.clone(),
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError::new(format!("server.tls_cert_file: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    // The handshake signatures are still checked: they prove the server
    // holds the certificate's private key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

//! AMQP over TLS (amqps, port 5671), with rustls, configured as RabbitMQ's
//! `ssl_options` are: a certificate chain and its key, and optionally a CA
//! bundle to verify client certificates with (`verify_peer`), required or
//! not (`fail_if_no_peer_cert`).
//!
//! A client whose certificate was verified may log in with the EXTERNAL
//! mechanism when `auth_mechanisms` lists it, as the
//! `rabbitmq_auth_mechanism_ssl` plugin allows: the user is the certificate
//! subject's common name (the plugin with `ssl_cert_login_from =
//! common_name`; its default is the whole distinguished name), and must
//! exist.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Where the TLS listener finds its certificates.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), its own first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) to verify client certificates with; without
    /// it, clients are not asked for one.
    pub ca: Option<PathBuf>,
    /// Refuse a client that presents no certificate (needs `ca`).
    pub fail_if_no_peer_cert: bool,
}

/// Why the TLS settings cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable or not the PEM it should be.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the combination (a key that does not match, …).
    #[error("TLS settings refused: {0}")]
    Config(String),
}

fn file_error(path: &Path, why: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads the files and makes the acceptor.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| file_error(&self.key, e))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.ca {
            None if self.fail_if_no_peer_cert => {
                return Err(TlsError::Config(
                    "fail_if_no_peer_cert needs a CA to verify client certificates with".into(),
                ))
            }
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca)? {
                    roots.add(cert).map_err(|e| file_error(ca, e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match self.fail_if_no_peer_cert {
                    true => verifier,
                    false => verifier.allow_unauthenticated(),
                };
                let verifier = verifier.build().map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// The common name of a verified client certificate's subject: the user
/// an EXTERNAL login is for.
pub fn peer_common_name(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(certs?.first()?).ok()?;
    let name = cert.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

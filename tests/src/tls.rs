//! Test certificates, made at test time with rcgen: a CA, a server
//! certificate for `localhost` and 127.0.0.1 signed by it, and client
//! certificates with the common name a test asks for.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

/// A CA and a server certificate, as PEM files in a temp directory.
pub struct TestCerts {
    /// The CA certificate (to trust the server, and to verify clients).
    pub ca: PathBuf,
    /// The server's certificate.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    _dir: tempfile::TempDir,
}

impl TestCerts {
    /// Makes a CA and a server certificate signed by it.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Warren test CA");
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server.distinguished_name.push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&key, &issuer).unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", issuer.pem()),
            server_cert: write("server.pem", cert.pem()),
            server_key: write("server.key", key.serialize_pem()),
            issuer,
            _dir: dir,
        }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A client certificate whose subject's common name is `common_name`,
    /// and its key: PEM.
    pub fn client(&self, common_name: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The broker's TLS settings for these certificates.
    pub fn files(&self, verify_clients: bool, fail_if_no_peer_cert: bool) -> warren_server::tls::TlsFiles {
        warren_server::tls::TlsFiles {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            ca: verify_clients.then(|| self.ca.clone()),
            fail_if_no_peer_cert,
        }
    }

    /// lapin's TLS settings: trust the CA, and present `client` if given.
    pub fn lapin_config(&self, client: Option<(String, String)>) -> lapin::tcp::OwnedTLSConfig {
        lapin::tcp::OwnedTLSConfig {
            identity: client.map(|(cert, key)| lapin::tcp::OwnedIdentity::PKCS8 {
                pem: cert.into_bytes(),
                key: key.into_bytes(),
            }),
            cert_chain: Some(self.ca_pem()),
        }
    }
}

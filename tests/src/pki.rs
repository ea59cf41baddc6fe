//! A throwaway certificate authority for the TLS tests (rcgen): certificates for 127.0.0.1
//! and localhost that serve and call, as each service's certificate does in a deployment.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use verimail_server::tls::GrpcTls;

pub struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        TestCa { pem, issuer: Issuer::new(params, key) }
    }

    /// The CA certificate (PEM), what `GRPC_TLS_CA` points at.
    pub fn pem(&self) -> String {
        self.pem.clone()
    }

    /// A certificate named `name` for 127.0.0.1 and localhost, and its key (both PEM).
    pub fn issue(&self, name: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A fresh certificate named `name` from this CA, its key and the CA (PEM).
    pub fn tls_pem(&self, name: &str) -> TlsPem {
        let (cert, key) = self.issue(name);
        TlsPem { cert, key, ca: self.pem() }
    }
}

/// A certificate, its key and the CA to trust (PEM): what a part's `GRPC_TLS_*` files hold.
#[derive(Clone)]
pub struct TlsPem {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl TlsPem {
    /// Mutual TLS with these, for a test's own clients.
    pub fn grpc_tls(&self) -> GrpcTls {
        GrpcTls::new(self.cert.clone(), self.key.clone(), self.ca.clone()).expect("valid PEM")
    }

    /// Writes the three files into `dir`: the `GRPC_TLS_*` variables that name them.
    pub fn write(&self, dir: &std::path::Path) -> Vec<(&'static str, String)> {
        [
            ("GRPC_TLS_CERT", "tls-cert.pem", &self.cert),
            ("GRPC_TLS_KEY", "tls-key.pem", &self.key),
            ("GRPC_TLS_CA", "tls-ca.pem", &self.ca),
        ]
        .into_iter()
        .map(|(variable, file, pem)| {
            let path = dir.join(file);
            std::fs::write(&path, pem).expect("write a PEM file");
            (variable, path.display().to_string())
        })
        .collect()
    }
}

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

    /// Mutual TLS for a process holding a fresh certificate from this CA.
    pub fn grpc_tls(&self, name: &str) -> GrpcTls {
        let (cert, key) = self.issue(name);
        GrpcTls::new(cert, key, self.pem()).expect("valid PEM")
    }
}

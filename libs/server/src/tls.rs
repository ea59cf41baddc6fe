//! TLS between the services, where certificates are configured: mutual TLS, so a caller must
//! hold a certificate from the deployment's CA before it reaches any RPC, and the service
//! credential rides inside an encrypted connection.
//!
//! Three PEM files configure it, all or none: `GRPC_TLS_CERT` and `GRPC_TLS_KEY` (this
//! process's certificate and key; it serves with them and presents them when it calls
//! another service) and `GRPC_TLS_CA` (the CA that signs every service's certificate; servers
//! require client certificates it signed, clients accept only servers it signed). Without
//! them gRPC runs in plain text, as in development and inside a private network.

use crate::config::{ConfigError, Vars};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// Mutual TLS between the services, or none; its `Debug` never shows the private key.
#[derive(Clone, Debug, Default)]
pub struct GrpcTls(Option<Arc<Pems>>);

/// The certificate chain, its private key and the CA, as PEM.
#[derive(Debug)]
struct Pems {
    cert: String,
    key: SecretString,
    ca: String,
}

impl GrpcTls {
    /// From `GRPC_TLS_CERT`, `GRPC_TLS_KEY` and `GRPC_TLS_CA` (paths to PEM files).
    pub fn from_vars(vars: &Vars) -> Result<GrpcTls, ConfigError> {
        let read = |name: &'static str, path: &str| {
            std::fs::read_to_string(path).map_err(|e| ConfigError::new(name, format!("cannot read {path}: {e}")))
        };
        match ["GRPC_TLS_CERT", "GRPC_TLS_KEY", "GRPC_TLS_CA"].map(|name| vars.var(name)) {
            [None, None, None] => {
                if vars.is_production() {
                    tracing::warn!("GRPC_TLS_* unset: gRPC between the services runs in plain text");
                }
                Ok(GrpcTls::off())
            }
            [Some(cert), Some(key), Some(ca)] => {
                GrpcTls::new(read("GRPC_TLS_CERT", &cert)?, read("GRPC_TLS_KEY", &key)?, read("GRPC_TLS_CA", &ca)?)
            }
            [cert, key, _] => {
                let missing = match (cert, key) {
                    (None, _) => "GRPC_TLS_CERT",
                    (_, None) => "GRPC_TLS_KEY",
                    _ => "GRPC_TLS_CA",
                };
                Err(ConfigError::new(missing, "is missing: GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CA go together"))
            }
        }
    }

    /// Mutual TLS with this certificate chain and key (PEM), trusting peers `ca` signed.
    /// The PEM is checked here, so a broken file stops the start, not the first call.
    pub fn new(cert: String, key: String, ca: String) -> Result<GrpcTls, ConfigError> {
        let certificates = |name: &'static str, pem: &str| {
            let found = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::new(name, format!("is not PEM certificates: {e}")))?;
            if found.is_empty() {
                return Err(ConfigError::new(name, "holds no CERTIFICATE block"));
            }
            Ok(())
        };
        certificates("GRPC_TLS_CERT", &cert)?;
        certificates("GRPC_TLS_CA", &ca)?;
        PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| ConfigError::new("GRPC_TLS_KEY", format!("holds no PEM private key: {e}")))?;
        install_crypto_provider();
        Ok(GrpcTls(Some(Arc::new(Pems { cert, key: key.into(), ca }))))
    }

    /// Plain text.
    pub fn off() -> GrpcTls {
        GrpcTls(None)
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The server side: this certificate, and client certificates required.
    pub fn server(&self) -> Option<ServerTlsConfig> {
        let pems = self.0.as_ref()?;
        Some(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&pems.cert, pems.key.expose_secret()))
                .client_ca_root(Certificate::from_pem(&pems.ca))
                .timeout(Duration::from_secs(5)),
        )
    }

    /// The client side: only servers the CA signed, and this certificate presented.
    pub fn client(&self) -> Option<ClientTlsConfig> {
        let pems = self.0.as_ref()?;
        Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pems.ca))
                .identity(Identity::from_pem(&pems.cert, pems.key.expose_secret())),
        )
    }

    /// A channel to another service at `addr` (`host:port` or a URL), over TLS when it is on.
    /// It connects lazily, so services can start in any order; a call while the peer is down
    /// fails with UNAVAILABLE. `variable` names the setting `addr` came from, for errors.
    pub fn channel(&self, variable: &'static str, addr: &str) -> Result<Channel, ConfigError> {
        let scheme = if self.is_on() { "https" } else { "http" };
        let url = match addr.split_once("://") {
            None => format!("{scheme}://{addr}"),
            Some((given, _)) if given == scheme => addr.to_owned(),
            Some((given, _)) => {
                return Err(ConfigError::new(variable, format!("{given}:// does not match gRPC TLS being {scheme}")));
            }
        };
        let mut endpoint = Endpoint::from_shared(url).map_err(|e| ConfigError::new(variable, e.to_string()))?;
        if let Some(tls) = self.client() {
            endpoint = endpoint.tls_config(tls).map_err(|e| ConfigError::new(variable, e.to_string()))?;
        }
        Ok(endpoint.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(10)).connect_lazy())
    }
}

/// Makes ring rustls's process-wide provider, as tonic's `tls-ring` uses it. ring is the only
/// provider this workspace builds (`deny.toml` bans aws-lc-rs), but a library that builds its
/// own rustls config asks for the process default, so it is installed before any TLS is set up.
pub fn install_crypto_provider() {
    // An error means one is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn broken_or_partial_settings_name_the_variable() {
        let not_pem = GrpcTls::new("hello".into(), "key".into(), "ca".into()).unwrap_err();
        assert_eq!(not_pem.name, "GRPC_TLS_CERT");
        let plain = GrpcTls::off();
        assert!(plain.server().is_none() && plain.client().is_none());
        assert!(plain.channel("X", "127.0.0.1:1").is_ok());
        assert_eq!(plain.channel("X", "https://127.0.0.1:1").unwrap_err().name, "X");
    }
}

//! The service credential: internal RPCs (IssueVerificationToken) answer only callers that
//! present it, and only such callers may say on whose behalf they call
//! (`x-verimail-client-address`). Ops RPCs take the separate admin credential
//! ([`crate::admin`]). A shared secret in metadata, compared in
//! constant time. Without `INTERNAL_SERVICE_TOKEN` (development) internal RPCs are open;
//! production refuses to start that way.

use crate::config::{self, ConfigError};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The metadata key that carries the credential.
pub const SERVICE_TOKEN: &str = "x-verimail-service-token";

/// The metadata key a trusted front (the gateway) sets to the address of the client it serves.
pub const CLIENT_ADDRESS: &str = "x-verimail-client-address";

const MIN_SECRET_LEN: usize = 16;

/// A channel that presents the credential on every call.
pub type Internal = tonic::service::interceptor::InterceptedService<Channel, ServiceCredential>;

#[derive(Clone, Default)]
pub struct ServiceCredential(Option<Arc<str>>);

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ServiceCredential(***)" } else { "ServiceCredential(open)" })
    }
}

impl ServiceCredential {
    /// `INTERNAL_SERVICE_TOKEN`: at least 16 characters; required in production.
    pub fn from_env() -> Result<ServiceCredential, ConfigError> {
        match config::var("INTERNAL_SERVICE_TOKEN") {
            Some(secret) => ServiceCredential::new(&secret).map_err(|e| ConfigError::new("INTERNAL_SERVICE_TOKEN", e)),
            None if config::is_production() => Err(ConfigError::new(
                "INTERNAL_SERVICE_TOKEN",
                "is required in production: internal RPCs would be open to anyone who reaches the port",
            )),
            None => Ok(ServiceCredential::open()),
        }
    }

    pub fn new(secret: &str) -> Result<ServiceCredential, String> {
        let secret = secret.trim();
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!("must be at least {MIN_SECRET_LEN} characters"));
        }
        Ok(ServiceCredential(Some(secret.into())))
    }

    /// Whether `secret` is this credential (false when there is none).
    pub fn is(&self, secret: &str) -> bool {
        self.0.as_ref().is_some_and(|own| bool::from(own.as_bytes().ct_eq(secret.trim().as_bytes())))
    }

    /// No credential: internal RPCs are open (development only).
    pub fn open() -> ServiceCredential {
        ServiceCredential(None)
    }

    /// Whether the call comes from one of our services (always, when no credential is set).
    pub fn is_trusted<T>(&self, request: &Request<T>) -> bool {
        let Some(secret) = &self.0 else { return true };
        let presented = request.metadata().get(SERVICE_TOKEN).map(|v| v.as_bytes()).unwrap_or_default();
        presented.ct_eq(secret.as_bytes()).into()
    }

    /// Who is asking, for per-client limits: the address a trusted front passed on, else the
    /// peer's; keyed as [`crate::limits::client_key`] says (an IPv6 client by its /64).
    pub fn client_of<T>(&self, request: &Request<T>) -> String {
        if self.is_trusted(request)
            && let Some(passed_on) = request.metadata().get(CLIENT_ADDRESS).and_then(|v| v.to_str().ok())
        {
            return match passed_on.trim().parse() {
                Ok(ip) => crate::limits::client_key(ip),
                Err(_) => passed_on.to_owned(),
            };
        }
        request.remote_addr().map(|addr| crate::limits::client_key(addr.ip())).unwrap_or_else(|| "unknown".into())
    }

    /// For internal RPCs: UNAUTHENTICATED unless the call presents the credential.
    pub fn require<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.is_trusted(request) {
            return Ok(());
        }
        Err(Status::unauthenticated(format!("an internal RPC: present the service credential in {SERVICE_TOKEN}")))
    }

    /// A client channel that presents this credential.
    pub fn channel(&self, channel: Channel) -> Internal {
        tonic::service::interceptor::InterceptedService::new(channel, self.clone())
    }
}

impl Interceptor for ServiceCredential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(secret) = &self.0
            && let Ok(value) = secret.parse()
        {
            request.metadata_mut().insert(SERVICE_TOKEN, value);
        }
        // The caller's trace continues in the service it calls.
        for (field, value) in crate::telemetry::carrier(&tracing::Span::current()) {
            if let (Ok(key), Ok(value)) = (field.parse::<tonic::metadata::AsciiMetadataKey>(), value.parse()) {
                request.metadata_mut().insert(key, value);
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_is_trusted() {
        let credential = ServiceCredential::new("0123456789abcdef-secret").unwrap();
        let mut request = Request::new(());
        assert!(!credential.is_trusted(&request), "no credential");
        request.metadata_mut().insert(SERVICE_TOKEN, "0123456789abcdef-secreT".parse().unwrap());
        assert!(!credential.is_trusted(&request), "a wrong one");
        assert_eq!(credential.require(&request).unwrap_err().code(), tonic::Code::Unauthenticated);
        let attached = credential.clone().call(Request::new(())).unwrap();
        assert!(credential.is_trusted(&attached), "what the interceptor attaches");
        assert!(ServiceCredential::new("short").is_err());
        assert!(ServiceCredential::open().is_trusted(&Request::new(())), "open in development");
        assert_eq!(format!("{credential:?}"), "ServiceCredential(***)");
    }
}

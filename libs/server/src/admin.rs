//! The admin credential: ops RPCs (GetUser, ListUsers, ListDeliveries, GetDelivery,
//! RetryDelivery, RevokeVerificationTokens, ListParked, ReplayParked) answer only callers that
//! present `authorization: Bearer <ADMIN_TOKEN>`, the way grpcurl sends it with `-H`.
//!
//! It is separate from the service credential on purpose: a service (or whoever holds its
//! credential) cannot list users or replay messages, and an operator's token cannot have
//! verification tokens issued. Without `ADMIN_TOKEN` the ops RPCs are open in development and
//! turned off in production (PERMISSION_DENIED), so a deployment that never sets one exposes
//! nothing.

use crate::config::{ConfigError, Vars};
use crate::internal::ServiceCredential;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key that carries the credential, as `Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

const MIN_SECRET_LEN: usize = 16;

/// Its `Debug` never shows the token.
#[derive(Clone, Debug)]
pub enum AdminCredential {
    /// Development without `ADMIN_TOKEN`: ops RPCs answer anyone.
    Open,
    /// Production without `ADMIN_TOKEN`: ops RPCs answer no one.
    Off,
    Token(SecretString),
}

impl AdminCredential {
    /// `ADMIN_TOKEN`: at least 16 characters, and none of the services' credentials.
    pub fn from_vars(vars: &Vars, services: &[&ServiceCredential]) -> Result<AdminCredential, ConfigError> {
        match vars.var("ADMIN_TOKEN") {
            Some(secret) if services.iter().any(|service| service.is(&secret)) => Err(ConfigError::new(
                "ADMIN_TOKEN",
                "must differ from the service credentials: operators and services hold separate credentials",
            )),
            Some(secret) => AdminCredential::new(&secret).map_err(|e| ConfigError::new("ADMIN_TOKEN", e)),
            None if vars.is_production() => {
                tracing::info!("ADMIN_TOKEN is not set: ops RPCs are turned off");
                Ok(AdminCredential::Off)
            }
            None => Ok(AdminCredential::Open),
        }
    }

    pub fn new(secret: &str) -> Result<AdminCredential, String> {
        let secret = secret.trim();
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!("must be at least {MIN_SECRET_LEN} characters"));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces (it travels in a header)".into());
        }
        Ok(AdminCredential::Token(secret.into()))
    }

    /// For ops RPCs: UNAUTHENTICATED unless the call presents the admin credential,
    /// PERMISSION_DENIED when ops RPCs are turned off.
    pub fn require<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let secret = match self {
            AdminCredential::Open => return Ok(()),
            AdminCredential::Off => {
                return Err(Status::permission_denied(
                    "ops RPCs are turned off: set ADMIN_TOKEN on this service to use them",
                ));
            }
            AdminCredential::Token(secret) => secret,
        };
        let presented = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::internal::bearer_secret)
            .map(str::as_bytes);
        match presented {
            Some(token) if bool::from(token.ct_eq(secret.expose_secret().as_bytes())) => Ok(()),
            Some(_) => Err(Status::unauthenticated("an ops RPC: the admin credential is not valid")),
            None => Err(Status::unauthenticated(format!(
                "an ops RPC: present the admin credential as `{AUTHORIZATION}: Bearer <ADMIN_TOKEN>`"
            ))),
        }
    }

    /// The guard of a service whose every RPC is for operators: [`AdminCredential::require`]
    /// once, in front of all of them.
    pub fn guard(&self) -> OperatorsOnly {
        OperatorsOnly(self.clone())
    }
}

/// The guard of a service whose every RPC is for operators, put in front of the service
/// (`InterceptedService::new(server, admin.guard())`).
#[derive(Clone, Debug)]
pub struct OperatorsOnly(AdminCredential);

impl Interceptor for OperatorsOnly {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.require(&request)?;
        Ok(request)
    }
}

/// A client that presents the credential (an operator's tool, the tests).
impl Interceptor for AdminCredential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let AdminCredential::Token(secret) = self
            && let Ok(value) = format!("Bearer {}", secret.expose_secret()).parse()
        {
            request.metadata_mut().insert(AUTHORIZATION, value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request.metadata_mut().insert(AUTHORIZATION, value.parse().unwrap());
        request
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let admin = AdminCredential::new("operator-secret-0123456789").unwrap();
        let code = |request: Request<()>| admin.require(&request).err().map(|s| s.code());
        assert_eq!(code(Request::new(())), Some(tonic::Code::Unauthenticated), "none");
        assert_eq!(code(with_authorization("Bearer operator-secret-012345678")), Some(tonic::Code::Unauthenticated));
        assert_eq!(code(with_authorization("Basic operator-secret-0123456789")), Some(tonic::Code::Unauthenticated));
        assert_eq!(code(with_authorization("operator-secret-0123456789")), Some(tonic::Code::Unauthenticated));
        assert_eq!(code(with_authorization("bearer operator-secret-0123456789")), None, "the scheme is case-blind");
        assert_eq!(code(admin.clone().call(Request::new(())).unwrap()), None, "what the interceptor attaches");
        assert_eq!(AdminCredential::Off.require(&Request::new(())).unwrap_err().code(), tonic::Code::PermissionDenied);
        assert!(AdminCredential::Open.require(&Request::new(())).is_ok());
        assert!(AdminCredential::new("short").is_err());
        assert!(AdminCredential::new("has a space in it, long enough").is_err());
        let shown = format!("{admin:?}");
        assert!(!shown.contains("operator-secret") && shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn the_service_credential_is_not_an_admin_credential() {
        let service = ServiceCredential::new("service-secret-0123456789").unwrap();
        let request = service.clone().call(Request::new(())).unwrap();
        let admin = AdminCredential::new("operator-secret-0123456789").unwrap();
        assert_eq!(admin.require(&request).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(service.is("service-secret-0123456789"));
        assert!(!service.is("operator-secret-0123456789"));
    }
}

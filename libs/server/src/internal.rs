//! Service credentials: each of our callers has its own, and may call only what its job needs.
//!
//! - [`GATEWAY_TOKEN`] (`GATEWAY_SERVICE_TOKEN`): a front that serves browsers (the gateway,
//!   or a team's backend). Only it may say on whose behalf it calls
//!   (`x-verimail-client-address`), so per-client limits count browsers, not the front.
//! - [`EMAIL_TOKEN`] (`EMAIL_SERVICE_TOKEN`): email-service, the only caller that may have
//!   verification tokens issued (IssueVerificationToken).
//! - [`USER_TOKEN`] (`USER_SERVICE_TOKEN`): user-service, the only caller that may have access
//!   tokens signed (IssueAccessToken), after it has checked a password.
//! - [`APP_TOKEN`] (`APP_SERVICE_TOKEN`, optional): the team's own services, which may look
//!   users up (GetUser, BatchGetUsers) and nothing else.
//!
//! So the internet-facing gateway cannot mint links, and email-service cannot speak for
//! browsers. Ops RPCs take the separate admin credential ([`crate::admin`]). Each is a secret
//! in the `x-verimail-service-token` metadata, compared in constant time. Without one
//! (development) what it guards is open; production refuses to start that way.

use crate::config::{ConfigError, Vars};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The metadata key that carries the credential.
pub const SERVICE_TOKEN: &str = "x-verimail-service-token";

/// The metadata key a trusted front (the gateway) sets to the address of the client it serves.
pub const CLIENT_ADDRESS: &str = "x-verimail-client-address";

/// The variable of a front's credential (the gateway's): it may name the browser it calls for.
pub const GATEWAY_TOKEN: &str = "GATEWAY_SERVICE_TOKEN";

/// The variable of email-service's credential: it may have verification tokens issued.
pub const EMAIL_TOKEN: &str = "EMAIL_SERVICE_TOKEN";

/// The variable of user-service's credential: it may have access tokens signed.
pub const USER_TOKEN: &str = "USER_SERVICE_TOKEN";

/// The variable of the credential of the system's other services: they may look users up.
pub const APP_TOKEN: &str = "APP_SERVICE_TOKEN";

const MIN_SECRET_LEN: usize = 16;

/// The secret of an `authorization` value `Bearer <secret>` (the scheme in any case).
pub fn bearer_secret(value: &str) -> Option<&str> {
    let (scheme, secret) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim()).filter(|secret| !secret.is_empty())
}

/// A channel that presents the credential on every call.
pub type Internal = tonic::service::interceptor::InterceptedService<Channel, ServiceCredential>;

/// A service credential, or none (open, development only); its `Debug` never shows it.
#[derive(Clone, Debug, Default)]
pub struct ServiceCredential(Option<SecretString>);

impl ServiceCredential {
    /// The credential in `variable` ([`GATEWAY_TOKEN`] or [`EMAIL_TOKEN`]): at least 16
    /// characters; required in production.
    pub fn from_vars(vars: &Vars, variable: &'static str) -> Result<ServiceCredential, ConfigError> {
        match vars.var(variable) {
            Some(secret) => ServiceCredential::new(&secret).map_err(|e| ConfigError::new(variable, e)),
            None if vars.is_production() => Err(ConfigError::new(
                variable,
                "is required in production: what it guards would be open to anyone who reaches the port",
            )),
            None => Ok(ServiceCredential::open()),
        }
    }

    /// The credential in `variable` if it is set (development and production alike): what it
    /// allows is simply not allowed to anyone without it.
    pub fn optional_from_vars(vars: &Vars, variable: &'static str) -> Result<ServiceCredential, ConfigError> {
        match vars.var(variable) {
            Some(secret) => ServiceCredential::new(&secret).map_err(|e| ConfigError::new(variable, e)),
            None => Ok(ServiceCredential::open()),
        }
    }

    /// The credentials of the callers of one service (each with its variable) must all differ:
    /// each caller holds its own. Unset ones differ from everything.
    pub fn ensure_distinct(credentials: &[(&'static str, &ServiceCredential)]) -> Result<(), ConfigError> {
        for (i, (variable, credential)) in credentials.iter().enumerate() {
            if let Some(secret) = &credential.0
                && let Some((earlier, _)) =
                    credentials[..i].iter().find(|(_, earlier)| earlier.is(secret.expose_secret()))
            {
                return Err(ConfigError::new(
                    variable,
                    format!("must differ from {earlier}: each caller holds its own"),
                ));
            }
        }
        Ok(())
    }

    pub fn new(secret: &str) -> Result<ServiceCredential, String> {
        let secret = secret.trim();
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!("must be at least {MIN_SECRET_LEN} characters"));
        }
        Ok(ServiceCredential(Some(secret.into())))
    }

    /// The secret, for the checks that no two callers hold the same one.
    pub(crate) fn secret(&self) -> Option<&str> {
        self.0.as_ref().map(|secret| secret.expose_secret())
    }

    /// Whether `secret` is this credential (false when there is none).
    pub fn is(&self, secret: &str) -> bool {
        self.0.as_ref().is_some_and(|own| bool::from(own.expose_secret().as_bytes().ct_eq(secret.trim().as_bytes())))
    }

    /// Whether the call presents exactly this credential (false when there is none).
    pub fn presented_by<T>(&self, request: &Request<T>) -> bool {
        let presented = request.metadata().get(SERVICE_TOKEN).map(|v| v.as_bytes()).unwrap_or_default();
        self.0.as_ref().is_some_and(|own| bool::from(presented.ct_eq(own.expose_secret().as_bytes())))
    }

    /// No credential: internal RPCs are open (development only).
    pub fn open() -> ServiceCredential {
        ServiceCredential(None)
    }

    /// Whether the call comes from the caller this credential names (always, when no
    /// credential is set).
    pub fn is_trusted<T>(&self, request: &Request<T>) -> bool {
        self.0.is_none() || self.presented_by(request)
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

    /// For an internal RPC only this credential's caller may call: UNAUTHENTICATED unless
    /// the call presents it, PERMISSION_DENIED for a known caller of another kind (`others`:
    /// its credential, and what to call it).
    pub fn require<T>(&self, request: &Request<T>, others: &[(&ServiceCredential, &str)]) -> Result<(), Status> {
        if self.is_trusted(request) {
            return Ok(());
        }
        if let Some((_, who)) = others.iter().find(|(credential, _)| credential.presented_by(request)) {
            return Err(Status::permission_denied(format!("{who}'s credential may not call this RPC")));
        }
        Err(Status::unauthenticated(format!("an internal RPC: present its caller's credential in {SERVICE_TOKEN}")))
    }

    /// A client channel that presents this credential.
    pub fn channel(&self, channel: Channel) -> Internal {
        tonic::service::interceptor::InterceptedService::new(channel, self.clone())
    }
}

impl Interceptor for ServiceCredential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(secret) = &self.0
            && let Ok(value) = secret.expose_secret().parse()
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
    fn each_caller_holds_its_own_credential() {
        let gateway = ServiceCredential::new("the-gateway-secret-0123").unwrap();
        let email = ServiceCredential::new("the-email-secret-012345").unwrap();
        let again = ServiceCredential::new("the-gateway-secret-0123").unwrap();
        let open = ServiceCredential::open();
        assert!(ServiceCredential::ensure_distinct(&[(GATEWAY_TOKEN, &gateway), (EMAIL_TOKEN, &email)]).is_ok());
        assert!(ServiceCredential::ensure_distinct(&[(GATEWAY_TOKEN, &open), (APP_TOKEN, &open)]).is_ok(), "unset");
        let refused = ServiceCredential::ensure_distinct(&[
            (GATEWAY_TOKEN, &gateway),
            (EMAIL_TOKEN, &email),
            (USER_TOKEN, &again),
        ])
        .unwrap_err();
        assert_eq!(refused.name, USER_TOKEN);
        assert!(refused.message.contains(GATEWAY_TOKEN), "{}", refused.message);
    }

    #[test]
    fn only_the_exact_secret_is_trusted() {
        let credential = ServiceCredential::new("0123456789abcdef-secret").unwrap();
        let mut request = Request::new(());
        assert!(!credential.is_trusted(&request), "no credential");
        request.metadata_mut().insert(SERVICE_TOKEN, "0123456789abcdef-secreT".parse().unwrap());
        assert!(!credential.is_trusted(&request), "a wrong one");
        assert_eq!(credential.require(&request, &[]).unwrap_err().code(), tonic::Code::Unauthenticated);
        let gateway = ServiceCredential::new("the-gateway-secret-0123").unwrap();
        let from_gateway = gateway.clone().call(Request::new(())).unwrap();
        let denied = credential.require(&from_gateway, &[(&gateway, "the gateway")]).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "a known caller of another kind");
        let attached = credential.clone().call(Request::new(())).unwrap();
        assert!(credential.is_trusted(&attached), "what the interceptor attaches");
        assert!(ServiceCredential::new("short").is_err());
        assert!(ServiceCredential::open().is_trusted(&Request::new(())), "open in development");
        let shown = format!("{credential:?}");
        assert!(!shown.contains("secret") || shown.contains("REDACTED"), "{shown}");
        assert!(!shown.contains("0123"), "{shown}");
    }
}

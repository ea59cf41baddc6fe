//! The team's own services, each by name: a caller holds one or two secrets (two while one is
//! rotated out), may call what it is granted and nothing else, and has its own rate limit; its
//! name goes into the span of each call (and so the logs), and into
//! `verimail_service_calls_total{caller, method}`.
//!
//! They are listed in one file, `SERVICE_CREDENTIALS_FILE` (YAML), which holds no secret: each
//! secret is given by its SHA-256 (`printf %s "$SECRET" | sha256sum`), so the file may live in
//! a ConfigMap and in version control.
//!
//! ```yaml
//! services:
//!   - name: orders                     # 1–32 of a-z, 0-9 and -, unique
//!     secrets_sha256: [9f86d081…, …]   # one, or two while rotating
//!     may: [lookups, revocations]      # lookups: GetUser; batch_lookups:
//!                                      # BatchGetUsers; revocations: ListRevokedSessions;
//!                                      # webhooks: email-service's WebhookService
//!     rate: 200/1                      # N/SECONDS, or off (the default)
//! ```
//!
//! `APP_SERVICE_TOKEN`, where it is set, is one more caller, named `app`, granted all three, limited by `APP_SERVICE_RATE` (off by default): what it could call before named
//! credentials came, so nothing breaks. A secret is revoked by taking it out of the file (or
//! the variable) and restarting; a call presenting it is then UNAUTHENTICATED.

use crate::config::{ConfigError, Vars};
use crate::internal::{SERVICE_TOKEN, ServiceCredential};
use crate::limits::{Limiter, Rate};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// The variable naming the file of service credentials.
pub const FILE: &str = "SERVICE_CREDENTIALS_FILE";

/// The name `APP_SERVICE_TOKEN`'s caller goes by.
pub const APP: &str = "app";

/// What a caller may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// GetUser: one user by id or address.
    Lookups,
    /// BatchGetUsers: up to 100 users by id.
    BatchLookups,
    /// ListRevokedSessions: the revocation feed verifiers follow.
    Revocations,
    /// email-service's WebhookService: registering and running webhook endpoints.
    Webhooks,
}

impl Grant {
    fn as_str(self) -> &'static str {
        match self {
            Grant::Lookups => "lookups",
            Grant::BatchLookups => "batch_lookups",
            Grant::Revocations => "revocations",
            Grant::Webhooks => "webhooks",
        }
    }
}

/// One named caller.
pub struct Caller {
    name: String,
    hashes: Vec<[u8; 32]>,
    may: Vec<Grant>,
    limiter: Limiter,
}

impl Caller {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("name", &self.name).field("may", &self.may).finish_non_exhaustive()
    }
}

/// Every named caller of a service.
#[derive(Debug, Default)]
pub struct Callers {
    known: Vec<Caller>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    services: Vec<Entry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    secrets_sha256: Vec<String>,
    may: Vec<Grant>,
    #[serde(default)]
    rate: Option<String>,
}

/// Calls answered for each named caller, by method: bounded by the callers configured.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    caller: String,
    method: String,
}

static CALLS: LazyLock<Family<CallLabels, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "service_calls",
        "Calls from the team's named services, by caller and method",
        Family::default(),
    )
});

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.trim().as_bytes()).into()
}

fn rate(text: Option<&str>) -> Result<Option<Rate>, String> {
    match text.map(str::trim) {
        None => Ok(None),
        Some(off) if off.eq_ignore_ascii_case("off") => Ok(None),
        Some(rate) => rate.parse().map(Some),
    }
}

impl Callers {
    /// `SERVICE_CREDENTIALS_FILE` and `APP_SERVICE_TOKEN` (both optional). `others`: the
    /// service's other credentials (its callers' and the admin's), which no named caller's
    /// secret may equal: each caller holds its own.
    pub fn from_vars(vars: &Vars, others: &[&ServiceCredential]) -> Result<Callers, ConfigError> {
        let mut callers = Callers::default();
        if let Some(path) = vars.var(FILE) {
            let error = |e: String| ConfigError::new(FILE, format!("{path}: {e}"));
            let text = std::fs::read_to_string(&path).map_err(|e| error(e.to_string()))?;
            let file: File = serde_saphyr::from_str(&text).map_err(|e| error(e.to_string()))?;
            for entry in file.services {
                let caller = Caller::from_entry(entry).map_err(error)?;
                callers.add(caller).map_err(error)?;
            }
        }
        let app = ServiceCredential::optional_from_vars(vars, crate::internal::APP_TOKEN)?;
        if let Some(secret) = app.secret() {
            let limit =
                rate(vars.var("APP_SERVICE_RATE").as_deref()).map_err(|e| ConfigError::new("APP_SERVICE_RATE", e))?;
            let caller = Caller {
                name: APP.to_owned(),
                hashes: vec![sha256(secret)],
                may: vec![Grant::Lookups, Grant::BatchLookups, Grant::Revocations],
                limiter: Limiter::new("calls from this service", limit),
            };
            callers.add(caller).map_err(|e| ConfigError::new(crate::internal::APP_TOKEN, e))?;
        }
        for other in others {
            if let Some(secret) = other.secret()
                && let Some(caller) = callers.by_hash(&sha256(secret))
            {
                return Err(ConfigError::new(
                    FILE,
                    format!(
                        "{}'s secret is another credential of this service: each caller holds its own",
                        caller.name
                    ),
                ));
            }
        }
        Ok(callers)
    }

    fn add(&mut self, caller: Caller) -> Result<(), String> {
        if self.known.iter().any(|known| known.name == caller.name) {
            return Err(format!("two callers are named {}", caller.name));
        }
        if let Some(hash) = caller.hashes.iter().find(|hash| self.by_hash(hash).is_some()) {
            let holder = self.by_hash(hash).map(|c| c.name.clone()).unwrap_or_default();
            return Err(format!("{} and {holder} hold the same secret: each caller holds its own", caller.name));
        }
        self.known.push(caller);
        Ok(())
    }

    fn by_hash(&self, hash: &[u8; 32]) -> Option<&Caller> {
        // Every hash is compared, in constant time each: which one matched takes no longer.
        let mut found = None;
        for caller in &self.known {
            for own in &caller.hashes {
                if bool::from(own.ct_eq(hash)) {
                    found = Some(caller);
                }
            }
        }
        found
    }

    /// The name of the caller holding `secret`, if any (so that the admin credential is no
    /// service's).
    pub fn holder_of(&self, secret: &str) -> Option<&str> {
        self.by_hash(&sha256(secret)).map(Caller::name)
    }

    /// The names configured, for operators (start-up logs).
    pub fn names(&self) -> Vec<&str> {
        self.known.iter().map(|caller| caller.name.as_str()).collect()
    }

    /// The caller whose secret the call presents, if any.
    pub fn identify<T>(&self, request: &Request<T>) -> Option<&Caller> {
        let presented = request.metadata().get(SERVICE_TOKEN)?.to_str().ok()?;
        self.by_hash(&sha256(presented))
    }

    /// For an RPC of the services granted `grant` and of operators: a named caller as
    /// [`Callers::allow`] says, else the admin credential's check.
    pub fn allow_or_operator<T>(
        &self,
        request: &Request<T>,
        grant: Grant,
        method: &str,
        admin: &crate::admin::AdminCredential,
    ) -> Result<(), Status> {
        match self.allow(request, grant, method)? {
            Some(_) => Ok(()),
            None => admin.require(request),
        }
    }

    /// For an RPC `grant` allows: `Some(name)` for a named caller granted it (counted, its
    /// name recorded on the call's span, RESOURCE_EXHAUSTED past its rate), PERMISSION_DENIED
    /// for one not granted it, and `None` when the call names no caller (the operator check
    /// comes next, which answers UNAUTHENTICATED to a secret nobody holds).
    pub fn allow<T>(&self, request: &Request<T>, grant: Grant, method: &str) -> Result<Option<&str>, Status> {
        let Some(caller) = self.identify(request) else { return Ok(None) };
        tracing::Span::current().record("caller", caller.name.as_str());
        if !caller.may.contains(&grant) {
            return Err(Status::permission_denied(format!(
                "the service {} may not call {method}: grant it {} in {FILE}",
                caller.name,
                grant.as_str()
            )));
        }
        caller.limiter.check_here(&caller.name)?;
        CALLS.get_or_create(&CallLabels { caller: caller.name.clone(), method: method.to_owned() }).inc();
        Ok(Some(&caller.name))
    }
}

/// The guard of a service for operators (the admin credential) and the named services granted
/// `grant`, put in front of it (`InterceptedService::new(server, guard)`).
#[derive(Clone)]
pub struct OperatorsOr {
    pub admin: crate::admin::AdminCredential,
    pub callers: std::sync::Arc<Callers>,
    pub grant: Grant,
    /// What the callers are told they may not call, and the metrics' `method`.
    pub service: &'static str,
}

impl tonic::service::Interceptor for OperatorsOr {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.callers.allow_or_operator(&request, self.grant, self.service, &self.admin)?;
        Ok(request)
    }
}

impl Caller {
    fn from_entry(entry: Entry) -> Result<Caller, String> {
        let name = entry.name.trim().to_owned();
        let fits = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if name.is_empty() || name.len() > 32 || !name.chars().all(fits) {
            return Err(format!("{name:?} is not a caller's name (1–32 of a-z, 0-9 and -)"));
        }
        if !(1..=2).contains(&entry.secrets_sha256.len()) {
            return Err(format!("{name}: one secret, or two while rotating (secrets_sha256)"));
        }
        let mut hashes = Vec::new();
        for hex in &entry.secrets_sha256 {
            let hash = decode_sha256(hex).ok_or_else(|| {
                format!("{name}: {hex:?} is not a SHA-256 in hex (printf %s \"$SECRET\" | sha256sum)")
            })?;
            hashes.push(hash);
        }
        if entry.may.is_empty() {
            return Err(format!(
                "{name}: may names nothing it may call (lookups, batch_lookups, revocations, webhooks)"
            ));
        }
        let limit = rate(entry.rate.as_deref()).map_err(|e| format!("{name}: rate: {e}"))?;
        Ok(Caller { name, hashes, may: entry.may, limiter: Limiter::new("calls from this service", limit) })
    }
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(secret: &str) -> String {
        sha256(secret).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn file(text: &str) -> (tempfile::NamedTempFile, Vars) {
        use std::io::Write as _;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let vars = Vars::from_pairs([(FILE, file.path().display().to_string())]);
        (file, vars)
    }

    fn call(secret: &str) -> Request<()> {
        let mut request = Request::new(());
        request.metadata_mut().insert(SERVICE_TOKEN, secret.parse().unwrap());
        request
    }

    #[tokio::test]
    async fn each_caller_may_call_what_it_is_granted_with_either_of_its_secrets() {
        let (_file, vars) = file(&format!(
            "services:\n  - name: orders\n    secrets_sha256: [{}, {}]\n    may: [lookups]\n    rate: 2/60\n  \
             - name: billing\n    secrets_sha256: [\"{}\"]\n    may: [revocations]\n",
            hex("orders-secret-old-0123456789"),
            hex("orders-secret-new-0123456789"),
            hex("billing-secret-0123456789ab")
        ));
        let callers = Callers::from_vars(&vars, &[]).unwrap();
        assert_eq!(callers.names(), ["orders", "billing"]);
        let orders = call("orders-secret-new-0123456789");
        assert_eq!(callers.allow(&orders, Grant::Lookups, "GetUser").unwrap(), Some("orders"));
        let old = call("orders-secret-old-0123456789");
        assert_eq!(callers.allow(&old, Grant::Lookups, "GetUser").unwrap(), Some("orders"), "rotating: both");
        let past = callers.allow(&orders, Grant::Lookups, "GetUser").unwrap_err();
        assert_eq!(past.code(), tonic::Code::ResourceExhausted, "its own rate: 2 a minute");
        let denied = callers.allow(&call("billing-secret-0123456789ab"), Grant::Lookups, "GetUser").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("billing") && denied.message().contains("lookups"), "{denied:?}");
        assert_eq!(callers.allow(&call("nobody-holds-this-secret"), Grant::Lookups, "GetUser").unwrap(), None);
        assert_eq!(callers.allow(&Request::new(()), Grant::Lookups, "GetUser").unwrap(), None);
    }

    #[test]
    fn app_service_token_is_the_caller_named_app() {
        let vars = Vars::from_pairs([("APP_SERVICE_TOKEN", "an-app-secret-0123456789")]);
        let callers = Callers::from_vars(&vars, &[]).unwrap();
        let app = call("an-app-secret-0123456789");
        assert_eq!(callers.allow(&app, Grant::Lookups, "GetUser").unwrap(), Some(APP));
        assert_eq!(callers.allow(&app, Grant::Revocations, "ListRevokedSessions").unwrap(), Some(APP));
    }

    #[test]
    fn a_file_that_is_not_right_is_refused_by_name() {
        let refused = |text: String, others: &[&ServiceCredential]| {
            let (_file, vars) = file(&text);
            Callers::from_vars(&vars, others).unwrap_err().to_string()
        };
        let one = hex("a-secret-0123456789abcdef");
        let entry = |name: &str, secrets: &str, may: &str| {
            format!("  - name: {name}\n    secrets_sha256: [{secrets}]\n    may: [{may}]\n")
        };
        for (text, why) in [
            (format!("services:\n{}", entry("Orders", &one, "lookups")), "not a caller's name"),
            (
                format!(
                    "services:\n{}{}",
                    entry("a", &one, "lookups"),
                    entry("a", &hex("x-0123456789abcdef"), "lookups")
                ),
                "two callers",
            ),
            (format!("services:\n{}{}", entry("a", &one, "lookups"), entry("b", &one, "lookups")), "same secret"),
            (format!("services:\n{}", entry("a", "abc", "lookups")), "not a SHA-256"),
            (format!("services:\n{}", entry("a", &format!("{one}, {one}, {one}"), "lookups")), "two while rotating"),
            (format!("services:\n{}", entry("a", &one, "everything")), "everything"),
            (format!("services:\n{}", entry("a", &one, "")), "may names nothing"),
            (format!("services:\n{}    rate: fast\n", entry("a", &one, "lookups")), "rate"),
        ] {
            let message = refused(text, &[]);
            assert!(message.contains(FILE) && message.contains(why), "{why}: {message}");
        }
        let gateway = ServiceCredential::new("a-secret-0123456789abcdef").unwrap();
        let message = refused(format!("services:\n{}", entry("a", &one, "lookups")), &[&gateway]);
        assert!(message.contains("another credential"), "{message}");
        let missing = Vars::from_pairs([(FILE, "/nonexistent/credentials.yaml")]);
        assert!(Callers::from_vars(&missing, &[]).unwrap_err().to_string().contains("/nonexistent"));
    }
}

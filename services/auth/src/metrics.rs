//! auth-service's metric families, registered when the service is built.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerificationLabels {
    pub method: &'static str,
    pub outcome: &'static str,
}

/// `method` link or code; `outcome` verified, already_verified, expired, invalid, locked,
/// revoked or error.
static VERIFICATIONS: LazyLock<Family<VerificationLabels, Counter>> = LazyLock::new(|| {
    verimail_server::metrics::register(
        "verifications",
        "Verification attempts, by method and outcome",
        Family::default(),
    )
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessTokenLabels {
    pub email_verified: bool,
}

/// Access tokens signed, by whether they say the address is verified.
static ACCESS_TOKENS: LazyLock<Family<AccessTokenLabels, Counter>> = LazyLock::new(|| {
    verimail_server::metrics::register("access_tokens_signed", "Access tokens signed", Family::default())
});

/// The outcomes of a verification, by `method`.
const VERIFICATION_OUTCOMES: [&str; 8] =
    ["verified", "already_verified", "expired", "invalid", "locked", "revoked", "account_deleted", "error"];

/// Registers the families with every series at 0 (at build): `/metrics` shows them before the
/// first call, and a rule's `increase()` sees the first one.
pub fn register() {
    for method in ["link", "code"] {
        for outcome in VERIFICATION_OUTCOMES {
            let _ = VERIFICATIONS.get_or_create(&VerificationLabels { method, outcome });
        }
    }
    for email_verified in [true, false] {
        let _ = ACCESS_TOKENS.get_or_create(&AccessTokenLabels { email_verified });
    }
}

pub fn access_token_signed(email_verified: bool) {
    ACCESS_TOKENS.get_or_create(&AccessTokenLabels { email_verified }).inc();
}

pub fn verification(method: &'static str, outcome: &'static str) {
    VERIFICATIONS.get_or_create(&VerificationLabels { method, outcome }).inc();
}

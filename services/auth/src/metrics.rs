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

/// Registers the families (at build, so `/metrics` shows them before the first call).
pub fn register() {
    LazyLock::force(&VERIFICATIONS);
    LazyLock::force(&ACCESS_TOKENS);
}

pub fn access_token_signed(email_verified: bool) {
    ACCESS_TOKENS.get_or_create(&AccessTokenLabels { email_verified }).inc();
}

pub fn verification(method: &'static str, outcome: &'static str) {
    VERIFICATIONS.get_or_create(&VerificationLabels { method, outcome }).inc();
}

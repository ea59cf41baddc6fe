//! email-service's metric families, registered when the service is built.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EmailLabels {
    pub kind: String,
    pub outcome: &'static str,
}

/// `outcome` sent, failed (rejected for good), retrying or parked.
static EMAILS: LazyLock<Family<EmailLabels, Counter>> = LazyLock::new(|| {
    verimail_server::metrics::register("emails", "Email delivery attempts, by kind and outcome", Family::default())
});

/// Registers the families (at build, so `/metrics` shows them before the first delivery).
pub fn register() {
    LazyLock::force(&EMAILS);
}

pub fn email(kind: &str, outcome: &'static str) {
    EMAILS.get_or_create(&EmailLabels { kind: kind.to_owned(), outcome }).inc();
}

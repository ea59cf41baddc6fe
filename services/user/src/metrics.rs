//! user-service's metric families, registered when the service is built.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

pub struct Metrics {
    /// `outcome` new or existing (an enumeration-safe answer to a taken address).
    pub registrations: Family<OutcomeLabel, Counter>,
    /// `outcome` signed_in, wrong (password or address), not_verified, refused (too many
    /// failures from the client) or rehashed (signed in, and the hash upgraded).
    pub sign_ins: Family<OutcomeLabel, Counter>,
    pub password_hashes_in_flight: Gauge,
    /// `reason` expired (the sweep) or requested (DeleteUser).
    pub accounts_deleted: Family<ReasonLabel, Counter>,
    /// `outcome` requested, completed, cancelled or undone.
    pub email_changes: Family<OutcomeLabel, Counter>,
    /// `reason`: signed_out, refresh_token_reused, password_changed, account_deleted,
    /// email_changed, operator, expired, reregistered.
    pub sessions_ended: Family<ReasonLabel, Counter>,
    /// `outcome` rotated, unknown, reused (a retired token: its session ended) or ended.
    pub refreshes: Family<OutcomeLabel, Counter>,
    /// `outcome` changed, reset_requested (for an address with an account) or reset.
    pub passwords: Family<OutcomeLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    registrations: verimail_server::metrics::register(
        "registrations",
        "RegisterUser calls that succeeded, by outcome",
        Family::default(),
    ),
    sign_ins: verimail_server::metrics::register("sign_ins", "SignIn calls, by outcome", Family::default()),
    password_hashes_in_flight: verimail_server::metrics::register(
        "password_hashes_in_flight",
        "argon2id hashes being computed now",
        Gauge::default(),
    ),
    accounts_deleted: verimail_server::metrics::register(
        "accounts_deleted",
        "Accounts deleted, by reason: expired (never verified in time) or requested (DeleteUser)",
        Family::default(),
    ),
    email_changes: verimail_server::metrics::register(
        "email_changes",
        "Changes of address, by outcome: requested, completed, cancelled, undone",
        Family::default(),
    ),
    sessions_ended: verimail_server::metrics::register(
        "sessions_ended",
        "Sessions ended (their access tokens announced revoked), by reason",
        Family::default(),
    ),
    refreshes: verimail_server::metrics::register(
        "session_refreshes",
        "RefreshSession calls, by outcome: rotated, unknown, reused, ended",
        Family::default(),
    ),
    passwords: verimail_server::metrics::register(
        "passwords",
        "Password changes and resets, by outcome: changed, reset_requested, reset",
        Family::default(),
    ),
});

pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Registers the families with every series at 0 (at build): `/metrics` shows them before the
/// first call, and a rule's `increase()` sees the first one.
pub fn register() {
    let m = metrics();
    let outcomes = |family: &Family<OutcomeLabel, Counter>, outcomes: &[&'static str]| {
        for outcome in outcomes {
            let _ = family.get_or_create(&OutcomeLabel { outcome });
        }
    };
    outcomes(&m.registrations, &["new", "replaced", "existing"]);
    outcomes(&m.sign_ins, &["signed_in", "wrong", "not_verified", "refused", "rehashed"]);
    outcomes(&m.email_changes, &["requested", "completed", "cancelled", "undone"]);
    outcomes(&m.refreshes, &["rotated", "unknown", "reused", "ended"]);
    outcomes(&m.passwords, &["changed", "reset_requested", "reset"]);
    for reason in ["expired", "requested"] {
        let _ = m.accounts_deleted.get_or_create(&ReasonLabel { reason });
    }
    for reason in [
        "signed_out",
        "refresh_token_reused",
        "password_changed",
        "account_deleted",
        "email_changed",
        "operator",
        "expired",
        "reregistered",
    ] {
        let _ = m.sessions_ended.get_or_create(&ReasonLabel { reason });
    }
}

/// A registration that succeeded, `outcome` new or existing.
pub fn registered(outcome: &'static str) {
    metrics().registrations.get_or_create(&OutcomeLabel { outcome }).inc();
}

/// A SignIn call, by `outcome`.
pub fn sign_in(outcome: &'static str) {
    metrics().sign_ins.get_or_create(&OutcomeLabel { outcome }).inc();
}

/// `count` accounts deleted for `reason`.
pub fn deleted(reason: verimail_events::erasure::Reason, count: usize) {
    let label = ReasonLabel { reason: reason.as_str() };
    metrics().accounts_deleted.get_or_create(&label).inc_by(count as u64);
}

/// A change of address, by `outcome`.
pub fn email_change(outcome: &'static str) {
    metrics().email_changes.get_or_create(&OutcomeLabel { outcome }).inc();
}

/// `count` sessions ended for `reason`.
pub fn sessions_ended(reason: &'static str, count: usize) {
    metrics().sessions_ended.get_or_create(&ReasonLabel { reason }).inc_by(count as u64);
}

/// A RefreshSession call, by `outcome`.
pub fn refreshed(outcome: &'static str) {
    metrics().refreshes.get_or_create(&OutcomeLabel { outcome }).inc();
}

/// A password change or reset step, by `outcome`.
pub fn password(outcome: &'static str) {
    metrics().passwords.get_or_create(&OutcomeLabel { outcome }).inc();
}

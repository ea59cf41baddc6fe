//! email-service's metric families, registered when the service is built.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::LazyLock;
use verimail_proto::subjects;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EmailLabels {
    pub kind: String,
    pub outcome: &'static str,
}

/// `outcome` sent, failed (rejected for good), retrying or parked.
static EMAILS: LazyLock<Family<EmailLabels, Counter>> = LazyLock::new(|| {
    verimail_server::metrics::register("emails", "Email delivery attempts, by kind and outcome", Family::default())
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub why: &'static str,
}

/// Messages that came back to a bounce address, by `class` (hard, soft, complaint,
/// auto_reply, delivered, unrecognized).
static BOUNCES: LazyLock<Family<ClassLabels, Counter>> = LazyLock::new(|| {
    verimail_server::metrics::register("bounces", "Messages received at bounce addresses, by class", Family::default())
});

/// What the bounce listener refused, by `why` (not_our_domain, unknown_address, bad_tag,
/// too_big, too_many_connections, too_many_from_peer, too_many_messages).
static INBOUND_REFUSED: LazyLock<Family<RefusedLabels, Counter>> = LazyLock::new(|| {
    verimail_server::metrics::register(
        "bounce_listener_refusals",
        "Recipients, messages and connections the bounce listener refused, by reason",
        Family::default(),
    )
});

/// Addresses on the suppression list now.
static SUPPRESSED: LazyLock<Gauge> = LazyLock::new(|| {
    verimail_server::metrics::register("suppressed_addresses", "Addresses on the suppression list", Gauge::default())
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub endpoint: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

/// Webhook attempts by endpoint (its id: the endpoints an operator registered) and `outcome`:
/// delivered, failed (another attempt follows), parked.
static WEBHOOK_ATTEMPTS: LazyLock<Family<WebhookLabels, Counter>> = LazyLock::new(|| {
    verimail_server::metrics::register(
        "webhook_attempts",
        "Webhook attempts, by endpoint and outcome",
        Family::default(),
    )
});

/// How long endpoints take to answer.
static WEBHOOK_DURATION: LazyLock<verimail_server::metrics::Histograms<EndpointLabel>> = LazyLock::new(|| {
    verimail_server::metrics::register(
        "webhook_attempt_duration_seconds",
        "Time from a webhook attempt's start to its answer, by endpoint",
        verimail_server::metrics::latency_histograms(),
    )
});

/// The age of the oldest delivery an endpoint still owes (0 when it owes none): what an
/// operator alerts on.
static WEBHOOK_BACKLOG_AGE: LazyLock<Family<EndpointLabel, Gauge<f64, std::sync::atomic::AtomicU64>>> =
    LazyLock::new(|| {
        verimail_server::metrics::register(
            "webhook_backlog_age_seconds",
            "Age of the oldest webhook delivery pending for each endpoint",
            Family::default(),
        )
    });

pub fn webhook_attempt(endpoint: &str, outcome: &'static str, took: std::time::Duration) {
    WEBHOOK_ATTEMPTS.get_or_create(&WebhookLabels { endpoint: endpoint.to_owned(), outcome }).inc();
    WEBHOOK_DURATION.get_or_create(&EndpointLabel { endpoint: endpoint.to_owned() }).observe(took.as_secs_f64());
}

/// An endpoint's series at 0, when its worker starts: shown before its first attempt, and a
/// rule's `increase()` sees the first parked delivery.
pub fn webhook_endpoint(endpoint: &str) {
    for outcome in ["delivered", "failed", "parked"] {
        let _ = WEBHOOK_ATTEMPTS.get_or_create(&WebhookLabels { endpoint: endpoint.to_owned(), outcome });
    }
    let _ = WEBHOOK_BACKLOG_AGE.get_or_create(&EndpointLabel { endpoint: endpoint.to_owned() });
}

pub fn webhook_backlog(endpoint: &str, age: std::time::Duration) {
    WEBHOOK_BACKLOG_AGE.get_or_create(&EndpointLabel { endpoint: endpoint.to_owned() }).set(age.as_secs_f64());
}

/// Forgets a removed endpoint's series.
pub fn webhook_endpoint_removed(endpoint: &str) {
    let label = EndpointLabel { endpoint: endpoint.to_owned() };
    WEBHOOK_BACKLOG_AGE.remove(&label);
    WEBHOOK_DURATION.remove(&label);
    for outcome in ["delivered", "failed", "parked"] {
        WEBHOOK_ATTEMPTS.remove(&WebhookLabels { endpoint: endpoint.to_owned(), outcome });
    }
}

/// The events that ask for an email (what the courier's consumer decodes): each email's
/// `kind`, started at 0 with every outcome.
const EMAIL_KINDS: [&str; 7] = [
    subjects::USERS_REGISTERED,
    subjects::USERS_VERIFICATION_REQUESTED,
    subjects::USERS_SIGNUP_ATTEMPTED,
    subjects::USERS_EMAIL_CHANGE_REQUESTED,
    subjects::USERS_EMAIL_CHANGE_NOTICE,
    subjects::USERS_PASSWORD_RESET_REQUESTED,
    subjects::USERS_PASSWORD_CHANGED,
];

/// Registers the families (at build, so `/metrics` shows them before the first delivery), the
/// series of known labels at 0.
pub fn register() {
    LazyLock::force(&WEBHOOK_ATTEMPTS);
    LazyLock::force(&WEBHOOK_DURATION);
    LazyLock::force(&WEBHOOK_BACKLOG_AGE);
    for kind in EMAIL_KINDS {
        for outcome in ["sent", "failed", "retrying", "parked", "suppressed"] {
            let _ = EMAILS.get_or_create(&EmailLabels { kind: kind.to_owned(), outcome });
        }
    }
    for class in ["hard", "soft", "complaint", "auto_reply", "delivered", "unrecognized"] {
        let _ = BOUNCES.get_or_create(&ClassLabels { class: class.to_owned() });
    }
    LazyLock::force(&INBOUND_REFUSED);
    LazyLock::force(&SUPPRESSED);
}

pub fn bounce(class: &str) {
    BOUNCES.get_or_create(&ClassLabels { class: class.to_owned() }).inc();
}

pub fn inbound_refused(why: &'static str) {
    INBOUND_REFUSED.get_or_create(&RefusedLabels { why }).inc();
}

/// Sets the suppression list's size (after a change, and at start).
pub fn suppressed(count: u64) {
    SUPPRESSED.set(i64::try_from(count).unwrap_or(i64::MAX));
}

pub fn email(kind: &str, outcome: &'static str) {
    EMAILS.get_or_create(&EmailLabels { kind: kind.to_owned(), outcome }).inc();
}

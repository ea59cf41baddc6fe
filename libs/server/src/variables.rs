//! Every variable a Verimail part reads, whichever part: what lets `--check-config` tell a
//! misspelt variable of ours from the rest of a machine's environment (a shell's `USER`, a
//! pod's `KUBERNETES_SERVICE_HOST`, a base image's `PYTHON_VERSION`), and accept an environment
//! file shared by every part. docs/configuration.md documents each; the system test
//! `compose.rs` checks that every part reads only names listed here.

/// The variables of every part, in the order of docs/configuration.md.
pub const ALL: &[&str] = &[
    "VERIMAIL_ENV",
    "NATS_URL",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_CREDS",
    "NATS_ALLOW_UNAUTHENTICATED",
    "NATS_TLS_CA",
    "NATS_TLS_CERT",
    "NATS_TLS_KEY",
    "NATS_TLS_REQUIRED",
    "NATS_STREAM_REPLICAS",
    "NATS_EVENT_RETENTION_SECONDS",
    "DATABASE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "USER_GRPC_ADDR",
    "AUTH_GRPC_ADDR",
    "EMAIL_GRPC_ADDR",
    "GATEWAY_HTTP_ADDR",
    "METRICS_ADDR",
    "GATEWAY_SERVICE_TOKEN",
    "EMAIL_SERVICE_TOKEN",
    "USER_SERVICE_TOKEN",
    "SERVICE_CREDENTIALS_FILE",
    "APP_SERVICE_TOKEN",
    "APP_SERVICE_RATE",
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS",
    "WEBHOOK_TIMEOUT_SECONDS",
    "WEBHOOK_RETRY_SCHEDULE",
    "ADMIN_TOKEN",
    "GRPC_TLS_CERT",
    "GRPC_TLS_KEY",
    "GRPC_TLS_CA",
    "AUTH_TOKEN_KEYS",
    "ALLOW_GENERATED_TOKEN_KEY",
    "AUTH_SIGNING_KEYS",
    "ALLOW_GENERATED_SIGNING_KEY",
    "ACCESS_TOKEN_TTL_SECONDS",
    "ACCESS_TOKEN_AUDIENCE",
    "VERIFICATION_TOKEN_TTL_SECONDS",
    "VERIFICATION_CODE_TTL_SECONDS",
    "PASSWORD_HASH_MEMORY_KIB",
    "PASSWORD_HASH_ITERATIONS",
    "PASSWORD_HASH_PARALLELISM",
    "PASSWORD_HASH_CONCURRENCY",
    "ENUMERATION_SAFE_REGISTRATION",
    "RATE_LIMIT_REGISTER_PER_CLIENT",
    "RATE_LIMIT_REGISTER_PER_EMAIL",
    "RATE_LIMIT_RESEND_PER_CLIENT",
    "RATE_LIMIT_RESEND_PER_EMAIL",
    "RATE_LIMIT_RESEND_PER_EMAIL_DAILY",
    "RATE_LIMIT_EMAIL_CHANGE_PER_USER",
    "PASSWORD_RESET_TTL_SECONDS",
    "EMAIL_CHANGE_UNDO_TTL_SECONDS",
    "UNVERIFIED_ACCOUNT_TTL_SECONDS",
    "EMAIL_CHECK_DNS",
    "EMAIL_DNS_SERVER",
    "SIGN_IN_REQUIRES_VERIFIED",
    "SESSION_IDLE_TTL_SECONDS",
    "SESSION_MAX_TTL_SECONDS",
    "REAUTH_WINDOW_SECONDS",
    "RATE_LIMIT_SIGN_IN_PER_CLIENT",
    "SIGN_IN_MAX_FAILURES",
    "SIGN_IN_FAILURES_MAX_KEYS",
    "RATE_LIMIT_VERIFY_PER_CLIENT",
    "RATE_LIMIT_CODE_PER_EMAIL",
    "CODE_MAX_WRONG_TRIES",
    "RATE_LIMIT_GATEWAY_PER_CLIENT",
    "RATE_LIMIT_STORE",
    "APP_URL",
    "GATEWAY_TEMPLATES_DIR",
    "BRAND_NAME",
    "BRAND_COLOR",
    "BRAND_LOGO_URL",
    "TRUSTED_PROXIES",
    "GATEWAY_HEADER_TIMEOUT_SECONDS",
    "GATEWAY_REQUEST_TIMEOUT_SECONDS",
    "GATEWAY_MAX_CONNECTIONS",
    "OUTBOX_RETENTION_SECONDS",
    "TOMBSTONE_RETENTION_SECONDS",
    "VERIFICATION_RETENTION_SECONDS",
    "SESSION_RETENTION_SECONDS",
    "EMAIL_CHANGE_RETENTION_SECONDS",
    "DELIVERY_RETENTION_SECONDS",
    "WEBHOOK_DELIVERY_RETENTION_SECONDS",
    "SMTP_URL",
    "SMTP_ALLOW_PLAINTEXT",
    "MAIL_DIR",
    "MAILBOX_HTTP_ADDR",
    "MAIL_FROM",
    "EMAIL_TEMPLATES_DIR",
    "DEFAULT_LOCALE",
    "PUBLIC_BASE_URL",
    "EMAIL_MAX_ATTEMPTS",
    "EMAIL_RETRY_BACKOFF_SECONDS",
    "EMAIL_SEND_TIMEOUT_SECONDS",
    "SMTP_CHECK_INTERVAL_SECONDS",
    "DELIVERY_HASH_KEY",
    "DKIM_DOMAIN",
    "DKIM_SELECTOR",
    "DKIM_PRIVATE_KEY_FILE",
    "BOUNCE_DOMAIN",
    "BOUNCE_ADDRESS_FORMAT",
    "BOUNCE_SMTP_ADDR",
    "BOUNCE_MAX_MESSAGE_BYTES",
    "BOUNCE_MAX_CONNECTIONS",
    "BOUNCE_MAX_CONNECTIONS_PER_PEER",
    "BOUNCE_RATE_PER_PEER",
    "BOUNCE_TLS_CERT_FILE",
    "BOUNCE_TLS_KEY_FILE",
    "BOUNCE_SOFT_LIMIT",
    "BOUNCE_SOFT_WINDOW_SECONDS",
    "EMAIL_INSTANCE_ID",
    "RUST_LOG",
    "LOG_FORMAT",
    "LOG_EMAIL_ADDRESSES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

/// The beginnings of our names distinctive enough that a variable starting so is ours (or
/// meant to be): a misspelling, or a setting that does not exist.
const FAMILIES: &[&str] = &[
    "VERIMAIL_",
    "NATS_",
    "DATABASE_",
    "SMTP_",
    "DKIM_",
    "BOUNCE_",
    "WEBHOOK_",
    "RATE_LIMIT_",
    "SESSION_",
    "ACCESS_TOKEN_",
    "AUTH_",
    "GATEWAY_",
    "PASSWORD_HASH_",
    "VERIFICATION_",
    "SIGN_IN_",
    "BRAND_",
    "OUTBOX_",
    "EMAIL_",
    "GRPC_TLS_",
    "APP_SERVICE_",
];

/// What `--check-config` makes of a variable set that this part does not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Unread {
    /// Another part reads it: fine in an environment shared by every part.
    OtherPart,
    /// Looks like ours but is not: a misspelling (the name probably meant, if one is close).
    Misspelt(Option<&'static str>),
    /// Not ours at all (the shell's, the platform's, the image's): ignored.
    NotOurs,
}

/// Whether `name`, set but not read by this part (which reads `read`), is another part's, a
/// misspelling of ours, or the rest of the world's.
pub fn classify(name: &str, read: &[&'static str]) -> Unread {
    if ALL.contains(&name) {
        return Unread::OtherPart;
    }
    // Kubernetes sets <SERVICE>_SERVICE_HOST, <SERVICE>_SERVICE_PORT[_<PORT NAME>] and
    // <SERVICE>_PORT[_<N>_<PROTOCOL>[_…]] for every Service of the namespace (a Service named
    // nats or email-service included); none of ours is named so.
    if name.contains("_SERVICE_HOST")
        || name.contains("_SERVICE_PORT")
        || name.ends_with("_PORT")
        || name.contains("_PORT_")
    {
        return Unread::NotOurs;
    }
    let nearest = |among: &[&'static str]| {
        among.iter().map(|known| (strsim::osa_distance(name, known), *known)).min_by_key(|(edits, _)| *edits)
    };
    // A few edits from a name: this part's first, then any part's.
    let close = |edits: usize| edits <= 1 || (edits <= 2 && name.len() >= 10) || (edits <= 3 && name.len() >= 20);
    for among in [read, ALL] {
        if let Some((edits, known)) = nearest(among)
            && close(edits)
        {
            return Unread::Misspelt(Some(known));
        }
    }
    if FAMILIES.iter().any(|family| name.starts_with(family)) {
        let family: Vec<&'static str> = ALL
            .iter()
            .copied()
            .filter(|known| FAMILIES.iter().any(|f| name.starts_with(f) && known.starts_with(f)))
            .collect();
        return Unread::Misspelt(nearest(&family).map(|(_, known)| known));
    }
    Unread::NotOurs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspellings_are_caught_and_the_rest_of_the_world_is_not() {
        let read = ["SMTP_URL", "DATABASE_URL", "NATS_URL", "EMAIL_GRPC_ADDR", "EMAIL_MAX_ATTEMPTS"];
        assert_eq!(classify("SMTP_URLL", &read), Unread::Misspelt(Some("SMTP_URL")));
        assert_eq!(classify("DATABSE_URL", &read), Unread::Misspelt(Some("DATABASE_URL")));
        assert_eq!(
            classify("RATE_LIMIT_REGISTER_PER_CLEINT", &read),
            Unread::Misspelt(Some("RATE_LIMIT_REGISTER_PER_CLIENT"))
        );
        for invented in ["NATS_SERVERS", "WEBHOOK_SECRET", "VERIMAIL_MODE", "BOUNCE_ADDRESS"] {
            assert!(
                matches!(classify(invented, &read), Unread::Misspelt(Some(_))),
                "{invented}: our prefix, no such setting"
            );
        }
        // Another part's, in an environment file shared by every part.
        assert_eq!(classify("USER_GRPC_ADDR", &read), Unread::OtherPart);
        assert_eq!(classify("GATEWAY_SERVICE_TOKEN", &read), Unread::OtherPart);
        // The shell's, the platform's, a base image's.
        for world in [
            "SHELL",
            "USER",
            "OLDPWD",
            "LOGNAME",
            "MAIL",
            "EDITOR",
            "SSH_AUTH_SOCK",
            "DISPLAY",
            "XDG_RUNTIME_DIR",
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "KUBERNETES_SERVICE_PORT_HTTPS",
            "KUBERNETES_PORT",
            "KUBERNETES_PORT_443_TCP",
            "KUBERNETES_PORT_443_TCP_ADDR",
            "KUBERNETES_PORT_443_TCP_PROTO",
            "NATS_SERVICE_HOST",
            "NATS_SERVICE_PORT_CLIENT",
            "NATS_PORT_4222_TCP_ADDR",
            "EMAIL_SERVICE_SERVICE_HOST",
            "EMAIL_SERVICE_PORT",
            "USER_SERVICE_PORT_50051_TCP",
            "PYTHON_VERSION",
            "RUSTUP_HOME",
            "CARGO_HOME",
            "RUST_VERSION",
            "SSL_CERT_DIR",
            "APP_HOME",
            "APP_VERSION",
            "HTTP_PROXY",
            "NO_PROXY",
            "TZ",
            "container",
        ] {
            assert_eq!(classify(world, &read), Unread::NotOurs, "{world}");
        }
    }
}

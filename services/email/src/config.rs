use lettre::message::Mailbox;
use std::path::PathBuf;
use std::time::Duration;
use verimail_mail::MailTarget;
use verimail_server::config::{self, ConfigError, SecretUrl, Vars};
use verimail_startup::backbone::{BackboneConfig, Defaults};

/// Where email-service listens and keeps its data unless told otherwise.
pub const DEFAULTS: Defaults = Defaults {
    part: "email",
    grpc: ("EMAIL_GRPC_ADDR", "127.0.0.1:50053"),
    metrics_addr: "127.0.0.1:9103",
    database_file: "email.db",
};

/// email-service's configuration, from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses, TLS, the database and NATS: see [`BackboneConfig`].
    pub backbone: BackboneConfig,
    /// `EMAIL_SERVICE_TOKEN`: presented to auth-service, which issues tokens to it alone.
    pub credential: verimail_server::internal::ServiceCredential,
    /// `ADMIN_TOKEN`: what ops RPCs require; see [`AdminCredential`](verimail_server::admin::AdminCredential).
    pub admin: verimail_server::admin::AdminCredential,
    /// `AUTH_GRPC_ADDR`: where auth-service issues tokens.
    pub auth_addr: String,
    /// `SMTP_URL` (a lettre URL such as `smtp://127.0.0.1:2525`); without it, emails are
    /// written as .eml files under `MAIL_DIR` (default `data/mail`). In production it must
    /// use TLS that cannot be stripped, unless `SMTP_ALLOW_PLAINTEXT=true` (see
    /// [`verimail_mail::check_smtp_url`]). `Debug` hides its password.
    pub mail_target: MailTarget,
    /// `MAIL_FROM`
    pub from: Mailbox,
    /// `PUBLIC_BASE_URL`: the gateway's origin as users reach it, put into links.
    pub public_base_url: String,
    /// `EMAIL_MAX_ATTEMPTS`: deliveries of one event before it is parked.
    pub max_attempts: i64,
    /// `EMAIL_RETRY_BACKOFF_SECONDS`: comma-separated delays between attempts, in seconds
    /// (fractions allowed: `0.5`).
    pub retry_backoff: Vec<Duration>,
    /// `EMAIL_SEND_TIMEOUT_SECONDS`: the bound on each call an attempt makes (the token from
    /// auth-service, the SMTP exchange). JetStream's ack wait is sized from it.
    pub send_timeout: Duration,
    /// `SMTP_CHECK_INTERVAL_SECONDS`: how often health probes the SMTP server (NOOP), however
    /// often health is asked.
    pub smtp_check_interval: Duration,
    /// `EMAIL_INSTANCE_ID`: names this instance in the deliveries it handles (default: the
    /// host name and process id).
    pub instance: String,
    /// `DELIVERY_HASH_KEY` (at least 32 characters; required in production, a key of the
    /// process in development): keys the hash that replaces a deleted user's address in their
    /// deliveries.
    pub address_key: crate::address_key::AddressKey,
    /// `DKIM_DOMAIN`, `DKIM_SELECTOR`, `DKIM_PRIVATE_KEY_FILE`: every message signed (see
    /// [`verimail_mail::dkim`]); none of them, unsigned.
    pub dkim: Option<std::sync::Arc<verimail_mail::dkim::Dkim>>,
    /// `BOUNCE_DOMAIN` and `BOUNCE_ADDRESS_FORMAT`: each message's envelope sender is its
    /// delivery's bounce address (see [`verimail_mail::bounce::address`]); none, MAIL_FROM's address.
    pub bounces: Option<verimail_mail::bounce::address::BounceAddresses>,
    /// `BOUNCE_SMTP_ADDR` and the listener's bounds and TLS (see
    /// [`crate::bounce::listener::ListenerConfig`]); none, no listener.
    pub bounce_listener: Option<crate::bounce::listener::ListenerConfig>,
    /// `BOUNCE_SOFT_LIMIT` soft bounces within `BOUNCE_SOFT_WINDOW_SECONDS` suppress an address.
    pub soft_limit: crate::suppression::SoftLimit,
    /// The team's services by name (`SERVICE_CREDENTIALS_FILE`): those granted `webhooks` run
    /// the webhook endpoints beside operators.
    pub callers: std::sync::Arc<verimail_server::callers::Callers>,
    /// `WEBHOOK_*`: see [`WebhookConfig`](crate::webhooks::WebhookConfig).
    pub webhooks: crate::webhooks::WebhookConfig,
    /// `OUTBOX_RETENTION_SECONDS` and `TOMBSTONE_RETENTION_SECONDS`.
    pub retention: verimail_events::retention::Common,
    /// `DELIVERY_RETENTION_SECONDS` (default 30 days; in production at least the streams'
    /// retention): deliveries that are over, and bounces, are deleted this long after their last
    /// change.
    pub delivery_retention: std::time::Duration,
    /// `WEBHOOK_DELIVERY_RETENTION_SECONDS` (default 30 days; in production at least the
    /// streams' retention): delivered and parked webhook deliveries, with their attempts.
    pub webhook_delivery_retention: std::time::Duration,
    /// `MAILBOX_HTTP_ADDR`: the development mailbox (see [`crate::mailbox`]); none in production
    /// or with `SMTP_URL`.
    pub mailbox_addr: Option<String>,
    /// The emails' templates: built in, overridden file by file from `EMAIL_TEMPLATES_DIR`,
    /// with `DEFAULT_LOCALE` (default `en`) for users without a language they exist in. Every
    /// one was rendered with sample data while the configuration was read.
    pub templates: std::sync::Arc<verimail_mail::Templates>,
}

impl Config {
    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        let production = vars.is_production();
        let allow_plaintext = vars.parse("SMTP_ALLOW_PLAINTEXT", false)?;
        let mail_target = match vars.var("SMTP_URL") {
            Some(url) => {
                let security = verimail_mail::check_smtp_url(&url, allow_plaintext || !production)
                    .map_err(|e| ConfigError::new("SMTP_URL", e))?;
                let plain =
                    matches!(security, verimail_mail::SmtpSecurity::Plain | verimail_mail::SmtpSecurity::Opportunistic);
                if production && plain {
                    tracing::warn!(smtp = %verimail_server::config::redact_url(&url), "SMTP_ALLOW_PLAINTEXT: mail leaves in plain text");
                }
                MailTarget::Smtp(SecretUrl::new(url))
            }
            None => {
                if production {
                    return Err(ConfigError::new("SMTP_URL", "is required in production"));
                }
                MailTarget::Files(PathBuf::from(vars.string("MAIL_DIR", "data/mail")))
            }
        };
        let mailbox_addr =
            crate::mailbox::addr_from_vars(vars, production, matches!(mail_target, MailTarget::Files(_)))?;
        let from = verimail_mail::sender::mail_from(vars)?;
        let dkim = verimail_mail::dkim::Dkim::from_vars(vars, from.email.domain())?.map(std::sync::Arc::new);
        let public_base_url = vars.string("PUBLIC_BASE_URL", "http://127.0.0.1:8080");
        if !(public_base_url.starts_with("http://") || public_base_url.starts_with("https://")) {
            return Err(ConfigError::new("PUBLIC_BASE_URL", "must start with http:// or https://"));
        }
        let retry_backoff = match vars.var("EMAIL_RETRY_BACKOFF_SECONDS") {
            None => [1, 5, 30, 120, 600].map(Duration::from_secs).to_vec(),
            Some(list) => list
                .split(',')
                .map(|s| match s.trim().parse::<f64>() {
                    Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
                    _ => Err(format!("{s:?} is not a delay in seconds (above 0, at most 86400; fractions allowed)")),
                })
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError::new("EMAIL_RETRY_BACKOFF_SECONDS", e))?,
        };
        let max_attempts = vars.parse("EMAIL_MAX_ATTEMPTS", 6i64)?;
        if max_attempts < 1 {
            return Err(ConfigError::new("EMAIL_MAX_ATTEMPTS", "must be at least 1"));
        }
        let credential =
            verimail_server::internal::ServiceCredential::from_vars(vars, verimail_server::internal::EMAIL_TOKEN)?;
        let address_key = address_key(vars, production)?;
        let templates = templates(vars)?;
        let bounces = verimail_mail::bounce::address::BounceAddresses::from_vars(vars, address_key.secret())?;
        let callers = verimail_server::callers::Callers::from_vars(vars, &[&credential])?;
        if let Some(name) = vars.var("ADMIN_TOKEN").as_deref().and_then(|admin| callers.holder_of(admin)) {
            return Err(ConfigError::new(
                "ADMIN_TOKEN",
                format!("is the secret of the service {name}: operators and services hold separate credentials"),
            ));
        }
        let callers = std::sync::Arc::new(callers);
        let backbone = BackboneConfig::from_vars(vars, DEFAULTS)?;
        let streams = &backbone.streams;
        Ok(Config {
            retention: verimail_events::retention::Common::from_vars(vars, streams)?,
            delivery_retention: verimail_events::retention::at_least_events(
                vars,
                streams,
                "DELIVERY_RETENTION_SECONDS",
                verimail_events::retention::DEFAULT,
            )?,
            webhook_delivery_retention: verimail_events::retention::at_least_events(
                vars,
                streams,
                "WEBHOOK_DELIVERY_RETENTION_SECONDS",
                verimail_events::retention::DEFAULT,
            )?,
            backbone,
            admin: verimail_server::admin::AdminCredential::from_vars(vars, &[&credential])?,
            credential,
            auth_addr: vars.string("AUTH_GRPC_ADDR", "127.0.0.1:50052"),
            mail_target,
            from,
            public_base_url,
            max_attempts,
            retry_backoff,
            send_timeout: vars.seconds("EMAIL_SEND_TIMEOUT_SECONDS", Duration::from_secs(10))?,
            smtp_check_interval: vars.seconds("SMTP_CHECK_INTERVAL_SECONDS", Duration::from_secs(15))?,
            instance: vars.var("EMAIL_INSTANCE_ID").unwrap_or_else(|| config::default_instance_id(vars)),
            bounce_listener: crate::bounce::listener::ListenerConfig::from_vars(vars, bounces.as_ref())?,
            bounces,
            soft_limit: soft_limit(vars)?,
            webhooks: crate::webhooks::WebhookConfig::from_vars(vars)?,
            callers,
            mailbox_addr,
            address_key,
            dkim,
            templates,
        })
    }
}

/// `EMAIL_TEMPLATES_DIR` and `DEFAULT_LOCALE` (a language every email exists in): the
/// templates, each rendered with sample data.
fn templates(vars: &Vars) -> Result<std::sync::Arc<verimail_mail::Templates>, ConfigError> {
    use verimail_mail::TemplateError;
    const LOCALE: &str = "DEFAULT_LOCALE";
    const DIR: &str = "EMAIL_TEMPLATES_DIR";
    let locale = verimail_server::locale::parse(&vars.string(LOCALE, "en"))
        .map_err(|e| ConfigError::new(LOCALE, e))?
        .ok_or_else(|| ConfigError::new(LOCALE, "must not be empty"))?;
    let dir = vars.var(DIR).map(PathBuf::from);
    match verimail_mail::Templates::load(&locale, dir.as_deref()) {
        Ok(templates) => Ok(std::sync::Arc::new(templates)),
        Err(TemplateError::DefaultLocale(e)) => Err(ConfigError::new(LOCALE, e)),
        Err(TemplateError::Template(e)) => Err(ConfigError::new(DIR, e)),
    }
}

/// `BOUNCE_SOFT_LIMIT` (default 3) and `BOUNCE_SOFT_WINDOW_SECONDS` (default 7 days).
fn soft_limit(vars: &Vars) -> Result<crate::suppression::SoftLimit, ConfigError> {
    let count = vars.parse("BOUNCE_SOFT_LIMIT", 3u64)?;
    if count == 0 {
        return Err(ConfigError::new("BOUNCE_SOFT_LIMIT", "must be at least 1"));
    }
    let window = vars.seconds("BOUNCE_SOFT_WINDOW_SECONDS", Duration::from_secs(7 * 24 * 3600))?;
    Ok(crate::suppression::SoftLimit { count, window })
}

/// `DELIVERY_HASH_KEY`: see [`Config::address_key`].
fn address_key(vars: &Vars, production: bool) -> Result<crate::address_key::AddressKey, ConfigError> {
    const NAME: &str = "DELIVERY_HASH_KEY";
    match vars.var(NAME) {
        Some(secret) if secret.chars().count() >= 32 => Ok(crate::address_key::AddressKey::from_secret(&secret)),
        Some(_) => Err(ConfigError::new(NAME, "must be at least 32 characters (a random secret)")),
        None if production => Err(ConfigError::new(NAME, "is required in production (at least 32 random characters)")),
        None => Ok(crate::address_key::AddressKey::random()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verimail_mail::{SmtpSecurity, check_smtp_url};

    #[test]
    fn production_smtp_needs_tls_that_cannot_be_stripped() {
        assert_eq!(check_smtp_url("smtps://me:pw@mail.example.com", false), Ok(SmtpSecurity::ImplicitTls));
        assert_eq!(
            check_smtp_url("smtp://me:pw@mail.example.com:587?tls=required", false),
            Ok(SmtpSecurity::RequiredStartTls)
        );
        for url in ["smtp://mail.example.com", "smtp://me:pw@mail.example.com?tls=opportunistic", "smtp://127.0.0.1:25"]
        {
            let refused = check_smtp_url(url, false).unwrap_err();
            assert!(refused.contains("smtps://") && refused.contains("SMTP_ALLOW_PLAINTEXT"), "{url}: {refused}");
        }
        // Allowed by name: a relay on loopback (credentials or not), or one without credentials.
        assert_eq!(check_smtp_url("smtp://me:pw@127.0.0.1:25", true), Ok(SmtpSecurity::Plain));
        assert_eq!(check_smtp_url("smtp://localhost:25?tls=opportunistic", true), Ok(SmtpSecurity::Opportunistic));
        assert_eq!(check_smtp_url("smtp://mailpit:1025", true), Ok(SmtpSecurity::Plain));
        // Never AUTH in clear across the network.
        assert!(check_smtp_url("smtp://me:pw@mail.example.com", true).unwrap_err().contains("password"));
        assert!(check_smtp_url("smtp://me:pw@mail.example.com?tls=opportunistic", true).is_err());
        assert!(check_smtp_url("http://mail.example.com", true).is_err());
        assert!(check_smtp_url("smtp://mail.example.com?tls=maybe", true).is_err());
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let vars = Vars::from_pairs([
            ("VERIMAIL_ENV", "development"),
            ("EMAIL_SERVICE_TOKEN", "service-secret-0123456789"),
            ("ADMIN_TOKEN", "admin-secret-0123456789"),
            ("DATABASE_URL", "postgres://email:db-secret-42@db/email"),
            ("NATS_USER", "email-service"),
            ("NATS_PASSWORD", "nats-secret-42"),
            ("SMTP_URL", "smtps://mailer:smtp-secret-42@mail.example.com"),
            ("DELIVERY_HASH_KEY", "hash-secret-42-0123456789abcdefghijklmnop"),
        ]);
        let config = Config::from_vars(&vars).unwrap();
        let printed = format!("{config:?}");
        for secret in
            ["service-secret", "admin-secret", "db-secret-42", "smtp-secret-42", "nats-secret-42", "hash-secret"]
        {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("mail.example.com"), "the rest is still there: {printed}");
    }
}

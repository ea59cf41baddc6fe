//! Handing a message to SMTP (signed with DKIM, from its delivery's bounce address), or to
//! .eml files when no SMTP server is configured.

use crate::bounce::address::BounceAddresses;
use crate::dkim::Dkim;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use verimail_server::config::SecretUrl;

/// Where emails go: `SMTP_URL`, or files under a folder. Its `Debug` hides the URL's password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailTarget {
    Smtp(SecretUrl),
    Files(PathBuf),
}

/// How an `SMTP_URL` protects the session, as lettre reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte.
    ImplicitTls,
    /// `smtp://…?tls=required`: STARTTLS, and no session without it.
    RequiredStartTls,
    /// `smtp://…?tls=opportunistic`: STARTTLS if the server offers it, else plain text (an
    /// attacker on the path just removes the offer).
    Opportunistic,
    /// `smtp://` alone: plain text.
    Plain,
}

/// What production asks of `SMTP_URL`: TLS that cannot be stripped (implicit, or STARTTLS
/// required). `allow_plaintext` (`SMTP_ALLOW_PLAINTEXT=true`) lets a plain-text or
/// opportunistic session through only where no password can leak: to a relay on this
/// machine (loopback), or without credentials in the URL.
pub fn check_smtp_url(url: &str, allow_plaintext: bool) -> Result<SmtpSecurity, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("is not a URL: {e}"))?;
    let tls = parsed.query_pairs().find(|(key, _)| key == "tls").map(|(_, value)| value.into_owned());
    let security = match (parsed.scheme(), tls.as_deref()) {
        ("smtps", _) => SmtpSecurity::ImplicitTls,
        ("smtp", Some("required")) => SmtpSecurity::RequiredStartTls,
        ("smtp", Some("opportunistic")) => SmtpSecurity::Opportunistic,
        ("smtp", None) => SmtpSecurity::Plain,
        ("smtp", Some(other)) => return Err(format!("tls={other} is not one of required, opportunistic")),
        (scheme, _) => return Err(format!("{scheme}:// is not smtp:// or smtps://")),
    };
    if matches!(security, SmtpSecurity::ImplicitTls | SmtpSecurity::RequiredStartTls) {
        return Ok(security);
    }
    // smtp:// is not a scheme the URL standard knows, so its host comes as text.
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    };
    let credentials = !parsed.username().is_empty() || parsed.password().is_some();
    let why = "in production mail goes over TLS that cannot be stripped: use smtps:// or smtp://…?tls=required";
    match (allow_plaintext, loopback, credentials) {
        (false, _, _) => Err(format!(
            "{why} (SMTP_ALLOW_PLAINTEXT=true allows a plain-text relay on loopback, or one without credentials)"
        )),
        (true, false, true) => Err(format!(
            "{why}: a password would cross the network in clear, which SMTP_ALLOW_PLAINTEXT does not allow"
        )),
        (true, _, _) => Ok(security),
    }
}

/// Hands messages over: DKIM-signed when a key is configured, from the delivery's own bounce
/// address when a bounce domain is.
#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    dkim: Option<Arc<Dkim>>,
    bounces: Option<BounceAddresses>,
}

#[derive(Clone)]
enum Transport {
    /// Sends over a pool of connections; probes over a fresh one each time (`probe`).
    Smtp {
        send: AsyncSmtpTransport<Tokio1Executor>,
        probe: AsyncSmtpTransport<Tokio1Executor>,
    },
    Files(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

impl Mailer {
    /// Unsigned mail to `target`, from the message's own envelope; see [`Mailer::signing`]
    /// and [`Mailer::bouncing_to`].
    pub fn new(target: &MailTarget, timeout: Duration) -> Result<Mailer, String> {
        Ok(Mailer { transport: Transport::new(target, timeout)?, dkim: None, bounces: None })
    }

    /// Signs every message with `dkim` (none: unsigned).
    pub fn signing(self, dkim: Option<Arc<Dkim>>) -> Mailer {
        Mailer { dkim, ..self }
    }

    /// Sends every message from its delivery's bounce address (none: the message's own
    /// envelope sender, MAIL_FROM).
    pub fn bouncing_to(self, bounces: Option<BounceAddresses>) -> Mailer {
        Mailer { bounces, ..self }
    }

    /// Sends `message` for the delivery `delivery_id`.
    pub async fn send(&self, mut message: Message, delivery_id: &str) -> Result<(), SendError> {
        if let Some(dkim) = &self.dkim {
            dkim.sign(&mut message);
        }
        let mut envelope = message.envelope().clone();
        if let Some(sender) = self.bounces.as_ref().and_then(|bounces| bounces.for_delivery(delivery_id)) {
            envelope = lettre::address::Envelope::new(Some(sender), envelope.to().to_vec())
                .map_err(|e| SendError::Transient(format!("envelope: {e}")))?;
        }
        let raw = message.formatted();
        match &self.transport {
            Transport::Smtp { send, .. } => send.send_raw(&envelope, &raw).await.map(drop).map_err(|e| {
                // Only a 5xx reply is final; a refused connection, a timeout or a 4xx may pass.
                if !e.is_permanent() {
                    return SendError::Transient(e.to_string());
                }
                let code = e.status().map(|code| code.to_string());
                let message = e.to_string();
                let reason = crate::bounce::reason::of_refusal(code.as_deref(), &message);
                SendError::Rejected { message, recipient: reason.is_the_address() }
            }),
            Transport::Files(files, _) => {
                files.send_raw(&envelope, &raw).await.map(drop).map_err(|e| SendError::Transient(e.to_string()))
            }
        }
    }

    /// Whether mail can go out now: the SMTP server takes a new session and answers NOOP, or
    /// the mail folder is there.
    pub async fn check(&self) -> Result<(), String> {
        match &self.transport {
            Transport::Smtp { probe, .. } => match probe.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err("the SMTP server did not answer NOOP".into()),
                Err(e) => Err(format!("SMTP: {e}")),
            },
            Transport::Files(_, dir) => match tokio::fs::metadata(dir).await {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(format!("{} is not a folder", dir.display())),
                Err(e) => Err(format!("{}: {e}", dir.display())),
            },
        }
    }
}

impl Transport {
    fn new(target: &MailTarget, timeout: Duration) -> Result<Transport, String> {
        Ok(match target {
            MailTarget::Smtp(url) => {
                let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| format!("SMTP_URL: {e}"))?
                    // Well under the consumer's ack wait, so a hung server cannot make
                    // JetStream hand the same event to a second attempt meanwhile.
                    .timeout(Some(timeout));
                // A pool that keeps nothing: every probe connects, greets (TLS and AUTH as
                // the URL says) and sends NOOP, as a send would, rather than asking a pooled
                // connection that may outlive the server's will to take mail.
                let probe = builder.clone().pool_config(PoolConfig::new().max_size(0)).build();
                Transport::Smtp { send: builder.build(), probe }
            }
            MailTarget::Files(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("MAIL_DIR {}: {e}", dir.display()))?;
                Transport::Files(AsyncFileTransport::<Tokio1Executor>::new(dir), dir.clone())
            }
        })
    }
}

/// Why an email was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused it for good (SMTP 5xx): sending again would fail again.
    /// `recipient`: the refusal says the address cannot take mail (no such user or domain, by
    /// the bounce classifier's rule: `bounce::reason::of_refusal`), not the message or us.
    #[error("SMTP rejected: {message}")]
    Rejected { message: String, recipient: bool },
    /// Worth another attempt later.
    #[error("SMTP: {0}")]
    Transient(String),
}

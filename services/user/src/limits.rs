//! user-service's rate limits, per client address and per email address.

use verimail_server::config::{ConfigError, Vars};
use verimail_server::limits::{Limiter, Rate, rate};

/// Each `None` is off.
#[derive(Debug, Clone)]
pub struct UserLimits {
    /// `RATE_LIMIT_REGISTER_PER_CLIENT` (default `20/60`).
    pub register_per_client: Option<Rate>,
    /// `RATE_LIMIT_REGISTER_PER_EMAIL` (default `5/3600`): attempts on one address.
    pub register_per_email: Option<Rate>,
    /// `RATE_LIMIT_RESEND_PER_CLIENT` (default `10/60`).
    pub resend_per_client: Option<Rate>,
    /// `RATE_LIMIT_RESEND_PER_EMAIL` (default `1/60`) and `RATE_LIMIT_RESEND_PER_EMAIL_DAILY`
    /// (default `5/86400`): what one mailbox can be sent.
    pub resend_per_email: Option<Rate>,
    pub resend_per_email_daily: Option<Rate>,
}

impl UserLimits {
    pub fn from_vars(vars: &Vars) -> Result<UserLimits, ConfigError> {
        Ok(UserLimits {
            register_per_client: rate(vars, "RATE_LIMIT_REGISTER_PER_CLIENT", "20/60")?,
            register_per_email: rate(vars, "RATE_LIMIT_REGISTER_PER_EMAIL", "5/3600")?,
            resend_per_client: rate(vars, "RATE_LIMIT_RESEND_PER_CLIENT", "10/60")?,
            resend_per_email: rate(vars, "RATE_LIMIT_RESEND_PER_EMAIL", "1/60")?,
            resend_per_email_daily: rate(vars, "RATE_LIMIT_RESEND_PER_EMAIL_DAILY", "5/86400")?,
        })
    }
}

pub struct UserLimiters {
    pub register_per_client: Limiter,
    pub register_per_email: Limiter,
    pub resend_per_client: Limiter,
    pub resend_per_email: Limiter,
    pub resend_per_email_daily: Limiter,
}

impl UserLimiters {
    /// Counts one email to the mailbox of `email` (a resend, or a notice of a sign-up attempt)
    /// against both caps on what one inbox is sent; RESOURCE_EXHAUSTED when over either.
    pub fn mail_to(&self, email: &crate::domain::Email) -> Result<(), tonic::Status> {
        self.resend_per_email.check(email.mailbox())?;
        self.resend_per_email_daily.check(email.mailbox())
    }

    pub fn new(limits: &UserLimits) -> UserLimiters {
        UserLimiters {
            register_per_client: Limiter::new("registrations from this client", limits.register_per_client),
            register_per_email: Limiter::new("registrations of this address", limits.register_per_email),
            resend_per_client: Limiter::new("resend requests from this client", limits.resend_per_client),
            resend_per_email: Limiter::new("emails to this address", limits.resend_per_email),
            resend_per_email_daily: Limiter::new("emails to this address today", limits.resend_per_email_daily),
        }
    }
}

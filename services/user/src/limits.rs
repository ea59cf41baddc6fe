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
    /// `RATE_LIMIT_SIGN_IN_PER_CLIENT` (default `30/60`): SignIn calls per client address.
    pub sign_in_per_client: Option<Rate>,
    /// `SIGN_IN_MAX_FAILURES` (default `5/900`): wrong passwords one client may try on one
    /// address before it is refused there until the window after its last failure has passed;
    /// a success forgets them. See [`SignInFailures`].
    pub sign_in_failures: Option<Rate>,
    /// `RATE_LIMIT_EMAIL_CHANGE_PER_USER` (default `5/3600`): ChangeEmail calls per account.
    pub email_change_per_user: Option<Rate>,
}

impl UserLimits {
    pub fn from_vars(vars: &Vars) -> Result<UserLimits, ConfigError> {
        Ok(UserLimits {
            register_per_client: rate(vars, "RATE_LIMIT_REGISTER_PER_CLIENT", "20/60")?,
            register_per_email: rate(vars, "RATE_LIMIT_REGISTER_PER_EMAIL", "5/3600")?,
            resend_per_client: rate(vars, "RATE_LIMIT_RESEND_PER_CLIENT", "10/60")?,
            resend_per_email: rate(vars, "RATE_LIMIT_RESEND_PER_EMAIL", "1/60")?,
            resend_per_email_daily: rate(vars, "RATE_LIMIT_RESEND_PER_EMAIL_DAILY", "5/86400")?,
            sign_in_per_client: rate(vars, "RATE_LIMIT_SIGN_IN_PER_CLIENT", "30/60")?,
            sign_in_failures: rate(vars, "SIGN_IN_MAX_FAILURES", "5/900")?,
            email_change_per_user: rate(vars, "RATE_LIMIT_EMAIL_CHANGE_PER_USER", "5/3600")?,
        })
    }
}

pub struct UserLimiters {
    pub register_per_client: Limiter,
    pub register_per_email: Limiter,
    pub resend_per_client: Limiter,
    pub resend_per_email: Limiter,
    pub resend_per_email_daily: Limiter,
    pub sign_in_per_client: Limiter,
    pub sign_in_failures: SignInFailures,
    pub email_change_per_user: Limiter,
}

impl UserLimiters {
    /// Counts one email to the mailbox of `email` (a resend, or a notice of a sign-up attempt)
    /// against both caps on what one inbox is sent; RESOURCE_EXHAUSTED when over either.
    pub fn mail_to(&self, email: &crate::password::Email) -> Result<(), tonic::Status> {
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
            sign_in_per_client: Limiter::new("sign-in attempts from this client", limits.sign_in_per_client),
            sign_in_failures: SignInFailures::new(limits.sign_in_failures, verimail_server::limits::MAX_KEYS),
            email_change_per_user: Limiter::new("changes of address of this account", limits.email_change_per_user),
        }
    }
}

/// Wrong passwords per address and client: after `count` failures within `per` of each other,
/// that client is refused on that address (RESOURCE_EXHAUSTED with RetryInfo) until `per` has
/// passed since its last failure; a correct password forgets its failures.
///
/// Keyed on the pair on purpose: a refusal keyed on the address alone is a lockout anyone can
/// impose on its owner by guessing. Here a stranger's guesses spend only the stranger's own
/// allowance, and the owner, from their own address, signs in as usual. A guesser with many
/// addresses is bounded by this allowance per address, the per-client limit, the hashing pool
/// and the password-strength floor at registration, and shows in
/// `verimail_sign_ins_total{outcome="wrong"}`. Keyed on the mailbox whether or not it has an
/// account, so the refusal tells nothing. Memory is bounded like [`Limiter`]'s: past
/// `max_keys`, forgotten failures are swept out, and new keys then share one entry.
pub struct SignInFailures {
    rate: Option<Rate>,
    max_keys: usize,
    failures: std::sync::Mutex<std::collections::HashMap<String, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: std::time::Instant,
}

const SHARED_KEY: &str = "\u{0}shared";

impl SignInFailures {
    pub fn new(rate: Option<Rate>, max_keys: usize) -> SignInFailures {
        SignInFailures { rate, max_keys, failures: Default::default() }
    }

    fn key<'a>(&self, failures: &std::collections::HashMap<String, Failures>, key: &'a str) -> &'a str {
        if failures.len() >= self.max_keys && !failures.contains_key(key) { SHARED_KEY } else { key }
    }

    /// RESOURCE_EXHAUSTED when `key` (mailbox and client) has used up its failures.
    pub fn check(&self, key: &str) -> Result<(), tonic::Status> {
        let Some(rate) = self.rate else { return Ok(()) };
        let Ok(failures) = self.failures.lock() else { return Ok(()) };
        match failures.get(self.key(&failures, key)) {
            Some(f) if f.count >= rate.count.get() && f.last.elapsed() < rate.per => {
                Err(verimail_server::limits::exhausted(
                    "failed sign-ins on this address from this client",
                    rate.per - f.last.elapsed(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong password for `key`.
    pub fn failed(&self, key: &str) {
        let Some(rate) = self.rate else { return };
        let Ok(mut failures) = self.failures.lock() else { return };
        if failures.len() >= self.max_keys {
            failures.retain(|_, f| f.last.elapsed() < rate.per);
        }
        let key = self.key(&failures, key).to_owned();
        let now = std::time::Instant::now();
        let entry = failures.entry(key).or_insert(Failures { count: 0, last: now });
        if entry.last.elapsed() >= rate.per {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    /// A correct password: `key` starts afresh.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failures_refuse_one_client_on_one_address_until_a_success_or_the_window() {
        let failures = SignInFailures::new(Some(Rate::new(3, Duration::from_millis(300))), 100);
        for _ in 0..3 {
            assert!(failures.check("ann 10.0.0.1").is_ok());
            failures.failed("ann 10.0.0.1");
        }
        let refused = failures.check("ann 10.0.0.1").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(failures.check("ann 10.0.0.2").is_ok(), "the owner, from elsewhere");
        assert!(failures.check("bob 10.0.0.1").is_ok(), "another address");
        std::thread::sleep(Duration::from_millis(320));
        assert!(failures.check("ann 10.0.0.1").is_ok(), "the window passed");
        failures.failed("ann 10.0.0.1");
        failures.failed("ann 10.0.0.1");
        failures.succeeded("ann 10.0.0.1");
        failures.failed("ann 10.0.0.1");
        failures.failed("ann 10.0.0.1");
        assert!(failures.check("ann 10.0.0.1").is_ok(), "a success forgot the earlier failures");
    }

    #[test]
    fn failures_remember_at_most_their_cap() {
        let failures = SignInFailures::new(Some(Rate::new(2, Duration::from_secs(60))), 4);
        for n in 0..10 {
            failures.failed(&format!("user{n} 10.0.0.1"));
        }
        assert!(failures.failures.lock().unwrap().len() <= 5, "four keys and the shared one");
        assert!(failures.check("user9 10.0.0.1").is_err(), "new keys share one allowance past the cap");
        assert!(failures.check("user0 10.0.0.1").is_ok(), "a key it remembers has its own");
    }
}

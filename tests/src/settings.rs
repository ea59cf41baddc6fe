//! What a test stack sets, in one place: each part's variables, from the knobs of
//! [`StackOptions`]. The in-process [`Stack`](crate::Stack) parses them with each part's own
//! `Config::from_vars`, production checks included, and the [`ProcessStack`](crate::procs)
//! gives them to the real binaries as their environment: one source of truth for both.

use crate::StackOptions;
use crate::procs::Part;
use std::time::Duration;
use verimail_server::limits::Rate;

/// A variable and its value.
pub type Var = (&'static str, String);

/// `N/SECONDS`, or `off`.
fn rate(rate: Option<Rate>) -> String {
    rate.map_or_else(|| "off".to_owned(), |r| r.to_string())
}

fn seconds(d: Duration) -> String {
    d.as_secs().to_string()
}

/// Seconds with a fraction where needed (`0.2`).
fn fractional(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

impl StackOptions {
    /// The variables `part` reads that the options decide (its addresses, database, NATS and
    /// keys are the stack's to give): the stack's credentials, development mode, and each knob.
    pub fn vars_for(&self, part: Part) -> Vec<Var> {
        let mut vars: Vec<Var> = vec![("VERIMAIL_ENV", "development".into())];
        let gateway_token = ("GATEWAY_SERVICE_TOKEN", crate::TEST_GATEWAY_TOKEN.to_owned());
        let email_token = ("EMAIL_SERVICE_TOKEN", crate::TEST_EMAIL_TOKEN.to_owned());
        let admin_token = ("ADMIN_TOKEN", crate::TEST_ADMIN_TOKEN.to_owned());
        let user_token = ("USER_SERVICE_TOKEN", crate::TEST_USER_TOKEN.to_owned());
        // Small pools: tests run side by side on one PostgreSQL server.
        let pool = ("DATABASE_MAX_CONNECTIONS", "4".to_owned());
        let replicas = ("NATS_STREAM_REPLICAS", self.nats_nodes.min(3).to_string());
        match part {
            Part::User => vars.extend([
                gateway_token,
                admin_token,
                user_token,
                ("APP_SERVICE_TOKEN", crate::TEST_APP_TOKEN.to_owned()),
                ("SIGN_IN_REQUIRES_VERIFIED", self.sign_in_requires_verified.to_string()),
                ("RATE_LIMIT_SIGN_IN_PER_CLIENT", rate(self.limits)),
                ("SIGN_IN_MAX_FAILURES", rate(self.sign_in_failures.or(self.limits))),
                pool,
                replicas,
            ]),
            Part::Auth => vars.extend([
                gateway_token,
                email_token,
                admin_token,
                user_token,
                ("ACCESS_TOKEN_TTL_SECONDS", seconds(self.access_token_lifetime)),
                pool,
                replicas,
                ("RATE_LIMIT_VERIFY_PER_CLIENT", rate(self.limits)),
                ("RATE_LIMIT_CODE_PER_EMAIL", rate(self.code_limit.or(self.limits))),
                ("CODE_MAX_WRONG_TRIES", self.code_max_wrong_tries.to_string()),
                ("VERIFICATION_TOKEN_TTL_SECONDS", seconds(self.token_lifetime)),
                ("VERIFICATION_CODE_TTL_SECONDS", seconds(self.code_lifetime)),
            ]),
            Part::Email => vars.extend([
                email_token,
                admin_token,
                pool,
                replicas,
                ("EMAIL_MAX_ATTEMPTS", self.email_attempts.to_string()),
                (
                    "EMAIL_RETRY_BACKOFF_SECONDS",
                    self.email_backoff.iter().map(|d| fractional(*d)).collect::<Vec<_>>().join(","),
                ),
                // Short, so a message whose ack was lost comes back within seconds.
                ("EMAIL_SEND_TIMEOUT_SECONDS", "2".into()),
                ("SMTP_CHECK_INTERVAL_SECONDS", seconds(self.smtp_check_interval)),
            ]),
            Part::Gateway => vars.extend([
                gateway_token,
                ("RATE_LIMIT_GATEWAY_PER_CLIENT", rate(self.limits)),
                ("TRUSTED_PROXIES", self.trusted_proxies.clone()),
                ("GATEWAY_HEADER_TIMEOUT_SECONDS", seconds(self.gateway_limits.header_timeout)),
                ("GATEWAY_REQUEST_TIMEOUT_SECONDS", seconds(self.gateway_limits.request_timeout)),
                ("GATEWAY_MAX_CONNECTIONS", self.gateway_limits.max_connections.to_string()),
            ]),
        }
        if part == Part::User {
            vars.extend(self.user_knobs());
            let ttl = self.unverified_ttl.map_or_else(|| "off".into(), seconds);
            vars.push(("UNVERIFIED_ACCOUNT_TTL_SECONDS", ttl));
        }
        if let (Part::Gateway, Some(url)) = (part, &self.app_url) {
            vars.push(("APP_URL", url.clone()));
        }
        match part {
            Part::Email => vars.extend(self.email_vars.iter().cloned()),
            Part::User => vars.extend(self.user_vars.iter().cloned()),
            Part::Auth => vars.extend(self.auth_vars.iter().cloned()),
            Part::Gateway => vars.extend(self.gateway_vars.iter().cloned()),
        }
        vars
    }

    /// user-service's hashing, registration and resend limits, and expiry.
    fn user_knobs(&self) -> [Var; 10] {
        [
            // Cheap hashing for tests, through configuration like any other deployment.
            ("PASSWORD_HASH_MEMORY_KIB", "1024".into()),
            ("PASSWORD_HASH_ITERATIONS", "1".into()),
            ("PASSWORD_HASH_PARALLELISM", "1".into()),
            ("PASSWORD_HASH_CONCURRENCY", "2".into()),
            ("ENUMERATION_SAFE_REGISTRATION", self.enumeration_safe.to_string()),
            ("RATE_LIMIT_REGISTER_PER_CLIENT", rate(self.limits)),
            ("RATE_LIMIT_REGISTER_PER_EMAIL", rate(self.limits)),
            ("RATE_LIMIT_RESEND_PER_CLIENT", rate(self.limits)),
            ("RATE_LIMIT_RESEND_PER_EMAIL", rate(self.limits)),
            ("RATE_LIMIT_RESEND_PER_EMAIL_DAILY", rate(self.limits)),
        ]
    }
}

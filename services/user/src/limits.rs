//! user-service's rate limits, per client address and per email address.

use verimail_server::config::{ConfigError, Vars};
use verimail_server::limits::shared::{self, Step};
use verimail_server::limits::{Limiter, Rate, Store, rate};

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
    /// `SIGN_IN_FAILURES_MAX_KEYS` (default 100,000, at least 1): the (address, client) pairs
    /// whose failures are remembered at once; past it the least recently failed is forgotten.
    pub sign_in_failure_keys: usize,
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
            sign_in_failure_keys: match vars.parse("SIGN_IN_FAILURES_MAX_KEYS", verimail_server::limits::MAX_KEYS)? {
                0 => return Err(ConfigError::new("SIGN_IN_FAILURES_MAX_KEYS", "must be at least 1")),
                keys => keys,
            },
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
    pub async fn mail_to(&self, email: &crate::password::Email) -> Result<(), tonic::Status> {
        self.resend_per_email.check(email.mailbox()).await?;
        self.resend_per_email_daily.check(email.mailbox()).await
    }

    /// The limiters, counting in `store` (every instance's, or this one's memory).
    pub fn new(limits: &UserLimits, store: &Store) -> UserLimiters {
        UserLimiters {
            register_per_client: store.limiter(
                "register_per_client",
                "registrations from this client",
                limits.register_per_client,
            ),
            register_per_email: store.limiter(
                "register_per_email",
                "registrations of this address",
                limits.register_per_email,
            ),
            resend_per_client: store.limiter(
                "resend_per_client",
                "resend requests from this client",
                limits.resend_per_client,
            ),
            resend_per_email: store.limiter("resend_per_email", "emails to this address", limits.resend_per_email),
            resend_per_email_daily: store.limiter(
                "resend_per_email_daily",
                "emails to this address today",
                limits.resend_per_email_daily,
            ),
            sign_in_per_client: store.limiter(
                "sign_in_per_client",
                "sign-in attempts from this client",
                limits.sign_in_per_client,
            ),
            sign_in_failures: SignInFailures::new(limits.sign_in_failures, limits.sign_in_failure_keys)
                .shared(store, limits.sign_in_failure_keys),
            email_change_per_user: store.limiter(
                "email_change_per_user",
                "changes of address of this account",
                limits.email_change_per_user,
            ),
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
/// account, so the refusal tells nothing.
///
/// Shared ([`SignInFailures::shared`]), every instance counts a pair's failures in one NATS
/// bucket (a pair's value: its count and its latest failure); this memory answers only while
/// NATS cannot. At most `max_keys` pairs are remembered, in order of their latest failure: a new pair past
/// the cap makes the map forget the pair whose latest failure is the oldest (usually one whose
/// window has passed anyway). So a full map never refuses a pair it holds no failures of, its
/// memory stays bounded, and every call is a hash lookup under a short lock. Flooding it to
/// push out a refused pair costs a guesser `max_keys` failures, each a password hash and each
/// within the per-client limits, to buy one more allowance on one address: fewer guesses than
/// a fresh client address gets for nothing.
pub struct SignInFailures {
    rate: Option<Rate>,
    failures: std::sync::Mutex<hashlink::LruCache<String, Failures>>,
    shared: Option<shared::Bucket>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: std::time::Instant,
}

impl SignInFailures {
    pub fn new(rate: Option<Rate>, max_keys: usize) -> SignInFailures {
        SignInFailures { rate, failures: std::sync::Mutex::new(hashlink::LruCache::new(max_keys.max(1))), shared: None }
    }

    /// Counting in `store`'s bucket `sign_in_failures` (at most `max_keys` pairs there too).
    pub fn shared(mut self, store: &Store, max_keys: usize) -> SignInFailures {
        self.shared = self.rate.and_then(|rate| store.bucket("sign_in_failures", rate.per, max_keys));
        self
    }

    /// RESOURCE_EXHAUSTED when `key` (mailbox and client) has used up its failures.
    pub async fn check(&self, key: &str) -> Result<(), tonic::Status> {
        let Some(rate) = self.rate else { return Ok(()) };
        if let Some(bucket) = &self.shared {
            let read = bucket.update(key, |value| Step::Answer(SharedFailures::read(value).refusal(rate))).await;
            match read {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => return Err(refused(wait)),
                Err(shared::Unavailable) => {
                    shared::UNSHARED.inc();
                }
            }
        }
        self.check_here(key)
    }

    /// Counts a wrong password for `key`.
    pub async fn failed(&self, key: &str) {
        let Some(rate) = self.rate else { return };
        if let Some(bucket) = &self.shared {
            let counted = bucket
                .update(key, |value| {
                    let now = shared::now_micros();
                    let before = SharedFailures::read(value);
                    let earlier =
                        if now.saturating_sub(before.last) >= rate.per.as_micros() as u64 { 0 } else { before.count };
                    // Failures a window old are forgotten anyway.
                    Step::Write(SharedFailures { count: earlier.saturating_add(1), last: now }.bytes(), rate.per, ())
                })
                .await;
            match counted {
                Ok(()) => return,
                Err(shared::Unavailable) => {
                    shared::UNSHARED.inc();
                }
            }
        }
        self.failed_here(key)
    }

    /// A correct password: `key` starts afresh.
    pub async fn succeeded(&self, key: &str) {
        if let Some(bucket) = &self.shared
            && bucket.forget(key).await.is_err()
        {
            shared::UNSHARED.inc();
        }
        self.succeeded_here(key)
    }

    /// [`SignInFailures::check`] in this process's memory.
    pub fn check_here(&self, key: &str) -> Result<(), tonic::Status> {
        let Some(rate) = self.rate else { return Ok(()) };
        let Ok(failures) = self.failures.lock() else { return Ok(()) };
        match failures.peek(key) {
            Some(f) if f.count >= rate.count.get() && f.last.elapsed() < rate.per => {
                Err(refused(rate.per - f.last.elapsed()))
            }
            _ => Ok(()),
        }
    }

    /// [`SignInFailures::failed`] in this process's memory.
    pub fn failed_here(&self, key: &str) {
        let Some(rate) = self.rate else { return };
        let Ok(mut failures) = self.failures.lock() else { return };
        let now = std::time::Instant::now();
        match failures.get_mut(key) {
            Some(entry) => {
                let earlier = if now.duration_since(entry.last) >= rate.per { 0 } else { entry.count };
                *entry = Failures { count: earlier.saturating_add(1), last: now };
            }
            None => {
                failures.insert(key.to_owned(), Failures { count: 1, last: now });
            }
        }
    }

    /// [`SignInFailures::succeeded`] in this process's memory.
    pub fn succeeded_here(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// Pairs remembered now.
    pub fn len(&self) -> usize {
        self.failures.lock().map_or(0, |failures| failures.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refused(wait: std::time::Duration) -> tonic::Status {
    verimail_server::limits::exhausted("failed sign-ins on this address from this client", wait)
}

/// A pair's failures as the shared bucket keeps them: the count (4 bytes) and the latest
/// failure (microseconds since the epoch, 8 bytes), big-endian.
#[derive(Clone, Copy, Default)]
struct SharedFailures {
    count: u32,
    last: u64,
}

impl SharedFailures {
    fn read(value: Option<&[u8]>) -> SharedFailures {
        match value {
            Some(&[c0, c1, c2, c3, l0, l1, l2, l3, l4, l5, l6, l7]) => SharedFailures {
                count: u32::from_be_bytes([c0, c1, c2, c3]),
                last: u64::from_be_bytes([l0, l1, l2, l3, l4, l5, l6, l7]),
            },
            _ => SharedFailures::default(),
        }
    }

    fn bytes(self) -> Vec<u8> {
        [self.count.to_be_bytes().as_slice(), self.last.to_be_bytes().as_slice()].concat()
    }

    /// How long the pair is still refused, if it is.
    fn refusal(self, rate: Rate) -> Option<std::time::Duration> {
        let since = std::time::Duration::from_micros(shared::now_micros().saturating_sub(self.last));
        (self.count >= rate.count.get() && since < rate.per).then(|| rate.per - since)
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
            assert!(failures.check_here("ann 10.0.0.1").is_ok());
            failures.failed_here("ann 10.0.0.1");
        }
        let refused = failures.check_here("ann 10.0.0.1").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(failures.check_here("ann 10.0.0.2").is_ok(), "the owner, from elsewhere");
        assert!(failures.check_here("bob 10.0.0.1").is_ok(), "another address");
        std::thread::sleep(Duration::from_millis(320));
        assert!(failures.check_here("ann 10.0.0.1").is_ok(), "the window passed");
        failures.failed_here("ann 10.0.0.1");
        failures.failed_here("ann 10.0.0.1");
        failures.succeeded_here("ann 10.0.0.1");
        failures.failed_here("ann 10.0.0.1");
        failures.failed_here("ann 10.0.0.1");
        assert!(failures.check_here("ann 10.0.0.1").is_ok(), "a success forgot the earlier failures");
    }

    #[test]
    fn a_full_map_forgets_the_oldest_failures_and_refuses_no_one_it_holds_none_of() {
        let failures = SignInFailures::new(Some(Rate::new(2, Duration::from_secs(60))), 4);
        for n in 0..3 {
            failures.failed_here("ann 10.0.0.1");
            failures.failed_here(&format!("user{n} 10.0.0.1"));
        }
        assert!(failures.check_here("ann 10.0.0.1").is_err(), "refused");
        for n in 3..10 {
            failures.failed_here(&format!("user{n} 10.0.0.1"));
            failures.failed_here(&format!("user{n} 10.0.0.1"));
            assert!(failures.len() <= 4, "bounded");
            assert!(failures.check_here("owner 10.0.0.9").is_ok(), "a full map refuses no stranger");
            assert!(failures.check_here(&format!("user{n} 10.0.0.1")).is_err(), "the newest keep their failures");
        }
        assert_eq!(failures.len(), 4);
        assert!(failures.check_here("ann 10.0.0.1").is_ok(), "the oldest failures were forgotten");
    }

    /// The figures the security review asked for: memory and cost per call at the default cap.
    #[test]
    fn at_its_default_cap_the_map_holds_its_size_and_each_call_stays_cheap() {
        let keys = verimail_server::limits::MAX_KEYS;
        let failures = SignInFailures::new(Some(Rate::new(5, Duration::from_secs(900))), keys);
        let key = |n: usize| format!("guess{n:07}@example.com 203.0.{}.{}", n / 256 % 256, n % 256);
        let before = counting::allocated();
        for n in 0..keys {
            failures.failed_here(&key(n));
        }
        let held = counting::allocated().saturating_sub(before);
        let started = std::time::Instant::now();
        for n in keys..2 * keys {
            failures.failed_here(&key(n));
            assert!(failures.check_here(&key(n + 1)).is_ok());
        }
        let per_call = started.elapsed() / keys as u32;
        assert_eq!(failures.len(), keys);
        let grown = counting::allocated().saturating_sub(before);
        println!(
            "sign-in failure map at its cap of {keys}: {:.1} MiB ({} bytes a pair), {:.1} MiB after {keys} more \
             pairs pushed the oldest out; a failure and a check {per_call:?} a pair past the cap",
            held as f64 / 1048576.0,
            held / keys,
            grown as f64 / 1048576.0
        );
        assert!(held < 32 << 20, "{held} bytes");
        assert!(grown <= held + held / 4, "{grown} bytes after eviction, {held} at the cap");
        assert!(per_call < Duration::from_micros(50), "{per_call:?}");
    }

    /// Bytes allocated and not freed, process-wide: nextest runs each test in a process of its
    /// own, so a test reads its own allocations.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::sync::atomic::{AtomicUsize, Ordering};

        struct Counting;
        static LIVE: AtomicUsize = AtomicUsize::new(0);

        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                LIVE.fetch_add(layout.size(), Ordering::Relaxed);
                // SAFETY: the caller's contract, passed on.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
                // SAFETY: the caller's contract, passed on.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        pub fn allocated() -> usize {
            LIVE.load(Ordering::Relaxed)
        }
    }
}

//! Rate limits (GCRA, keyed by client address or by email address), kept where every instance
//! of a part sees them ([`shared`], NATS key-value buckets) or in one process's memory
//! (governor), and the RESOURCE_EXHAUSTED status that tells a client when to come back.

pub mod shared;

use crate::config::ConfigError;
use crate::config::Vars;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

/// `N/SECONDS`: at most N at once, refilled evenly over SECONDS (e.g. `5/86400`: five a day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let (count, seconds) = text.trim().split_once('/').ok_or("expected N/SECONDS, e.g. 10/60, or off")?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| "N must be a whole number above 0")?;
        let seconds: u64 = seconds.trim().parse().map_err(|_| "SECONDS must be a whole number")?;
        if seconds == 0 {
            return Err("SECONDS must be above 0".into());
        }
        Ok(Rate { count, per: Duration::from_secs(seconds) })
    }
}

impl Rate {
    pub fn new(count: u32, per: Duration) -> Rate {
        Rate { count: NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN), per }
    }
}

/// The form [`Rate::from_str`] reads: `N/SECONDS` (whole seconds).
impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, self.per.as_secs())
    }
}

/// A rate from the environment: `N/SECONDS`, or `off` for no limit.
pub fn rate(vars: &Vars, name: &'static str, default: &str) -> Result<Option<Rate>, ConfigError> {
    let text = vars.string(name, default);
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| ConfigError::new(name, e))
}

/// Keys one limiter remembers at most: about 100 bytes each, so some 10 MB.
pub const MAX_KEYS: usize = 100_000;
/// How often keys whose allowance is full again (clients gone quiet) are forgotten.
const EVICT_EVERY: Duration = Duration::from_secs(10);
/// Where new keys are counted while a limiter holds [`MAX_KEYS`]: all of them together.
const OVERFLOW_KEY: &str = "\u{0}overflow";

/// Where a part keeps its limits (`RATE_LIMIT_STORE`): `nats` (the default), in NATS
/// key-value buckets every instance shares; or `memory`, each instance its own (one instance
/// only: N instances would allow N times the attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Nats,
    Memory,
}

impl StoreKind {
    pub fn from_vars(vars: &Vars) -> Result<StoreKind, ConfigError> {
        match vars.string("RATE_LIMIT_STORE", "nats").trim().to_ascii_lowercase().as_str() {
            "nats" => Ok(StoreKind::Nats),
            "memory" => Ok(StoreKind::Memory),
            _ => Err(ConfigError::new("RATE_LIMIT_STORE", "expected nats or memory")),
        }
    }
}

/// Where this process's limiters keep their counts.
#[derive(Clone)]
pub enum Store {
    /// Each process its own.
    Memory,
    /// Shared by every instance of the part.
    Nats(std::sync::Arc<shared::Nats>),
}

impl Store {
    /// The shared store of `part` (which names its buckets) on `js`, or memory, as `kind` says.
    pub fn new(kind: StoreKind, js: &async_nats::jetstream::Context, part: &'static str, replicas: usize) -> Store {
        match kind {
            StoreKind::Nats => {
                std::sync::LazyLock::force(&shared::UNSHARED);
                Store::Nats(shared::Nats::new(js.clone(), part, replicas))
            }
            StoreKind::Memory => Store::memory(),
        }
    }

    /// Each process its own (the count of checks answered alone is exported all the same, at 0).
    pub fn memory() -> Store {
        std::sync::LazyLock::force(&shared::UNSHARED);
        Store::Memory
    }

    /// A limit named `name` (its bucket's name, `[a-z_]`) on `what` (said in its refusals).
    pub fn limiter(&self, name: &'static str, what: &'static str, rate: Option<Rate>) -> Limiter {
        let mut limiter = Limiter::new(what, rate);
        if let (Store::Nats(nats), Some(rate)) = (self, rate) {
            limiter.shared = Some(nats.bucket(name, rate.per, MAX_KEYS, true));
        }
        limiter
    }

    /// The shared bucket of a limit kept its own way (`None` in memory), whose values another
    /// instance may reset: each check reads the key first.
    pub fn bucket(&self, name: &'static str, per: std::time::Duration, max_keys: usize) -> Option<shared::Bucket> {
        match self {
            Store::Nats(nats) => Some(nats.bucket(name, per, max_keys, false)),
            Store::Memory => None,
        }
    }
}

/// One limit on one kind of request, per key. `None` limits nothing.
///
/// Shared ([`Store::limiter`]), it counts in NATS and answers from this process's memory only
/// while NATS cannot answer. In memory, its memory is bounded: a background task forgets,
/// every 10 s, the keys whose allowance has refilled (they would start afresh anyway), and
/// past [`MAX_KEYS`] new keys share one allowance until eviction makes room, so a flood of
/// distinct clients costs no more memory and no scan per request.
pub struct Limiter {
    what: &'static str,
    rate: Option<Rate>,
    limiter: Option<std::sync::Arc<DefaultKeyedRateLimiter<String>>>,
    max_keys: usize,
    shared: Option<shared::Bucket>,
}

impl Limiter {
    /// A limit in this process's memory.
    pub fn new(what: &'static str, rate: Option<Rate>) -> Limiter {
        Limiter::with_max_keys(what, rate, MAX_KEYS)
    }

    /// As [`Limiter::new`], remembering at most `max_keys` keys. Created inside a Tokio
    /// runtime, it evicts in the background for as long as it lives.
    pub fn with_max_keys(what: &'static str, rate: Option<Rate>, max_keys: usize) -> Limiter {
        let limiter = rate.map(|rate| {
            let period = rate.per / rate.count.get();
            // A period of zero (a count above the nanoseconds in `per`) means no wait at all.
            let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX));
            std::sync::Arc::new(RateLimiter::keyed(quota.allow_burst(rate.count)))
        });
        if let (Some(limiter), Ok(runtime)) = (&limiter, tokio::runtime::Handle::try_current()) {
            let limiter = std::sync::Arc::downgrade(limiter);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(EVICT_EVERY).await;
                    let Some(limiter) = limiter.upgrade() else { return };
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            });
        }
        Limiter { what, rate, limiter, max_keys, shared: None }
    }

    /// Counts one request for `key`; RESOURCE_EXHAUSTED with the wait when over the limit.
    pub async fn check(&self, key: &str) -> Result<(), Status> {
        let Some(rate) = self.rate else { return Ok(()) };
        if let Some(bucket) = &self.shared {
            match shared::gcra(bucket, key, rate.count.get()).await {
                Ok(answer) => return answer.map_err(|wait| exhausted(self.what, wait)),
                Err(shared::Unavailable) => shared::UNSHARED.inc(),
            };
        }
        self.check_here(key)
    }

    /// Counts one request for `key` in this process's memory alone.
    pub fn check_here(&self, key: &str) -> Result<(), Status> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        let key = if limiter.len() >= self.max_keys { OVERFLOW_KEY } else { key };
        match limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(exhausted(self.what, not_until.wait_time_from(DefaultClock::default().now()))),
        }
    }

    /// Keys remembered in this process's memory now.
    pub fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |limiter| limiter.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key of a client's per-client limits: its IPv4 address, or the /64 network of an IPv6
/// one (one subscriber's line holds a whole /64, so counting addresses would give each of
/// them 2^64 allowances). An IPv4 address in IPv6 form counts as the IPv4 address.
pub fn client_key(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(network))
            }
        },
    }
}

/// The key of the limits on what one inbox is sent and how often its codes are tried: the
/// mailbox an address delivers to, not its spelling, so `victim+1@`, `victim+2@`, … share one
/// allowance. Case is folded everywhere (domains are case-blind, and no provider we know
/// tells mailboxes apart by case); a `+tag` sub-address is dropped for every domain; at
/// gmail.com (and its alias googlemail.com) dots in the local part are dropped too.
pub fn mailbox(address: &str) -> String {
    let address = address.trim().to_lowercase();
    let Some((local, domain)) = address.rsplit_once('@') else { return address };
    let domain = domain.trim_end_matches('.');
    let domain = if domain == "googlemail.com" { "gmail.com" } else { domain };
    let local = match local.split_once('+') {
        Some((base, _)) if !base.is_empty() => base,
        _ => local,
    };
    let local = if domain == "gmail.com" { local.replace('.', "") } else { local.to_owned() };
    format!("{local}@{domain}")
}

/// RESOURCE_EXHAUSTED with google.rpc.RetryInfo and a `retry-after` header (whole seconds).
pub fn exhausted(what: &str, retry_after: Duration) -> Status {
    let seconds = whole_seconds(retry_after);
    let mut status = Status::with_error_details(
        tonic::Code::ResourceExhausted,
        format!("too many {what}; retry in {seconds} s"),
        ErrorDetails::with_retry_info(Some(retry_after)),
    );
    if let Ok(value) = seconds.to_string().parse() {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

/// A wait in whole seconds, rounded up (for Retry-After headers).
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The seconds a RESOURCE_EXHAUSTED status asks the client to wait, if it says.
pub fn retry_after(status: &Status) -> Option<Duration> {
    status.get_details_retry_info().and_then(|info| info.retry_delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_strictly() {
        assert_eq!("5/86400".parse::<Rate>().unwrap(), Rate::new(5, Duration::from_secs(86400)));
        assert_eq!(Rate::new(5, Duration::from_secs(86400)).to_string(), "5/86400", "printed as it is read");
        for bad in ["", "5", "0/60", "5/0", "-1/60", "5/minute", "five/60"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mailboxes_fold_sub_addresses_case_and_gmail_dots() {
        for (address, expected) in [
            ("Victim@Example.com", "victim@example.com"),
            ("victim+1@example.com", "victim@example.com"),
            ("victim+a+b@EXAMPLE.COM", "victim@example.com"),
            ("v.i.c.t.i.m@example.com", "v.i.c.t.i.m@example.com"),
            ("V.ictim+x@googlemail.com", "victim@gmail.com"),
            ("vic.tim@gmail.com", "victim@gmail.com"),
            ("+victim@example.com", "+victim@example.com"),
        ] {
            assert_eq!(mailbox(address), expected, "{address}");
        }
    }

    #[test]
    fn clients_are_keyed_by_ipv4_address_and_ipv6_network() {
        let key = |ip: &str| client_key(ip.parse().unwrap());
        assert_eq!(key("203.0.113.9"), "203.0.113.9");
        assert_eq!(key("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }

    #[tokio::test]
    async fn a_limiter_remembers_at_most_its_cap_and_forgets_quiet_clients() {
        let limiter = Limiter::with_max_keys("requests", Some(Rate::new(2, Duration::from_millis(200))), 100);
        for n in 0..1000 {
            let _ = limiter.check_here(&format!("client-{n}"));
        }
        assert_eq!(limiter.len(), 101, "the cap, and the key that overflowing clients share");
        // Past the cap new clients share one allowance: the flood limits itself.
        assert!(limiter.check_here("client-5000").is_err());
        tokio::time::sleep(EVICT_EVERY + Duration::from_millis(500)).await;
        assert_eq!(limiter.len(), 0, "every allowance refilled, so every key was forgotten");
        limiter.check_here("client-5000").expect("room again");
    }

    #[test]
    fn a_limit_trips_at_its_number_per_key_and_says_when_to_come_back() {
        let limiter = Limiter::new("requests", Some(Rate::new(3, Duration::from_secs(60))));
        for _ in 0..3 {
            limiter.check_here("a").unwrap();
        }
        let status = limiter.check_here("a").unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let wait = retry_after(&status).unwrap();
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20), "{wait:?}");
        assert_eq!(status.metadata().get("retry-after").unwrap(), "20");
        limiter.check_here("b").expect("another key has its own allowance");
        Limiter::new("requests", None).check_here("a").expect("off limits nothing");
    }
}

//! Rate limits (governor's GCRA, keyed by client address or by email address), and the
//! RESOURCE_EXHAUSTED status that tells a client when to come back.

use crate::config::ConfigError;
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
        Rate { count: NonZeroU32::new(count.max(1)).expect("at least 1"), per }
    }
}

/// A rate from the environment: `N/SECONDS`, or `off` for no limit.
pub fn rate(name: &'static str, default: &str) -> Result<Option<Rate>, ConfigError> {
    let text = crate::config::string(name, default);
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| ConfigError::new(name, e))
}

/// One limit on one kind of request, per key. `None` limits nothing.
pub struct Limiter {
    what: &'static str,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl Limiter {
    pub fn new(what: &'static str, rate: Option<Rate>) -> Limiter {
        let limiter = rate.map(|rate| {
            let period = rate.per / rate.count.get();
            let quota = Quota::with_period(period.max(Duration::from_nanos(1))).expect("a period above zero");
            RateLimiter::keyed(quota.allow_burst(rate.count))
        });
        Limiter { what, limiter }
    }

    /// Counts one request for `key`; RESOURCE_EXHAUSTED with the wait when over the limit.
    pub fn check(&self, key: &str) -> Result<(), Status> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        // Keys of clients long gone are forgotten now and then, so memory stays bounded.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        match limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(exhausted(self.what, not_until.wait_time_from(DefaultClock::default().now()))),
        }
    }
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
        for bad in ["", "5", "0/60", "5/0", "-1/60", "5/minute", "five/60"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_limit_trips_at_its_number_per_key_and_says_when_to_come_back() {
        let limiter = Limiter::new("requests", Some(Rate::new(3, Duration::from_secs(60))));
        for _ in 0..3 {
            limiter.check("a").unwrap();
        }
        let status = limiter.check("a").unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let wait = retry_after(&status).unwrap();
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20), "{wait:?}");
        assert_eq!(status.metadata().get("retry-after").unwrap(), "20");
        limiter.check("b").expect("another key has its own allowance");
        Limiter::new("requests", None).check("a").expect("off limits nothing");
    }
}

//! Reading typed configuration from the environment, with errors that name the variable.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("configuration variable {name}: {message}")]
pub struct ConfigError {
    pub name: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(name: &'static str, message: impl Into<String>) -> Self {
        ConfigError { name, message: message.into() }
    }
}

/// Every variable this process's configuration has read (set or not), for `--check-config`.
static READ: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The names [`var`] has been asked for so far.
pub fn read_variables() -> std::collections::BTreeSet<&'static str> {
    READ.lock().map(|read| read.clone()).unwrap_or_default()
}

/// The variable's value, or `None` when it is unset or blank.
pub fn var(name: &'static str) -> Option<String> {
    if let Ok(mut read) = READ.lock() {
        read.insert(name);
    }
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

pub fn string(name: &'static str, default: &str) -> String {
    var(name).unwrap_or_else(|| default.to_owned())
}

pub fn parse<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match var(name) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|e| ConfigError::new(name, format!("cannot parse {raw:?}: {e}"))),
    }
}

/// A duration given in whole seconds.
pub fn seconds(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let secs = parse(name, default.as_secs())?;
    if secs == 0 {
        return Err(ConfigError::new(name, "must be at least 1 second"));
    }
    Ok(Duration::from_secs(secs))
}

/// Where a process runs, `VERIMAIL_ENV`: production unless development is asked for by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// `VERIMAIL_ENV=development` (set by `just dev` and the tests): unsafe conveniences allowed.
    Development,
    /// Unset, or `production`: every setting that weakens security is refused unless a
    /// variable allows it by name.
    Production,
}

/// `VERIMAIL_ENV`: `development`, `production`, or unset (production). Any other value is an
/// error, so a typo (`prod`, `dev`) cannot open what production closes.
pub fn environment() -> Result<Environment, ConfigError> {
    match var("VERIMAIL_ENV").map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("production") => Ok(Environment::Production),
        Some("development") => Ok(Environment::Development),
        Some(other) => Err(ConfigError::new(
            "VERIMAIL_ENV",
            format!("{other:?} is not an environment: use production (the default when unset) or development"),
        )),
    }
}

/// Everything but an explicit `VERIMAIL_ENV=development` is production (an invalid value
/// stops the start in [`crate::cli::mode`] before this is asked).
pub fn is_production() -> bool {
    !matches!(environment(), Ok(Environment::Development))
}

/// `url` with the password of its user information, if any, shown as `***`: for logs and
/// `Debug` (a database or SMTP URL may carry credentials).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// This process, for records an operator reads: the host name and the process id.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| var("HOSTNAME"))
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_in_print() {
        assert_eq!(redact_url("postgres://app:hunter2@db:5432/users"), "postgres://app:***@db:5432/users");
        assert_eq!(redact_url("smtps://me%40x.org:p%40ss@mail.example"), "smtps://me%40x.org:***@mail.example");
        assert_eq!(redact_url("smtp://127.0.0.1:2525"), "smtp://127.0.0.1:2525");
    }
}

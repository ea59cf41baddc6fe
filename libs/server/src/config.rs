//! Reading typed configuration from a source of variables ([`Vars`]: the environment, or a
//! map in tests), with errors that name the variable.

use secrecy::{ExposeSecret, SecretString};
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

/// A variable's value by its name.
type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where configuration comes from: a lookup of variables by name (the process environment in
/// a binary, a map the in-process test stack builds), remembering every name asked for so that
/// `--check-config` can tell a variable nobody reads. Every `Config` of every part is parsed
/// from one, with the same checks whatever the source.
pub struct Vars {
    lookup: Lookup,
    read: std::sync::Mutex<std::collections::BTreeSet<&'static str>>,
}

impl Vars {
    pub fn new(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Vars {
        Vars { lookup: Box::new(lookup), read: Default::default() }
    }

    /// This process's environment.
    pub fn env() -> Vars {
        Vars::new(|name| std::env::var(name).ok())
    }

    /// Exactly these variables (a later pair of the same name wins).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Vars {
        let map: std::collections::HashMap<String, String> =
            pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        Vars::new(move |name| map.get(name).cloned())
    }

    /// The names asked for so far.
    pub fn read_variables(&self) -> std::collections::BTreeSet<&'static str> {
        self.read.lock().map(|read| read.clone()).unwrap_or_default()
    }

    /// The variable's value, or `None` when it is unset or blank.
    pub fn var(&self, name: &'static str) -> Option<String> {
        if let Ok(mut read) = self.read.lock() {
            read.insert(name);
        }
        (self.lookup)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn string(&self, name: &'static str, default: &str) -> String {
        self.var(name).unwrap_or_else(|| default.to_owned())
    }

    pub fn parse<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.var(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| ConfigError::new(name, format!("cannot parse {raw:?}: {e}"))),
        }
    }

    /// A duration given in whole seconds.
    pub fn seconds(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let secs = self.parse(name, default.as_secs())?;
        if secs == 0 {
            return Err(ConfigError::new(name, "must be at least 1 second"));
        }
        Ok(Duration::from_secs(secs))
    }

    /// A duration in whole seconds, or `off` (any case) for none.
    pub fn seconds_or_off(&self, name: &'static str, default: Duration) -> Result<Option<Duration>, ConfigError> {
        match self.var(name) {
            Some(off) if off.eq_ignore_ascii_case("off") => Ok(None),
            _ => self.seconds(name, default).map(Some),
        }
    }

    /// `VERIMAIL_ENV`: `development`, `production`, or unset (production). Any other value is an
    /// error, so a typo (`prod`, `dev`) cannot open what production closes.
    pub fn environment(&self) -> Result<Environment, ConfigError> {
        match self.var("VERIMAIL_ENV").map(|v| v.to_ascii_lowercase()).as_deref() {
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
    pub fn is_production(&self) -> bool {
        !matches!(self.environment(), Ok(Environment::Development))
    }
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

/// A URL that may carry a password (a database's, an SMTP server's, NATS's): its `Debug` and
/// [`SecretUrl::shown`] give it with the password masked, and only [`SecretUrl::expose`] the
/// URL itself.
#[derive(Clone, Debug, Default)]
pub struct SecretUrl {
    shown: String,
    url: SecretString,
}

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        let url = url.into();
        SecretUrl { shown: redact_url(&url), url: url.into() }
    }

    /// The URL, credentials and all: for connecting, never for logs.
    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }

    /// The URL with its password masked: for logs.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl PartialEq for SecretUrl {
    fn eq(&self, other: &SecretUrl) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for SecretUrl {}

/// This process, for records an operator reads: the host name and the process id.
pub fn default_instance_id(vars: &Vars) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| vars.var("HOSTNAME"))
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Binds a listener on the address a variable gave, with the variable's name in the error.
pub async fn bind(variable: &'static str, addr: &str) -> Result<tokio::net::TcpListener, ConfigError> {
    let bound = tokio::net::TcpListener::bind(addr).await;
    bound.map_err(|e| ConfigError::new(variable, format!("cannot listen on {addr}: {e}")))
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

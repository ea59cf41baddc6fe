//! Reaching NATS: where (`NATS_URL`), as whom and over what; every part that talks to NATS
//! (the services' bus, the limits every instance shares) connects through [`connect`].

use crate::backoff::Backoff;
use crate::config::{ConfigError, SecretUrl, Vars};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// The servers in a `NATS_URL`: one URL, or several separated by commas (the nodes of a
/// cluster; the client learns the rest from the server it reaches and fails over among them).
pub fn servers(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// How a service reaches NATS: where, as whom, and over what.
/// Its `Debug` shows no password, token or URL credentials.
#[derive(Clone, Debug, Default)]
pub struct NatsConfig {
    /// `NATS_URL`: one server, or a cluster's nodes comma-separated.
    pub url: SecretUrl,
    pub auth: NatsAuth,
    /// `NATS_TLS_CA`: the CA that signed the servers' certificates (PEM file); setting it, or
    /// `NATS_TLS_REQUIRED=true`, refuses a connection without TLS.
    pub tls_ca: Option<std::path::PathBuf>,
    /// `NATS_TLS_CERT`, `NATS_TLS_KEY`: this service's client certificate, for servers that
    /// verify clients.
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub tls_required: bool,
}

/// Who a service is to NATS: one of these, never more.
#[derive(Clone, Debug, Default)]
pub enum NatsAuth {
    /// No credentials: development, or production with `NATS_ALLOW_UNAUTHENTICATED=true`.
    #[default]
    None,
    /// `NATS_USER` and `NATS_PASSWORD`.
    UserPassword(String, SecretString),
    /// `NATS_TOKEN`.
    Token(SecretString),
    /// `NATS_CREDS`: a `.creds` file (a user JWT and its NKey seed) of a decentralized setup.
    CredsFile(std::path::PathBuf),
}

impl NatsConfig {
    /// `url`, no credentials, no TLS (tests, tools).
    pub fn url(url: impl Into<String>) -> NatsConfig {
        NatsConfig { url: SecretUrl::new(url), ..NatsConfig::default() }
    }

    /// From `NATS_URL`, `NATS_USER`/`NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS`, `NATS_TLS_*`.
    /// In production a connection without credentials is refused unless
    /// `NATS_ALLOW_UNAUTHENTICATED=true` says so: whoever reaches the server could otherwise
    /// publish the events the services act on.
    pub fn from_vars(vars: &Vars) -> Result<NatsConfig, ConfigError> {
        // A file a variable names, which must be there.
        let file = |name: &'static str| match vars.var(name).map(std::path::PathBuf::from) {
            Some(path) if !path.is_file() => Err(ConfigError::new(name, format!("{} is not a file", path.display()))),
            found => Ok(found),
        };
        let mut methods = Vec::new();
        if let Some(user) = vars.var("NATS_USER") {
            let password = vars
                .var("NATS_PASSWORD")
                .ok_or_else(|| ConfigError::new("NATS_PASSWORD", "is required with NATS_USER"))?;
            methods.push(NatsAuth::UserPassword(user, password.into()));
        } else if vars.var("NATS_PASSWORD").is_some() {
            return Err(ConfigError::new("NATS_USER", "is required with NATS_PASSWORD"));
        }
        if let Some(token) = vars.var("NATS_TOKEN") {
            methods.push(NatsAuth::Token(token.into()));
        }
        if let Some(creds) = file("NATS_CREDS")? {
            methods.push(NatsAuth::CredsFile(creds));
        }
        if methods.len() > 1 {
            return Err(ConfigError::new("NATS_USER", "give one of NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS"));
        }
        let auth = methods.pop().unwrap_or_default();
        let allow_unauthenticated = vars.parse("NATS_ALLOW_UNAUTHENTICATED", false)?;
        if matches!(auth, NatsAuth::None) && vars.is_production() && !allow_unauthenticated {
            return Err(ConfigError::new(
                "NATS_CREDS",
                "production needs NATS credentials (NATS_CREDS, NATS_USER and NATS_PASSWORD, or NATS_TOKEN): \
                 anyone who reaches the server could publish the events the services act on \
                 (NATS_ALLOW_UNAUTHENTICATED=true accepts that)",
            ));
        }
        let tls_ca = file("NATS_TLS_CA")?;
        let tls_client = match (file("NATS_TLS_CERT")?, file("NATS_TLS_KEY")?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::new("NATS_TLS_KEY", "is required with NATS_TLS_CERT")),
            (None, Some(_)) => return Err(ConfigError::new("NATS_TLS_CERT", "is required with NATS_TLS_KEY")),
        };
        let tls_required = vars.parse("NATS_TLS_REQUIRED", false)? || tls_ca.is_some();
        Ok(NatsConfig { url: SecretUrl::new(nats_url(vars)), auth, tls_ca, tls_client, tls_required })
    }

    /// The options of every connection: these credentials and TLS, a name, a 2 s connection
    /// timeout, and reconnects within a second of the server's return (the default backoff
    /// grows to several seconds).
    async fn client_options(&self) -> std::io::Result<async_nats::ConnectOptions> {
        Ok(self
            .options()
            .await?
            .name(env!("CARGO_PKG_NAME"))
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64)))
    }

    async fn options(&self) -> std::io::Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new();
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.expose_secret().to_owned())
            }
            NatsAuth::Token(token) => options.token(token.expose_secret().to_owned()),
            NatsAuth::CredsFile(path) => options.credentials_file(path).await?,
        };
        // A tls:// URL needs it too, whatever the variables say.
        crate::tls::install_crypto_provider();
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.tls_required))
    }
}

/// Connects to NATS without waiting for it: the client connects (and reconnects) in the
/// background, and what is asked of it meanwhile waits or fails, as its caller's timeouts say.
/// For a part that can serve without NATS (the gateway's shared limits).
pub async fn connect_in_background(nats: &NatsConfig) -> Result<async_nats::Client, String> {
    let options = nats.client_options().await.map_err(|e| format!("NATS_CREDS: {e}"))?;
    options.retry_on_initial_connect().connect(servers(nats.url.expose())).await.map_err(|e| e.to_string())
}

/// Connects to NATS, waiting and retrying (with capped backoff) while no server is
/// reachable instead of failing the service's start.
pub async fn connect(nats: &NatsConfig) -> async_nats::Client {
    let url = nats.url.shown();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let connected = match nats.client_options().await {
            Ok(options) => options.connect(servers(nats.url.expose())).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("NATS_CREDS: {e}")),
        };
        match connected {
            Ok(client) => return client,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(%url, error = %e, retry_in = ?delay, "NATS is not reachable yet");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The NATS server, `NATS_URL` (several, comma-separated, for a cluster).
pub fn nats_url(vars: &Vars) -> String {
    vars.string("NATS_URL", "nats://127.0.0.1:4222")
}

/// `NATS_STREAM_REPLICAS`: how many servers keep each stream (1 to 5; 3 on a three-node
/// cluster, so that losing one server loses nothing).
pub fn replicas(vars: &Vars) -> Result<usize, ConfigError> {
    let replicas = vars.parse("NATS_STREAM_REPLICAS", 1usize)?;
    if !(1..=5).contains(&replicas) {
        return Err(ConfigError::new("NATS_STREAM_REPLICAS", "must be between 1 and 5"));
    }
    Ok(replicas)
}

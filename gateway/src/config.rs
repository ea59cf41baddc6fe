use verimail_server::config::ConfigError;
use verimail_server::config::Vars;

/// The gateway's configuration, from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `GATEWAY_HTTP_ADDR`
    pub http_addr: String,
    /// `USER_GRPC_ADDR`
    pub user_addr: String,
    /// `AUTH_GRPC_ADDR`
    pub auth_addr: String,
    /// `RATE_LIMIT_GATEWAY_PER_CLIENT` (default `30/60`): form posts per client address.
    pub posts_per_client: Option<verimail_server::limits::Rate>,
    /// `GATEWAY_SERVICE_TOKEN`: presented on every call, so the services trust the browser's
    /// address the gateway passes on (and nothing more: it cannot have tokens issued).
    pub credential: verimail_server::internal::ServiceCredential,
    /// `GRPC_TLS_CERT`, `GRPC_TLS_KEY`, `GRPC_TLS_CA`: mutual TLS to the services when set.
    pub tls: verimail_server::tls::GrpcTls,
    /// `METRICS_ADDR`: where `/metrics` is served (`off`: nowhere), apart from the public pages.
    pub metrics_addr: String,
    /// `TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For`/`Forwarded` name the client
    /// (comma-separated CIDRs; none by default).
    pub trusted_proxies: crate::client::TrustedProxies,
    /// `APP_URL` (optional): where the verified page sends the user on ("Continue to …"), an
    /// `http://` or `https://` URL.
    pub app: Option<AppLink>,
    /// `GATEWAY_HEADER_TIMEOUT_SECONDS` (10), `GATEWAY_REQUEST_TIMEOUT_SECONDS` (30),
    /// `GATEWAY_MAX_CONNECTIONS` (1000): see [`crate::serve`].
    pub limits: crate::serve::Limits,
}

impl Config {
    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        let defaults = crate::serve::Limits::default();
        Ok(Config {
            http_addr: vars.string("GATEWAY_HTTP_ADDR", "127.0.0.1:8080"),
            user_addr: vars.string("USER_GRPC_ADDR", "127.0.0.1:50051"),
            auth_addr: vars.string("AUTH_GRPC_ADDR", "127.0.0.1:50052"),
            posts_per_client: verimail_server::limits::rate(vars, "RATE_LIMIT_GATEWAY_PER_CLIENT", "30/60")?,
            credential: verimail_server::internal::ServiceCredential::from_vars(
                vars,
                verimail_server::internal::GATEWAY_TOKEN,
            )?,
            tls: verimail_server::tls::GrpcTls::from_vars(vars)?,
            metrics_addr: vars.string("METRICS_ADDR", "127.0.0.1:9104"),
            trusted_proxies: crate::client::TrustedProxies::parse(&vars.string("TRUSTED_PROXIES", ""))
                .map_err(|e| ConfigError::new("TRUSTED_PROXIES", e))?,
            app: match vars.var("APP_URL") {
                None => None,
                Some(url) => Some(AppLink::parse(&url).map_err(|e| ConfigError::new("APP_URL", e))?),
            },
            limits: crate::serve::Limits {
                header_timeout: vars.seconds("GATEWAY_HEADER_TIMEOUT_SECONDS", defaults.header_timeout)?,
                request_timeout: vars.seconds("GATEWAY_REQUEST_TIMEOUT_SECONDS", defaults.request_timeout)?,
                max_connections: match vars.parse("GATEWAY_MAX_CONNECTIONS", defaults.max_connections)? {
                    0 => return Err(ConfigError::new("GATEWAY_MAX_CONNECTIONS", "must be at least 1")),
                    n => n,
                },
            },
        })
    }
}

/// The product the verified page links on to: its URL and, for "Continue to …", its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLink {
    pub url: String,
    pub host: String,
}

impl AppLink {
    /// An absolute `http(s)://host/…` URL, as given (trimmed).
    fn parse(url: &str) -> Result<AppLink, String> {
        let url = url.trim();
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or("must start with https:// (or http://)")?
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default();
        if host.is_empty()
            || url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>')
        {
            return Err("must be an absolute URL with a host, e.g. https://app.example.com/welcome".into());
        }
        Ok(AppLink { url: url.to_owned(), host: host.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::AppLink;

    #[test]
    fn an_app_url_is_absolute_http() {
        let link = AppLink::parse(" https://app.example.com/welcome ").unwrap();
        assert_eq!((link.url.as_str(), link.host.as_str()), ("https://app.example.com/welcome", "app.example.com"));
        assert_eq!(AppLink::parse("http://localhost:3000").unwrap().host, "localhost:3000");
        for bad in ["app.example.com", "javascript:alert(1)", "https://", "https:///x", "https://a b.com", "ftp://x"] {
            assert!(AppLink::parse(bad).is_err(), "{bad}");
        }
    }
}

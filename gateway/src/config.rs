use crate::link::WebLink;
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
    /// `RATE_LIMIT_STORE` (`nats` by default): where that limit counts. With `nats`, in a
    /// bucket every gateway shares, reached with `NATS_URL` and its credentials like the
    /// services (`NATS_STREAM_REPLICAS` replicas); `memory`: in each gateway alone.
    pub limit_store: Option<(verimail_server::nats::NatsConfig, usize)>,
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
    pub app: Option<WebLink>,
    /// `GATEWAY_HEADER_TIMEOUT_SECONDS` (10), `GATEWAY_REQUEST_TIMEOUT_SECONDS` (30),
    /// `GATEWAY_MAX_CONNECTIONS` (1000): see [`crate::serve`].
    pub limits: crate::serve::Limits,
    /// Every page in every language, with the brand: `GATEWAY_TEMPLATES_DIR`, `DEFAULT_LOCALE`,
    /// `BRAND_NAME`, `BRAND_COLOR`, `BRAND_LOGO_URL` (see [`pages`]). Rendered with sample data
    /// while the configuration is read, so a broken template stops the start.
    pub pages: std::sync::Arc<crate::pages::Pages>,
    /// A logo file in `GATEWAY_TEMPLATES_DIR`, served at `/brand/logo.<ext>`.
    pub logo: Option<crate::pages::Logo>,
    /// Where images may come from (Content-Security-Policy `img-src`): the gateway itself, and
    /// the origin of `BRAND_LOGO_URL`.
    pub image_sources: String,
}

/// `RATE_LIMIT_STORE`: NATS (its URL, credentials and replicas) for the shared limit, or none.
fn limit_store(vars: &Vars) -> Result<Option<(verimail_server::nats::NatsConfig, usize)>, ConfigError> {
    use verimail_server::limits::StoreKind;
    Ok(match StoreKind::from_vars(vars)? {
        StoreKind::Nats => {
            Some((verimail_server::nats::NatsConfig::from_vars(vars)?, verimail_server::nats::replicas(vars)?))
        }
        StoreKind::Memory => None,
    })
}

/// `GATEWAY_HTTP_ADDR`: where the pages are served. Alone, it is what `--health-check` reads:
/// the running gateway read its pages and the rest when it started, and a check of it must
/// not fail on a template changed since.
pub fn http_addr(vars: &Vars) -> String {
    vars.string("GATEWAY_HTTP_ADDR", "127.0.0.1:8080")
}

impl Config {
    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        let defaults = crate::serve::Limits::default();
        let app = match vars.var("APP_URL") {
            None => None,
            Some(url) => Some(WebLink::parse(&url).map_err(|e| ConfigError::new("APP_URL", e))?),
        };
        let (pages, logo, image_sources) = pages(vars, app.as_ref())?;
        Ok(Config {
            http_addr: http_addr(vars),
            user_addr: vars.string("USER_GRPC_ADDR", "127.0.0.1:50051"),
            auth_addr: vars.string("AUTH_GRPC_ADDR", "127.0.0.1:50052"),
            posts_per_client: verimail_server::limits::rate(vars, "RATE_LIMIT_GATEWAY_PER_CLIENT", "30/60")?,
            credential: verimail_server::internal::ServiceCredential::from_vars(
                vars,
                verimail_server::internal::GATEWAY_TOKEN,
            )?,
            tls: verimail_server::tls::GrpcTls::from_vars(vars)?,
            // After the credential: without it, production says that first.
            limit_store: limit_store(vars)?,
            metrics_addr: vars.string("METRICS_ADDR", "127.0.0.1:9104"),
            trusted_proxies: crate::client::TrustedProxies::parse(&vars.string("TRUSTED_PROXIES", ""))
                .map_err(|e| ConfigError::new("TRUSTED_PROXIES", e))?,
            app,
            limits: crate::serve::Limits {
                header_timeout: vars.seconds("GATEWAY_HEADER_TIMEOUT_SECONDS", defaults.header_timeout)?,
                request_timeout: vars.seconds("GATEWAY_REQUEST_TIMEOUT_SECONDS", defaults.request_timeout)?,
                max_connections: match vars.parse("GATEWAY_MAX_CONNECTIONS", defaults.max_connections)? {
                    0 => return Err(ConfigError::new("GATEWAY_MAX_CONNECTIONS", "must be at least 1")),
                    n => n,
                },
            },
            pages,
            logo,
            image_sources,
        })
    }
}

/// The pages, the logo file and the image sources, from `GATEWAY_TEMPLATES_DIR`,
/// `DEFAULT_LOCALE` (a language every page exists in), `BRAND_NAME`, `BRAND_COLOR` and
/// `BRAND_LOGO_URL` (or a logo file in the templates folder, not both).
fn pages(
    vars: &Vars,
    app: Option<&WebLink>,
) -> Result<(std::sync::Arc<crate::pages::Pages>, Option<crate::pages::Logo>, String), ConfigError> {
    use crate::pages::{Brand, BrandError, Logo, Pages, PagesError};
    const DIR: &str = "GATEWAY_TEMPLATES_DIR";
    const LOCALE: &str = "DEFAULT_LOCALE";
    const LOGO: &str = "BRAND_LOGO_URL";
    let dir = vars.var(DIR).map(std::path::PathBuf::from);
    let logo = dir.as_deref().map(Logo::find).transpose().map_err(|e| ConfigError::new(DIR, e))?.flatten();
    let logo_url = vars.var(LOGO).map(|url| WebLink::parse(&url).map_err(|e| ConfigError::new(LOGO, e))).transpose()?;
    let (src, image_sources) = match (&logo, logo_url) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(LOGO, format!("is set and {DIR} holds a logo file: use one or the other")));
        }
        (Some(file), None) => (Some(file.path.clone()), "'self'".to_owned()),
        (None, Some(url)) => {
            let scheme = if url.url.starts_with("https://") { "https" } else { "http" };
            (Some(url.url.clone()), format!("'self' {scheme}://{}", url.host))
        }
        (None, None) => (None, "'self'".to_owned()),
    };
    let brand = Brand::new(&vars.string("BRAND_NAME", "Verimail"), &vars.string("BRAND_COLOR", "#1f6feb"), src)
        .map_err(|e| match e {
            BrandError::Name(e) => ConfigError::new("BRAND_NAME", e),
            BrandError::Color(e) => ConfigError::new("BRAND_COLOR", e),
        })?;
    let locale = verimail_server::locale::parse(&vars.string(LOCALE, "en"))
        .map_err(|e| ConfigError::new(LOCALE, e))?
        .ok_or_else(|| ConfigError::new(LOCALE, "must not be empty"))?;
    let pages = match Pages::load(&locale, dir.as_deref(), &brand, app) {
        Ok(pages) => pages,
        Err(PagesError::DefaultLocale(e)) => return Err(ConfigError::new(LOCALE, e)),
        Err(PagesError::Template(e)) => return Err(ConfigError::new(DIR, e)),
    };
    Ok((std::sync::Arc::new(pages), logo, image_sources))
}

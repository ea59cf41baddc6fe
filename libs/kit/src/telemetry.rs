//! Logging set-up shared by every binary: `RUST_LOG` picks what is shown.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests start several apps) do nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,async_nats=warn,h2=warn,tower=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

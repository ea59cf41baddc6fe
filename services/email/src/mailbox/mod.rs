//! The development mailbox: with no `SMTP_URL`, email-service writes each message as an .eml
//! file under `MAIL_DIR`, and serves them here (`MAILBOX_HTTP_ADDR`, default 127.0.0.1:8025 in
//! development) so a developer opens the verification email in a browser. It refuses to run in
//! production, and a build without the `dev-mailbox` feature (the container image's) has none.

use verimail_server::config::{ConfigError, Vars};

#[cfg(feature = "dev-mailbox")]
mod server;
#[cfg(feature = "dev-mailbox")]
pub use server::Mailbox;

/// A build without the mailbox: no value of it exists, so none is ever bound or run.
#[cfg(not(feature = "dev-mailbox"))]
pub enum Mailbox {}

#[cfg(not(feature = "dev-mailbox"))]
impl Mailbox {
    pub async fn bind(_addr: &str, _dir: std::path::PathBuf) -> anyhow::Result<Mailbox> {
        anyhow::bail!("this build has no development mailbox (the dev-mailbox feature)")
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match *self {}
    }

    pub async fn run(self, _shutdown: verimail_server::shutdown::Shutdown) {
        match self {}
    }
}

/// `MAILBOX_HTTP_ADDR`: where the mailbox listens. In development without `SMTP_URL` it
/// defaults to 127.0.0.1:8025 (`off`: none); anywhere else it may not be set.
pub fn addr_from_vars(vars: &Vars, production: bool, files: bool) -> Result<Option<String>, ConfigError> {
    const NAME: &str = "MAILBOX_HTTP_ADDR";
    match vars.var(NAME) {
        Some(_) if !cfg!(feature = "dev-mailbox") => {
            Err(ConfigError::new(NAME, "this build has no development mailbox (the dev-mailbox feature)"))
        }
        Some(_) if production => Err(ConfigError::new(NAME, "the development mailbox does not run in production")),
        Some(_) if !files => {
            Err(ConfigError::new(NAME, "shows the mail written to MAIL_DIR: unset SMTP_URL to use it"))
        }
        Some(addr) if addr == "off" => Ok(None),
        Some(addr) => Ok(Some(addr)),
        None if production || !files || !cfg!(feature = "dev-mailbox") => Ok(None),
        None => Ok(Some("127.0.0.1:8025".to_owned())),
    }
}

#[cfg(all(test, feature = "dev-mailbox"))]
mod tests {
    use super::*;

    #[test]
    fn production_and_smtp_refuse_it_and_development_gets_a_default() {
        let vars = |pairs: &[(&str, &str)]| Vars::from_pairs(pairs.iter().copied());
        assert_eq!(addr_from_vars(&vars(&[]), false, true).unwrap().as_deref(), Some("127.0.0.1:8025"));
        assert_eq!(addr_from_vars(&vars(&[("MAILBOX_HTTP_ADDR", "off")]), false, true).unwrap(), None);
        assert_eq!(addr_from_vars(&vars(&[]), true, false).unwrap(), None);
        assert_eq!(addr_from_vars(&vars(&[]), false, false).unwrap(), None, "mail goes over SMTP");
        let refused = addr_from_vars(&vars(&[("MAILBOX_HTTP_ADDR", "127.0.0.1:8025")]), true, true).unwrap_err();
        assert!(refused.to_string().contains("production"), "{refused}");
        assert!(addr_from_vars(&vars(&[("MAILBOX_HTTP_ADDR", "127.0.0.1:8025")]), false, false).is_err());
    }
}

//! `EMAIL_CHECK_DNS=true`: an address whose domain cannot receive mail (no MX record and no A
//! or AAAA record, or a null MX, RFC 7505) is refused at RegisterUser and ChangeEmail. Only a
//! definite answer refuses: a resolver that times out or fails lets the address through, so a
//! DNS outage never stops sign-ups. Off by default.

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use std::net::SocketAddr;
use std::time::Duration;
use verimail_server::config::{ConfigError, Vars};

/// What DNS says of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It has a mail exchanger, or an address that serves as one.
    Receives,
    /// It cannot receive mail: why.
    NoMail(String),
    /// The resolver could not tell (timeout, server failure): the address is let through.
    Unknown(String),
}

pub struct DomainCheck {
    resolver: TokioResolver,
}

impl std::fmt::Debug for DomainCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DomainCheck")
    }
}

impl DomainCheck {
    /// `EMAIL_CHECK_DNS` (default false) and `EMAIL_DNS_SERVER` (an `ip:port` to ask instead
    /// of the system's resolvers, `/etc/resolv.conf`).
    pub fn from_vars(vars: &Vars) -> Result<Option<DomainCheck>, ConfigError> {
        let server = vars.var("EMAIL_DNS_SERVER");
        if !vars.parse("EMAIL_CHECK_DNS", false)? {
            if server.is_some() {
                return Err(ConfigError::new("EMAIL_DNS_SERVER", "is for EMAIL_CHECK_DNS=true"));
            }
            return Ok(None);
        }
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(2);
        options.attempts = 1;
        options.cache_size = 1024;
        let builder = match server {
            Some(server) => {
                let addr: SocketAddr = server
                    .parse()
                    .map_err(|_| ConfigError::new("EMAIL_DNS_SERVER", format!("{server:?} is not an ip:port")))?;
                let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], servers),
                    TokioConnectionProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| ConfigError::new("EMAIL_CHECK_DNS", format!("the system's resolvers: {e}")))?,
        };
        Ok(Some(DomainCheck { resolver: builder.with_options(options).build() }))
    }

    /// Whether `domain` can receive mail: an MX record (not a null one), else an A or AAAA
    /// record (RFC 5321's implicit MX). An IP literal (`[192.0.2.1]`) is not looked up.
    pub async fn check(&self, domain: &str) -> Answer {
        if domain.starts_with('[') {
            return Answer::Receives;
        }
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(found) => {
                let hosts: Vec<String> = found.iter().map(|mx| mx.exchange().to_ascii()).collect();
                return if hosts.iter().all(|host| host == ".") && !hosts.is_empty() {
                    Answer::NoMail(format!("{domain} says it takes no mail (null MX)"))
                } else {
                    Answer::Receives
                };
            }
            Err(e) => match negative(&e) {
                Some(Negative::NoSuchDomain) => return Answer::NoMail(format!("{domain} does not exist")),
                Some(Negative::NoData) => {}
                None => return Answer::Unknown(e.to_string()),
            },
        }
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(found) if found.iter().next().is_some() => Answer::Receives,
            Ok(_) => Answer::NoMail(format!("{domain} has no MX, A or AAAA record")),
            Err(e) if negative(&e).is_some() => Answer::NoMail(format!("{domain} has no MX, A or AAAA record")),
            Err(e) => Answer::Unknown(e.to_string()),
        }
    }
}

/// A definite "no": the name does not exist (NXDOMAIN), or has no records of the type asked
/// (NOERROR, no answer). A server failure, refusal or timeout is none of these.
enum Negative {
    NoSuchDomain,
    NoData,
}

fn negative(error: &hickory_resolver::ResolveError) -> Option<Negative> {
    use hickory_resolver::proto::ProtoErrorKind;
    use hickory_resolver::proto::op::ResponseCode;
    match error.proto().map(|proto| proto.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NXDomain, .. }) => {
            Some(Negative::NoSuchDomain)
        }
        Some(ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NoError, .. }) => Some(Negative::NoData),
        _ => None,
    }
}

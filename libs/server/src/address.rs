//! Email addresses as every service takes them in a request: one parser, so an address one
//! service accepts is one the others accept, and each bad one gets the same precise reason.

use email_address::{EmailAddress, Options};
use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 §4.5.3.1: a path is at most 256 octets including the angle brackets.
const MAX_EMAIL_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

/// A syntactically valid, normalized email address: trimmed and lower-cased, so the same
/// mailbox typed twice in different case is one user. Its [`Email::mailbox`] is the key of
/// the limits on what one inbox can be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String, String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, String> {
        let candidate = raw.trim();
        if candidate.is_empty() {
            return Err("is required".into());
        }
        if candidate.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        if candidate.len() > MAX_EMAIL_LEN {
            return Err(format!("must be at most {MAX_EMAIL_LEN} characters"));
        }
        let options = Options::default().without_display_text().with_required_tld();
        // The domain rule ("at least one dot") would reject an IP literal, which RFC 5321
        // allows, so literals are checked on their own.
        let (local, domain) = candidate.rsplit_once('@').ok_or("must contain an @")?;
        if local.is_empty() {
            return Err("must have a part before the @".into());
        }
        if local.len() > MAX_LOCAL_LEN {
            return Err(format!("the part before the @ must be at most {MAX_LOCAL_LEN} characters"));
        }
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let valid_ip = match literal.strip_prefix("IPv6:") {
                Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
                None => literal.parse::<Ipv4Addr>().is_ok(),
            };
            if !valid_ip {
                return Err("has an invalid IP address literal as its domain".into());
            }
            EmailAddress::parse_with_options(candidate, options.with_no_minimum_sub_domains())
                .map_err(|e| format!("is not a valid email address: {e}"))?;
        } else {
            EmailAddress::parse_with_options(candidate, options).map_err(|e| match e {
                email_address::Error::DomainTooFew => "must have a domain with a dot (or an IP literal)".to_owned(),
                e => format!("is not a valid email address: {e}"),
            })?;
        }
        let address = candidate.to_lowercase();
        let mailbox = crate::limits::mailbox(&address);
        Ok(Email(address, mailbox))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The inbox this address delivers to, as far as the domain's rules tell
    /// ([`crate::limits::mailbox`]): `Ann+1@Gmail.com` and `a.n.n@googlemail.com` are one.
    pub fn mailbox(&self) -> &str {
        &self.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        assert_eq!(Email::parse("a.b+tag@sub.example.org").unwrap().as_str(), "a.b+tag@sub.example.org");
    }

    #[test]
    fn ip_literal_domains_are_accepted_when_the_address_is_real() {
        assert!(Email::parse("user@[192.0.2.1]").is_ok());
        assert!(Email::parse("user@[IPv6:2001:db8::1]").is_ok());
        assert!(Email::parse("user@[192.0.2.256]").is_err());
        assert!(Email::parse("user@[not-an-ip]").is_err());
    }

    #[test]
    fn malformed_emails_are_rejected_with_a_reason() {
        for bad in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "user@",
            "user@localhost",
            "us er@example.com",
            "user@exa mple.com",
            "user@@example.com",
            "Name <user@example.com>",
            "user@example..com",
            "user\u{0}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Email::parse("user@localhost").unwrap_err(), "must have a domain with a dot (or an IP literal)");
    }

    #[test]
    fn rfc_5321_length_limits_hold() {
        let local_64 = "a".repeat(64);
        assert!(Email::parse(&format!("{local_64}@example.com")).is_ok());
        assert!(Email::parse(&format!("a{local_64}@example.com")).is_err(), "local part over 64");
        let domain = |last_label: usize| format!("{}.{}.{}", "b".repeat(63), "c".repeat(63), "d".repeat(last_label));
        let at_limit = format!("{local_64}@{}", domain(61));
        assert_eq!(at_limit.len(), 254);
        assert!(Email::parse(&at_limit).is_ok());
        let over_limit = format!("{local_64}@{}", domain(62));
        assert_eq!(over_limit.len(), 255);
        assert!(Email::parse(&over_limit).is_err(), "address over 254");
        assert!(Email::parse(&format!("a@{}.com", "b".repeat(64))).is_err(), "label over 63");
    }
}

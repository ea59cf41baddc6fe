//! Links the pages send people to, outside Verimail.

/// An absolute http(s) URL and its host: the product the verified page links on to
/// (`APP_URL`, whose host says "Continue to …"), or the brand's logo (`BRAND_LOGO_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebLink {
    pub url: String,
    pub host: String,
}

impl WebLink {
    /// An absolute `http(s)://host/…` URL, as given (trimmed).
    pub fn parse(url: &str) -> Result<WebLink, String> {
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
        if host.contains('@') {
            return Err("must not hold a user name or password before the host".into());
        }
        if !is_host_and_port(host) {
            return Err(format!(
                "{host:?} is not a host name (letters, digits, dots and dashes) or [IPv6] address, with an optional :port"
            ));
        }
        Ok(WebLink { url: url.to_owned(), host: host.to_owned() })
    }
}

/// `name[:port]` or `[v6][:port]`: the host goes into the pages' Content-Security-Policy as a
/// source, so nothing there may end a directive (`;`), add a source (a space, `,`) or hide one.
fn is_host_and_port(authority: &str) -> bool {
    let Some((host, bracketed, port)) = verimail_server::host::split(authority) else { return false };
    let host_ok = if bracketed {
        host.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        let name = host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        name && !host.is_empty() && !host.starts_with(['.', '-'])
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::WebLink;

    #[test]
    fn an_app_url_is_absolute_http() {
        let link = WebLink::parse(" https://app.example.com/welcome ").unwrap();
        assert_eq!((link.url.as_str(), link.host.as_str()), ("https://app.example.com/welcome", "app.example.com"));
        assert_eq!(WebLink::parse("http://localhost:3000").unwrap().host, "localhost:3000");
        assert_eq!(WebLink::parse("https://[::1]:8443/x").unwrap().host, "[::1]:8443");
        for bad in [
            "app.example.com",
            "javascript:alert(1)",
            "https://",
            "https:///x",
            "https://a b.com",
            "ftp://x",
            "https://cdn.example.com;script-src",
            "https://user:pw@cdn.example.com/logo.png",
            "https://x.com,evil.com/",
            "https://x.com:80x/",
            "https://x.com:/",
            "https://[nope]/",
        ] {
            assert!(WebLink::parse(bad).is_err(), "{bad}");
        }
    }
}

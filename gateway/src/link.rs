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
        Ok(WebLink { url: url.to_owned(), host: host.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::WebLink;

    #[test]
    fn an_app_url_is_absolute_http() {
        let link = WebLink::parse(" https://app.example.com/welcome ").unwrap();
        assert_eq!((link.url.as_str(), link.host.as_str()), ("https://app.example.com/welcome", "app.example.com"));
        assert_eq!(WebLink::parse("http://localhost:3000").unwrap().host, "localhost:3000");
        for bad in ["app.example.com", "javascript:alert(1)", "https://", "https:///x", "https://a b.com", "ftp://x"] {
            assert!(WebLink::parse(bad).is_err(), "{bad}");
        }
    }
}

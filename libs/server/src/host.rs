//! A host with an optional port, as a URL's authority, a `Host` header or a proxy's
//! `Forwarded: for=` writes it: `name`, `name:port`, `192.0.2.7:4711`, `[2001:db8::1]:4711`.

/// The host of `authority` (an IPv6 address without its brackets), whether it was bracketed,
/// and what follows it: `""` or `:port` when well formed (after a bracketed host, whatever
/// follows the `]`). `None` for a `[` that is never closed.
pub fn split(authority: &str) -> Option<(&str, bool, &str)> {
    match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(host, rest)| (host, true, rest)),
        None => {
            let (host, rest) = authority.split_at(authority.rfind(':').unwrap_or(authority.len()));
            Some((host, false, rest))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn hosts_split_from_their_ports() {
        assert_eq!(split("example.com"), Some(("example.com", false, "")));
        assert_eq!(split("example.com:8080"), Some(("example.com", false, ":8080")));
        assert_eq!(split("192.0.2.7:4711"), Some(("192.0.2.7", false, ":4711")));
        assert_eq!(split("[2001:db8::1]:4711"), Some(("2001:db8::1", true, ":4711")));
        assert_eq!(split("[::1]"), Some(("::1", true, "")));
        assert_eq!(split("[::1"), None);
        assert_eq!(split("a:b:80"), Some(("a:b", false, ":80")));
    }
}

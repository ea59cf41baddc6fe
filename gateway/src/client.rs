//! Who the client is. Behind a proxy or load balancer every request comes from the proxy's
//! address, so limits keyed on the TCP peer would put every user in one bucket; but a header
//! naming the client is only as good as whoever set it. `TRUSTED_PROXIES` lists the proxies
//! (CIDRs) whose `X-Forwarded-For` (or, without it, `Forwarded`) is believed: the client is
//! the rightmost address in the chain that is not a trusted proxy. From any other peer the
//! headers are ignored and the peer is the client.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Comma-separated CIDRs or single addresses (`10.0.0.0/8, 192.0.2.7`); empty trusts none.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let nets = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an address or a CIDR such as 10.0.0.0/8"))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that `peer` sent with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        let mut client = peer;
        for hop in chain.iter().rev() {
            match hop {
                // A hop that is not an address: nothing left of it can be believed.
                None => break,
                Some(ip) => {
                    client = *ip;
                    if !self.trusts(*ip) {
                        break;
                    }
                }
            }
        }
        client
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The addresses the proxies recorded, first hop first: every `X-Forwarded-For` header in
/// order, else the `for=` of every `Forwarded` element. `None` for a hop that is no address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    };
    let xff = values("x-forwarded-for");
    if !xff.is_empty() {
        return xff.iter().flat_map(|v| v.split(',')).map(|hop| address(hop.trim())).collect();
    }
    values("forwarded")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|element| {
            let value = element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
                .map(|(_, value)| value.trim().trim_matches('"'))?;
            address(value)
        })
        .collect()
}

/// An address as proxies write it: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`.
fn address(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    match verimail_server::host::split(text)? {
        (ip, true, _) => ip.parse().ok().map(canonical),
        (ip, false, port) if !port.is_empty() => ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn headers_count_only_from_a_trusted_proxy() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.0.2.7").unwrap();
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(proxies.client(ip("10.1.2.3"), &forwarded), ip("203.0.113.9"));
        assert_eq!(proxies.client(ip("192.0.2.7"), &forwarded), ip("203.0.113.9"));
        assert_eq!(proxies.client(ip("198.51.100.1"), &forwarded), ip("198.51.100.1"), "a stranger's header");
        assert_eq!(TrustedProxies::default().client(ip("10.1.2.3"), &forwarded), ip("10.1.2.3"), "none trusted");
        assert_eq!(proxies.client(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"), "no header");
    }

    #[test]
    fn the_client_is_the_rightmost_hop_no_trusted_proxy_added() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client made up the first entry; our proxies appended the rest.
        let chain = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &chain), ip("203.0.113.9"));
        let split = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "203.0.113.9:5555")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &split), ip("203.0.113.9"));
        let garbage = headers(&[("x-forwarded-for", "203.0.113.9, not-an-address")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &garbage), ip("10.0.0.1"), "a broken chain is not believed");
        let all_ours = headers(&[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &all_ours), ip("10.0.0.3"));
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let v6 = headers(&[("forwarded", "for=192.0.2.60;proto=https, for=\"[2001:db8:cafe::17]:4711\";by=10.0.0.1")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &v6), ip("2001:db8:cafe::17"));
        let mapped = headers(&[("x-forwarded-for", "::ffff:203.0.113.9")]);
        assert_eq!(proxies.client(ip("::ffff:10.0.0.1"), &mapped), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_proxies_are_read_strictly() {
        assert!(TrustedProxies::parse("").unwrap().0.is_empty());
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.internal").is_err());
        assert_eq!(TrustedProxies::parse("::1, 127.0.0.0/8").unwrap().0.len(), 2);
    }
}

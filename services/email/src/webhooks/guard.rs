//! Where webhooks may go: an endpoint's URL is checked when it is registered, and every address
//! its name resolves to is checked on every connection (so a name that later resolves to the
//! inside, DNS rebinding, reaches nothing), against loopback, private, link-local (the cloud
//! metadata service at 169.254.169.254 among them), shared, documentation, multicast and
//! reserved ranges, unless `WEBHOOK_ALLOW_PRIVATE_NETWORKS` lets them through. Redirects are
//! never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// A URL an endpoint may have: http or https, a host, no credentials in it; with
/// `allow_private` false, no address literal of a non-public range.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("{}: only https (or http) URLs take webhooks", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL would be logged: put them in a path or a query instead".into());
    }
    if url.fragment().is_some() {
        return Err("a fragment is never sent: leave it out".into());
    }
    if raw.len() > 2000 {
        return Err("longer than 2000 characters".into());
    }
    let ip = match url.host() {
        None => return Err("no host".into()),
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !allow_private && (name == "localhost" || name.ends_with(".localhost")) {
                return Err(format!("{name} is this machine: not a place webhooks go"));
            }
            None
        }
    };
    if let Some(ip) = ip
        && !allow_private
        && !is_public(ip)
    {
        return Err(format!("{ip} is not a public address: not a place webhooks go"));
    }
    Ok(url)
}

/// Whether `ip` is on the public internet (not loopback, private, link-local, shared,
/// documentation, benchmarking, multicast, reserved, or IPv4 in an IPv6 disguise of those).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                   // "this network"
        || a == 10                             // private
        || a == 127                            // loopback
        || (a == 100 && (64..128).contains(&b)) // shared (carrier-grade NAT)
        || (a == 169 && b == 254)              // link-local, the metadata service
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0)      // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)      // documentation
        || (a == 192 && b == 168)              // private
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100)   // documentation
        || (a == 203 && b == 0 && c == 113)    // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00        // unique local
        || (s[0] & 0xffc0) == 0xfe80        // link-local
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || s[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inside_is_refused_and_the_outside_taken() {
        for refused in [
            "http://127.0.0.1/hook",
            "http://127.1.2.3:8080/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://localhost:8080/",
            "http://api.localhost/",
            "ftp://example.com/",
            "https://user:pass@example.com/",
            "not a url",
        ] {
            assert!(check_url(refused, false).is_err(), "{refused} was taken");
        }
        for taken in
            ["https://example.com/hooks/verimail", "http://93.184.215.14:8080/x?y=1", "https://[2606:2800::1]/"]
        {
            assert!(check_url(taken, false).is_ok(), "{taken}: {:?}", check_url(taken, false));
        }
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok(), "the tests' switch");
    }
}

//! IP rules: CIDR lists (IPv4 and IPv6) for allow/deny and trusted proxies, and the client IP as
//! the gateway sees it (the peer, or a forwarded header when the peer is a trusted proxy).

use std::net::IpAddr;

/// One CIDR block; IPv4 addresses are held as IPv4-mapped IPv6 so one comparison serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    mask: u128,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single host).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u32 = match len {
            None => max,
            Some(l) => match l.trim().parse::<u32>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}` has a prefix length outside 0..={max}")),
            },
        };
        // IPv4 prefixes sit in the low 32 bits of the mapped form.
        let bits = if ip.is_ipv4() { 96 + len } else { len };
        let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
        let net = to_u128(ip) & mask;
        if net != to_u128(ip) {
            return Err(format!("`{s}` has host bits set; write the network address"));
        }
        Ok(Cidr { net, mask })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        to_u128(ip) & self.mask == self.net
    }
}

/// A list of CIDR blocks, scanned linearly (lists are short; a few dozen entries scan in well
/// under a microsecond).
#[derive(Debug, Clone, Default)]
pub struct IpList(pub Vec<Cidr>);

impl IpList {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Allow and deny lists: deny wins; a non-empty allow list admits only its members.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    pub allow: IpList,
    pub deny: IpList,
}

impl IpRules {
    pub fn admits(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// forwarded header is read from the right, skipping trusted proxies, and the first untrusted
/// address is the client (a client cannot forge entries to the right of its own).
pub fn client_ip(peer: IpAddr, trusted: &IpList, forwarded: Option<&[u8]>) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let Some(header) = forwarded else { return peer };
    let mut client = peer;
    for item in header.rsplit(|&b| b == b',') {
        let text = std::str::from_utf8(item).unwrap_or("").trim();
        let Ok(ip) = text.parse::<IpAddr>() else { break };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "::1", false),
            ("2001:db8::/32", "2001:db8:1::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::/0", "::1", true),
            ("10.0.0.0/8", "::ffff:10.9.9.9", true),
        ];
        for &(cidr, ip, want) in cases {
            let c = Cidr::parse(cidr).unwrap();
            assert_eq!(c.contains(ip.parse().unwrap()), want, "{cidr} ∋ {ip}");
        }
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "x", "::/129", "1.2.3.4/-1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_ip_is_taken_from_the_right_of_trusted_hops() {
        let trusted = IpList(vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("203.0.113.9", Some("1.2.3.4"), "203.0.113.9"),
            ("10.0.0.1", Some("1.2.3.4"), "1.2.3.4"),
            ("10.0.0.1", Some("6.6.6.6, 1.2.3.4"), "1.2.3.4"),
            ("10.0.0.1", Some("6.6.6.6, 1.2.3.4, 10.0.0.2"), "1.2.3.4"),
            ("10.0.0.1", Some("garbage, 1.2.3.4"), "1.2.3.4"),
            ("10.0.0.1", Some("1.2.3.4, garbage"), "10.0.0.1"),
            ("10.0.0.1", None, "10.0.0.1"),
        ];
        for &(peer, header, want) in cases {
            assert_eq!(client_ip(ip(peer), &trusted, header.map(str::as_bytes)), ip(want), "{peer} {header:?}");
        }
    }
}

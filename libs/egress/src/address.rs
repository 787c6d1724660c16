//! Which IP addresses an outbound call may reach: public unicast only.
//!
//! IPv4 refuses every special-purpose block of the IANA registry that is not
//! globally reachable (RFC 6890 and successors); IPv6 accepts only global
//! unicast (`2000::/3`) minus its special blocks, and judges addresses that
//! embed an IPv4 address (mapped, NAT64, 6to4) by that address — so
//! `::ffff:127.0.0.1` is loopback, not "some IPv6 host".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused (a fixed class name, safe to log and return).
pub fn refused_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const BLOCKS: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "this_network"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared_cgnat"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link_local_metadata"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "ietf_protocol"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "relay_6to4"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved_broadcast"),
    ];
    BLOCKS.iter().find(|(net, prefix, _)| in_v4(ip, *net, *prefix)).map(|(_, _, class)| *class)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    u128::from(ip) & mask == u128::from(net) & mask
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    // Addresses that carry an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        // NAT64 well-known prefix (RFC 6052): the low 32 bits are the IPv4 target.
        #[allow(clippy::cast_possible_truncation, reason = "deliberately the low 32 bits")]
        return refused_v4(Ipv4Addr::from(bits as u32));
    }
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        // 6to4 (RFC 3056): bits 16..48 are the IPv4 address.
        #[allow(clippy::cast_possible_truncation, reason = "deliberately 32 bits")]
        return refused_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Everything outside global unicast: IPv4-compatible (::/96), unique local
    // (fc00::/7), link-local (fe80::/10), site-local, multicast, discard …
    if !in_v6(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return Some(if in_v6(ip, Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7) {
            "unique_local"
        } else if in_v6(ip, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10) {
            "link_local"
        } else if in_v6(ip, Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8) {
            "multicast"
        } else {
            "not_global_unicast"
        });
    }
    const BLOCKS: &[(Ipv6Addr, u32, &str)] = &[
        (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, "teredo"),
        (Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0), 48, "benchmarking"),
        (Ipv6Addr::new(0x2001, 0x10, 0, 0, 0, 0, 0, 0), 28, "orchid"),
        (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28, "orchid"),
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, "documentation"),
        (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "documentation"),
    ];
    BLOCKS.iter().find(|(net, prefix, _)| in_v6(ip, *net, *prefix)).map(|(_, _, class)| *class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_purpose_class_is_refused() {
        for (ip, class) in [
            ("0.0.0.0", "this_network"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "shared_cgnat"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", "link_local_metadata"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.170", "ietf_protocol"),
            ("192.0.2.1", "documentation"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved_broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link_local_metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link_local_metadata"),
            ("2002:7f00:1::", "loopback"),
            ("::127.0.0.1", "not_global_unicast"),
            ("fd00::1", "unique_local"),
            ("fc00::1", "unique_local"),
            ("fe80::1", "link_local"),
            ("ff02::1", "multicast"),
            ("100::1", "not_global_unicast"),
            ("2001::1", "teredo"),
            ("2001:db8::1", "documentation"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(refused_class(ip), Some(class), "{ip}");
        }
    }

    #[test]
    fn public_unicast_is_allowed() {
        for ip in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(refused_class(ip), None, "{ip}");
        }
    }
}

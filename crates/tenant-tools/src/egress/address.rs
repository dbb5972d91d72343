//! Which addresses are internal: the IANA special-purpose registries
//! (IPv4 and IPv6) minus the blocks they mark globally reachable, plus
//! cloud metadata endpoints, looking through every IPv6 form that embeds
//! an IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 blocks tools must not reach by default: the special-purpose
/// registry's blocks that are not globally reachable, multicast, and
/// metadata endpoints on public addresses.
const V4_INTERNAL: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),        // "this network"
    ([10, 0, 0, 0], 8),       // private
    ([100, 64, 0, 0], 10),    // shared address space (CGNAT; Alibaba metadata 100.100.100.200)
    ([127, 0, 0, 0], 8),      // loopback
    ([169, 254, 0, 0], 16), // link local (AWS/GCP/Azure/OCI metadata 169.254.169.254, ECS 169.254.170.2)
    ([172, 16, 0, 0], 12),  // private
    ([192, 0, 0, 0], 24),   // IETF protocol assignments (incl. 192.0.0.192 OCI metadata)
    ([192, 0, 2, 0], 24),   // TEST-NET-1
    ([192, 88, 99, 0], 24), // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16), // private
    ([198, 18, 0, 0], 15),  // benchmarking
    ([198, 51, 100, 0], 24), // TEST-NET-2
    ([203, 0, 113, 0], 24), // TEST-NET-3
    ([224, 0, 0, 0], 4),    // multicast
    ([240, 0, 0, 0], 4),    // reserved, incl. limited broadcast
    ([168, 63, 129, 16], 32), // Azure wire server / metadata
];

/// IPv6 blocks internal outright (those embedding IPv4 are handled apart).
const V6_INTERNAL: &[([u16; 8], u8)] = &[
    ([0, 0, 0, 0, 0, 0, 0, 0], 128),         // unspecified
    ([0, 0, 0, 0, 0, 0, 0, 1], 128),         // loopback
    ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),  // local-use IPv4/IPv6 translation
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),      // discard-only
    ([0x100, 0, 0, 1, 0, 0, 0, 0], 64),      // dummy prefix
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),     // IETF protocol assignments (incl. Teredo 2001::/32)
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),     // 6to4
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),     // documentation
    ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),     // segment routing SIDs
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),      // unique local (incl. fd00:ec2::254 metadata)
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),     // link local
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),     // site local (deprecated)
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),      // multicast
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// Whether `ip` lies in a range tools must not reach by default.
pub fn is_internal_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    V4_INTERNAL.iter().any(|&(net, len)| in_v4(ip, net, len))
}

/// The IPv4 address an IPv6 address carries, for the forms that carry
/// one: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// IPv4-translated (`::ffff:0:a.b.c.d`) and the NAT64 well-known prefix
/// (`64:ff9b::a.b.c.d`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        [0, 0, 0, 0, 0, 0, _, _] => Some(tail),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        _ => None,
    }
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        // Whatever it embeds, the IPv4-compatible form is deprecated and
        // the others only reach what the IPv4 address reaches.
        return is_internal_v4(v4) || ip.segments()[..6] == [0; 6];
    }
    V6_INTERNAL.iter().any(|&(net, len)| in_v6(ip, net, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_purpose_and_metadata_addresses_are_internal() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.170.2",
            "100.100.100.200",
            "168.63.129.16",
            "192.0.0.192",
            "0.0.0.0",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:0:10.0.0.1",
            "::ffff:0:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1.2.3.4",
            "2002:7f00:1::",
            "2002:0808:0808::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "5f00::1",
        ] {
            assert!(is_internal_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_not_internal() {
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "168.63.129.17",
            "2606:2800:220:1::1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!is_internal_address(ip.parse().unwrap()), "{ip}");
        }
    }
}

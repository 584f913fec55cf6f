//! The Service FQDN grammar (seed: "Improving Address Efficiency").
//!
//! `tcp22.hosta.gwa.demo` names (transport, port) on a host; a query for it
//! reserves only (R, proto, port), so many SFQDNs share one public address.
//! Explicit names (`ssh.hosta` → tcp/22) come from the configuration.

use std::fmt;

/// Transport protocol of a service name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Proto {
    Tcp,
    Udp,
}

impl L4Proto {
    /// IP protocol number: 6 for TCP, 17 for UDP.
    pub fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
        }
    }

    /// The protocol for an IP protocol number, if it is TCP or UDP.
    pub fn from_number(n: u8) -> Option<L4Proto> {
        match n {
            6 => Some(L4Proto::Tcp),
            17 => Some(L4Proto::Udp),
            _ => None,
        }
    }

    /// Lower-case name, as used in SFQDN labels (`tcp22`, `udp53`).
    pub fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for L4Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// (transport, port) of a service FQDN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub proto: L4Proto,
    pub port: u16,
}

/// Parses a built-in service label: `tcp<port>` or `udp<port>`, port 1..=65535
/// in canonical decimal (no sign, no leading zero), so each service has exactly
/// one name. Case-insensitive.
pub fn parse_port_label(label: &str) -> Option<ServiceKey> {
    let bytes = label.as_bytes();
    if bytes.len() < 4 || bytes.len() > 8 {
        return None;
    }
    let proto = match &bytes[..3] {
        p if p.eq_ignore_ascii_case(b"tcp") => L4Proto::Tcp,
        p if p.eq_ignore_ascii_case(b"udp") => L4Proto::Udp,
        _ => return None,
    };
    let digits = &label[3..];
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    let port: u16 = digits.parse().ok()?;
    Some(ServiceKey { proto, port })
}

/// Parses the transport label of an SRV owner name: `_tcp` / `_udp`.
pub fn parse_srv_proto_label(label: &str) -> Option<L4Proto> {
    if label.eq_ignore_ascii_case("_tcp") {
        Some(L4Proto::Tcp)
    } else if label.eq_ignore_ascii_case("_udp") {
        Some(L4Proto::Udp)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_labels() {
        assert_eq!(
            parse_port_label("tcp22"),
            Some(ServiceKey {
                proto: L4Proto::Tcp,
                port: 22
            })
        );
        assert_eq!(
            parse_port_label("UDP5060"),
            Some(ServiceKey {
                proto: L4Proto::Udp,
                port: 5060
            })
        );
        assert_eq!(parse_port_label("tcp65535").map(|k| k.port), Some(65535));
        for bad in [
            "tcp",
            "tcp0",
            "tcp022",
            "tcp65536",
            "tcp+22",
            "tcp-1",
            "sctp22",
            "tcp22x",
            "tcp 22",
            "tcp99999999",
        ] {
            assert_eq!(parse_port_label(bad), None, "{bad}");
        }
    }

    #[test]
    fn srv_labels() {
        assert_eq!(parse_srv_proto_label("_TCP"), Some(L4Proto::Tcp));
        assert_eq!(parse_srv_proto_label("_udp"), Some(L4Proto::Udp));
        assert_eq!(parse_srv_proto_label("tcp"), None);
    }
}

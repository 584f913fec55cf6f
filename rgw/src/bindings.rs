//! Live bindings for `rgw bindings`: conntrack entries of claimed flows
//! (original destination a pool address, translated to a private host).
//! Sans-IO: parses the text of `conntrack -L`.

use std::net::Ipv4Addr;

/// One claimed flow as conntrack carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub proto: String,
    /// Seconds conntrack keeps the entry without traffic.
    pub timeout: u64,
    pub state: Option<String>,
    pub remote: Ipv4Addr,
    pub remote_port: Option<u16>,
    pub public: Ipv4Addr,
    pub public_port: Option<u16>,
    pub private: Ipv4Addr,
    pub private_port: Option<u16>,
}

/// Parses one `conntrack -L` line; None when it is not an IPv4 entry or not
/// translated (the reply's source equals the original destination).
pub fn parse_line(line: &str) -> Option<Binding> {
    let mut words = line.split_whitespace();
    let proto = words.next()?.to_string();
    let _number = words.next()?;
    let timeout: u64 = words.next()?.parse().ok()?;
    let rest: Vec<&str> = words.collect();
    let state = rest
        .first()
        .filter(|w| !w.contains('=') && !w.starts_with('['))
        .map(|w| w.to_string());
    // key=value pairs: the first of each key is the original direction, the second the reply.
    let kv = |key: &str, nth: usize| -> Option<&str> {
        rest.iter()
            .filter_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .nth(nth)
    };
    let addr = |key: &str, nth: usize| kv(key, nth)?.parse::<Ipv4Addr>().ok();
    let port = |key: &str, nth: usize| kv(key, nth).and_then(|v| v.parse::<u16>().ok());
    let (remote, public) = (addr("src", 0)?, addr("dst", 0)?);
    let private = addr("src", 1)?;
    if private == public {
        return None;
    }
    Some(Binding {
        proto,
        timeout,
        state,
        remote,
        remote_port: port("sport", 0),
        public,
        public_port: port("dport", 0),
        private,
        private_port: port("sport", 1),
    })
}

/// The claimed flows in a dump whose public address is in the pool.
pub fn claimed(dump: &str, in_pool: impl Fn(Ipv4Addr) -> bool) -> Vec<Binding> {
    dump.lines()
        .filter_map(parse_line)
        .filter(|b| in_pool(b.public))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
tcp      6 431995 ESTABLISHED src=203.0.113.10 dst=198.51.100.17 sport=45678 dport=8 src=192.168.0.101 dst=203.0.113.10 sport=8 dport=45678 [ASSURED] mark=0 use=1
udp      17 28 src=203.0.113.10 dst=198.51.100.18 sport=5000 dport=7 src=192.168.0.102 dst=203.0.113.10 sport=7 dport=5000 mark=0 use=1
icmp     1 29 src=203.0.113.10 dst=198.51.100.19 type=8 code=0 id=77 src=192.168.0.101 dst=203.0.113.10 type=0 code=0 id=77 mark=0 use=1
tcp      6 117 TIME_WAIT src=192.168.0.101 dst=203.0.113.80 sport=40000 dport=80 src=203.0.113.80 dst=198.51.100.2 sport=80 dport=40000 [ASSURED] mark=0 use=1
udp      17 25 src=198.51.100.2 dst=203.0.113.54 sport=33333 dport=53 src=203.0.113.54 dst=198.51.100.2 sport=53 dport=33333 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 5 flow entries have been shown.
";

    #[test]
    fn claimed_flows_only() {
        let pool = |a: Ipv4Addr| a.octets()[..3] == [198, 51, 100] && a.octets()[3] >= 16;
        let b = claimed(DUMP, pool);
        assert_eq!(b.len(), 3, "{b:?}");
        assert_eq!(b[0].state.as_deref(), Some("ESTABLISHED"));
        assert_eq!(
            (
                b[0].public,
                b[0].public_port,
                b[0].private,
                b[0].private_port
            ),
            (
                "198.51.100.17".parse().expect("ip"),
                Some(8),
                "192.168.0.101".parse().expect("ip"),
                Some(8)
            )
        );
        assert_eq!(
            (b[1].proto.as_str(), b[1].state.as_deref(), b[1].timeout),
            ("udp", None, 28)
        );
        assert_eq!((b[2].proto.as_str(), b[2].public_port), ("icmp", None));
    }

    #[test]
    fn junk_is_ignored() {
        for l in [
            "",
            "tcp",
            "tcp 6 x",
            "tcp 6 5 src=1.2.3.4",
            "ipv6 10 tcp 6 5 src=::1 dst=::1",
        ] {
            assert_eq!(parse_line(l), None, "{l}");
        }
    }
}

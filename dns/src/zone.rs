//! The zone the gateway is authoritative for, and how a query name maps onto it.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

use crate::sfqdn::{parse_port_label, parse_srv_proto_label, ServiceKey};

/// A private host behind the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Lower-case single label.
    pub name: String,
    /// For an IPv6-only host (RGW64): its static proxy IPv4 address.
    pub ipv4: Ipv4Addr,
    /// The host's IPv6 address (AAAA on the private view; on the public view
    /// only when it is globally reachable, see `answer.rs`).
    pub ipv6: Option<Ipv6Addr>,
    /// Explicit service names (`ssh` → tcp/22).
    pub services: BTreeMap<String, ServiceKey>,
}

/// Static data of the zone. Names are stored lower-case.
#[derive(Debug, Clone)]
pub struct ZoneData {
    pub apex: Name,
    pub ns_name: Name,
    pub ns_addr: Ipv4Addr,
    pub hostmaster: Name,
    pub serial: u32,
    /// TTL of static records (SOA, NS, glue, private-view answers).
    pub static_ttl: u32,
    /// SOA minimum: how long resolvers cache NXDOMAIN/NODATA (RFC 2308).
    pub negative_ttl: u32,
    hosts: Vec<Host>,
    by_name: HashMap<String, usize>,
    /// Labels of `ns_name` below the apex, lower-case (usually `["ns"]`).
    ns_rel: Vec<String>,
    /// Whether `www.<host>` names exist (the web proxy is on).
    pub www: bool,
}

/// What a query name is, relative to the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Not at or below the apex.
    OutOfZone,
    Apex,
    /// The zone's own name server (its address is the glue).
    NameServer,
    /// A host (`hosta`) or a service FQDN of it (`tcp22.hosta`, `ssh.hosta`).
    Host {
        host: usize,
        service: Option<ServiceKey>,
    },
    /// `www.hosta`: the host's web site, served through the gateway's proxy
    /// at the service address (seed: "Web servers in private hosts").
    Www {
        host: usize,
    },
    /// `_ssh._tcp.hosta`: an SRV owner for an explicit service. `label` is the
    /// explicit service label, whose SFQDN is the SRV target.
    Srv {
        host: usize,
        service: ServiceKey,
        label: String,
    },
    /// A name with no records that has names below it (`_tcp.hosta` when
    /// `_ssh._tcp.hosta` exists): NODATA, not NXDOMAIN (RFC 8020).
    EmptyNonTerminal,
    /// Inside the zone, but no such name.
    NxDomain,
}

/// The zone's own parameters (apex, name server, SOA values).
#[derive(Debug, Clone)]
pub struct ZoneSettings {
    pub apex: Name,
    pub ns_name: Name,
    pub ns_addr: Ipv4Addr,
    pub hostmaster: Name,
    pub serial: u32,
    pub static_ttl: u32,
    pub negative_ttl: u32,
}

impl ZoneData {
    pub fn new(settings: ZoneSettings, hosts: Vec<Host>) -> Self {
        let ZoneSettings {
            apex,
            ns_name,
            ns_addr,
            hostmaster,
            serial,
            static_ttl,
            negative_ttl,
        } = settings;
        let apex = apex.to_lowercase();
        let ns_name = ns_name.to_lowercase();
        // An empty name is a vacant slot (a host removed by a reload): never answered.
        let by_name = hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.name.is_empty())
            .map(|(i, h)| (h.name.to_ascii_lowercase(), i))
            .collect();
        let ns_rel = relative_labels(&apex, &ns_name).unwrap_or_default();
        ZoneData {
            apex,
            ns_name,
            ns_addr,
            hostmaster: hostmaster.to_lowercase(),
            serial,
            static_ttl,
            negative_ttl,
            hosts,
            by_name,
            ns_rel,
            www: false,
        }
    }

    pub fn host(&self, idx: usize) -> Option<&Host> {
        self.hosts.get(idx)
    }

    /// Classifies `qname` (any case).
    pub fn lookup(&self, qname: &Name) -> Lookup {
        let Some(rel) = relative_labels(&self.apex, qname) else {
            return Lookup::OutOfZone;
        };
        if rel.is_empty() {
            return Lookup::Apex;
        }
        if rel == self.ns_rel {
            return Lookup::NameServer;
        }
        if rel.len() < self.ns_rel.len() && self.ns_rel.ends_with(&rel) {
            return Lookup::EmptyNonTerminal;
        }
        // Labels are leftmost first: [service?, host] or [_svc, _proto, host].
        let host_label = &rel[rel.len() - 1];
        let Some(&host) = self.by_name.get(host_label.as_str()) else {
            return Lookup::NxDomain;
        };
        match rel.len() {
            1 => Lookup::Host {
                host,
                service: None,
            },
            2 if parse_srv_proto_label(&rel[0]).is_some() => {
                let proto = parse_srv_proto_label(&rel[0]);
                if self.hosts[host]
                    .services
                    .values()
                    .any(|k| Some(k.proto) == proto)
                {
                    Lookup::EmptyNonTerminal
                } else {
                    Lookup::NxDomain
                }
            }
            2 if self.www && rel[0] == "www" => Lookup::Www { host },
            2 => {
                let label = &rel[0];
                let service = parse_port_label(label)
                    .or_else(|| self.hosts[host].services.get(label.as_str()).copied());
                match service {
                    Some(service) => Lookup::Host {
                        host,
                        service: Some(service),
                    },
                    None => Lookup::NxDomain,
                }
            }
            3 => {
                let (svc, proto) = (&rel[0], &rel[1]);
                let Some(name) = svc.strip_prefix('_') else {
                    return Lookup::NxDomain;
                };
                match (
                    parse_srv_proto_label(proto),
                    self.hosts[host].services.get(name),
                ) {
                    (Some(p), Some(key)) if key.proto == p => Lookup::Srv {
                        host,
                        service: *key,
                        label: name.to_string(),
                    },
                    _ => Lookup::NxDomain,
                }
            }
            _ => Lookup::NxDomain,
        }
    }
}

/// The labels of `name` below `apex`, lower-case, leftmost first; None when
/// `name` is not at or below `apex`.
fn relative_labels(apex: &Name, name: &Name) -> Option<Vec<String>> {
    if !apex.zone_of(name) {
        return None;
    }
    let n = name.num_labels().checked_sub(apex.num_labels())? as usize;
    Some(
        name.iter()
            .take(n)
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sfqdn::L4Proto;

    pub(crate) fn demo_zone() -> ZoneData {
        let n = |s: &str| Name::from_ascii(s).expect("valid test name");
        let mut services = BTreeMap::new();
        services.insert(
            "ssh".to_string(),
            ServiceKey {
                proto: L4Proto::Tcp,
                port: 22,
            },
        );
        services.insert(
            "sip".to_string(),
            ServiceKey {
                proto: L4Proto::Udp,
                port: 5060,
            },
        );
        ZoneData::new(
            ZoneSettings {
                apex: n("gwa.demo."),
                ns_name: n("ns.gwa.demo."),
                ns_addr: Ipv4Addr::new(198, 51, 100, 2),
                hostmaster: n("hostmaster.gwa.demo."),
                serial: 7,
                static_ttl: 60,
                negative_ttl: 30,
            },
            vec![
                Host {
                    name: "hosta".into(),
                    ipv4: Ipv4Addr::new(192, 168, 0, 101),
                    ipv6: None,
                    services,
                },
                Host {
                    name: "hostb".into(),
                    ipv4: Ipv4Addr::new(192, 168, 0, 102),
                    ipv6: Some(Ipv6Addr::new(0xfd00, 0x192, 0x168, 0, 0, 0, 0, 0x102)),
                    services: BTreeMap::new(),
                },
            ],
        )
    }

    #[test]
    fn lookups() {
        let z = demo_zone();
        let l = |s: &str| z.lookup(&Name::from_ascii(s).expect("valid test name"));
        assert_eq!(l("gwa.demo."), Lookup::Apex);
        assert_eq!(l("GWA.Demo."), Lookup::Apex);
        assert_eq!(l("ns.gwa.demo."), Lookup::NameServer);
        assert_eq!(
            l("hosta.gwa.demo."),
            Lookup::Host {
                host: 0,
                service: None
            }
        );
        assert_eq!(
            l("HostB.gwa.demo."),
            Lookup::Host {
                host: 1,
                service: None
            }
        );
        let ssh = ServiceKey {
            proto: L4Proto::Tcp,
            port: 22,
        };
        let tcp22 = Some(ssh);
        assert_eq!(
            l("tcp22.hosta.gwa.demo."),
            Lookup::Host {
                host: 0,
                service: tcp22
            }
        );
        assert_eq!(
            l("ssh.hosta.gwa.demo."),
            Lookup::Host {
                host: 0,
                service: tcp22
            }
        );
        assert_eq!(
            l("ssh.hostb.gwa.demo."),
            Lookup::NxDomain,
            "hostb has no explicit ssh"
        );
        assert_eq!(
            l("udp53.hostb.gwa.demo."),
            Lookup::Host {
                host: 1,
                service: Some(ServiceKey {
                    proto: L4Proto::Udp,
                    port: 53
                })
            }
        );
        assert_eq!(
            l("_ssh._tcp.hosta.gwa.demo."),
            Lookup::Srv {
                host: 0,
                service: ssh,
                label: "ssh".into()
            }
        );
        assert_eq!(
            l("_ssh._udp.hosta.gwa.demo."),
            Lookup::NxDomain,
            "wrong transport"
        );
        assert_eq!(l("_tcp.hosta.gwa.demo."), Lookup::EmptyNonTerminal);
        assert_eq!(
            l("_udp.hosta.gwa.demo."),
            Lookup::EmptyNonTerminal,
            "sip is udp/5060"
        );
        assert_eq!(
            l("_udp.hostb.gwa.demo."),
            Lookup::NxDomain,
            "hostb has no services"
        );
        assert_eq!(l("tcp0.hosta.gwa.demo."), Lookup::NxDomain);
        assert_eq!(
            l("www.hosta.gwa.demo."),
            Lookup::NxDomain,
            "no proxy, no www names"
        );
        let mut zw = z.clone();
        zw.www = true;
        assert_eq!(
            zw.lookup(&Name::from_ascii("WWW.hostb.gwa.demo.").expect("name")),
            Lookup::Www { host: 1 }
        );
        assert_eq!(l("x.tcp22.hosta.gwa.demo."), Lookup::NxDomain);
        assert_eq!(l("hostc.gwa.demo."), Lookup::NxDomain);
        assert_eq!(l("gwa.demo.example."), Lookup::OutOfZone);
        assert_eq!(l("demo."), Lookup::OutOfZone);
        assert_eq!(l("xgwa.demo."), Lookup::OutOfZone);
    }
}

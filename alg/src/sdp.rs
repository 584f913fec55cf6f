//! SDP (RFC 4566) rewriting for the SIP and RTSP gateways: the private
//! host's address in `c=`, `o=`, `a=rtcp:` and `a=control:` URLs becomes the
//! public one, and (for SIP offers and answers) every RTP media stream gets
//! public ports and the pinholes that admit the peer's media.
//!
//! Only addresses equal to the flow's private address are rewritten; any
//! other address (another host, `0.0.0.0` for hold, multicast) is left as it
//! is, and so are its media lines. `IN IP6` is left unchanged: [`map_address`]
//! is the one place where a family conversion (RGW64) would go.
//!
//! Media (`m=`) handling, when [`SdpPolicy::media_pinholes`] is set:
//! - a stream is handled when its port is not 0, it has no `/<count>` port
//!   range, its transport is UDP-based (`RTP/*`, `UDP/*`, `udptl`) and its
//!   connection address (media-level `c=`, else session-level) is the private
//!   address;
//! - public ports come from [`PortAlloc`] for the RTP port and for the RTCP
//!   port (`a=rtcp:` of RFC 3605 when present, else RTP + 1; RTP transports
//!   only); the `m=` port and the `a=rtcp:` port are rewritten when they
//!   change; when RTCP is implicit and its public port is not the public RTP
//!   port + 1, an `a=rtcp:` line is added at the end of the media section so
//!   the peer does not send RTCP to a port nobody opened;
//! - one pinhole per port, from the signalling peer (the media peer is in the
//!   other side's SDP, which this module does not see), UDP (the engine
//!   sets their lifetime); `snat` when the private host is a server reached
//!   through a pool address ([`Role::PrivateServer`]), so its own RTP leaves
//!   with that address.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use crate::sip::text::{self, Edits};
use crate::{FlowAddrs, Pinhole, Pinhole6, PortAlloc, Role, Transport};

/// What to do with the media of an SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpPolicy {
    /// Allocate public ports for the media streams, rewrite `m=` ports and
    /// produce pinholes (SIP). Off for RTSP, whose media ports are
    /// negotiated in SETUP: only addresses are rewritten then.
    pub media_pinholes: bool,
}

/// Outcome of [`rewrite`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdpRewrite {
    /// The new body, `None` when nothing changed.
    pub body: Option<Vec<u8>>,
    /// Pinholes for the media streams (empty without `media_pinholes`).
    pub pinholes: Vec<Pinhole>,
}

/// Why an SDP body could not be rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpError {
    /// [`PortAlloc`] had no public port for this private media port.
    NoPublicPort { private_port: u16 },
}

/// One line of the body: `<type>=<value>` with its line end.
#[derive(Debug, Clone)]
struct Line {
    kind: u8,
    /// The value (after `x=`), without the line end.
    value: Range<usize>,
    /// The line's own terminator (`\r\n`, `\n` or none).
    eol: Range<usize>,
}

/// A connection address as far as this module is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    V4(Ipv4Addr),
    /// `IN IP6` (RGW64: an IPv6-only host behind the translator).
    V6(Ipv6Addr),
    Other,
}

/// One media section: its `m=` line and what applies to it.
#[derive(Debug, Clone)]
struct Media {
    m_line: usize,
    conn: Option<Conn>,
    rtcp_line: Option<usize>,
    /// Byte offset where the section ends (start of the next `m=` or end).
    end: usize,
}

fn split_lines(body: &[u8]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let lf = body
            .get(pos..)
            .unwrap_or_default()
            .iter()
            .position(|&b| b == b'\n')
            .map(|o| pos + o);
        let (content_end, next) = match lf {
            Some(i) if i > pos && body.get(i - 1) == Some(&b'\r') => (i - 1, i + 1),
            Some(i) => (i, i + 1),
            None => (body.len(), body.len()),
        };
        let has_eq = body.get(pos + 1) == Some(&b'=');
        let kind = if has_eq {
            body.get(pos).copied().unwrap_or(0)
        } else {
            0 // not a `x=` line: kept verbatim, never interpreted
        };
        let value = if has_eq && content_end >= pos + 2 {
            pos + 2..content_end
        } else {
            content_end..content_end
        };
        lines.push(Line {
            kind,
            value,
            eol: content_end..next,
        });
        pos = next;
    }
    lines
}

/// Ranges of the space-separated fields of `value` (relative to `body`).
fn fields(body: &[u8], value: &Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = value.start;
    while i < value.end {
        while i < value.end && body.get(i) == Some(&b' ') {
            i += 1;
        }
        let start = i;
        while i < value.end && body.get(i).is_some_and(|&b| b != b' ') {
            i += 1;
        }
        if i > start {
            out.push(start..i);
        }
    }
    out
}

/// The address part of a connection address (`addr[/ttl[/count]]`).
fn address_part(body: &[u8], r: &Range<usize>) -> Range<usize> {
    let end = body
        .get(r.clone())
        .unwrap_or_default()
        .iter()
        .position(|&b| b == b'/')
        .map_or(r.end, |o| r.start + o);
    r.start..end
}

fn conn_of(
    body: &[u8],
    nettype: &Range<usize>,
    addrtype: &Range<usize>,
    addr: &Range<usize>,
) -> Conn {
    let is = |r: &Range<usize>, s: &[u8]| {
        body.get(r.clone())
            .is_some_and(|b| b.eq_ignore_ascii_case(s))
    };
    if !is(nettype, b"IN") {
        return Conn::Other;
    }
    let text = body
        .get(address_part(body, addr))
        .and_then(|b| std::str::from_utf8(b).ok());
    if is(addrtype, b"IP4") {
        text.and_then(|s| s.parse().ok())
            .map_or(Conn::Other, Conn::V4)
    } else if is(addrtype, b"IP6") {
        // Some UAs (sipp's `[media_ip]`) write the URI form `[v6]`.
        text.map(|s| {
            s.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(s)
        })
        .and_then(|s| s.parse().ok())
        .map_or(Conn::Other, Conn::V6)
    } else {
        Conn::Other
    }
}

/// Whether `conn` names the private host (its IPv4, or with RGW64 its IPv6).
fn is_private(conn: Conn, flow: &FlowAddrs) -> bool {
    match conn {
        Conn::V4(ip) => ip == *flow.private.ip(),
        Conn::V6(ip) => Some(ip) == flow.private_v6,
        Conn::Other => false,
    }
}

/// The replacement for the address of a `<nettype> <addrtype> <address>`
/// triple, if it names the private host: the public IPv4 (the `addrtype`
/// of an `IN IP6` triple becomes `IP4`, see [`address_edit`]).
fn map_address(conn: Conn, flow: &FlowAddrs) -> Option<Vec<u8>> {
    if !is_private(conn, flow) {
        return None;
    }
    Some(match flow.nat46() {
        // NAT46: the IPv6 peer gets our IPv6 address.
        Some((_, public6, _)) => public6.to_string().into_bytes(),
        None => flow.public.to_string().into_bytes(),
    })
}

/// Edit for the triple at `f[first..first + 3]` of a line's fields.
fn address_edit(
    body: &[u8],
    f: &[Range<usize>],
    first: usize,
    flow: &FlowAddrs,
    edits: &mut Edits,
) -> Option<Conn> {
    let (nettype, addrtype, addr) = (f.get(first)?, f.get(first + 1)?, f.get(first + 2)?);
    let conn = conn_of(body, nettype, addrtype, addr);
    if let Some(new) = map_address(conn, flow) {
        match (conn, flow.nat46()) {
            // RGW64 NAT46: `IN IP4 <host>` → `IN IP6 <public IPv6>`.
            (Conn::V4(_), Some(_)) => edits.replace(addrtype.clone(), b"IP6".to_vec()),
            // RGW64: `IN IP6 <host>` → `IN IP4 <public>`.
            (Conn::V6(_), _) => edits.replace(addrtype.clone(), b"IP4".to_vec()),
            _ => {}
        }
        edits.replace(address_part(body, addr), new);
    }
    Some(conn)
}

fn parse_port(b: &[u8]) -> Option<u16> {
    if b.is_empty() || b.len() > 5 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Rewrite an SDP body for a message leaving the private host.
pub fn rewrite(
    body: &[u8],
    flow: &FlowAddrs,
    ports: &mut dyn PortAlloc,
    policy: &SdpPolicy,
) -> Result<SdpRewrite, SdpError> {
    let lines = split_lines(body);
    let private = *flow.private.ip();
    let public = flow.public.to_string().into_bytes();
    let mut edits = Edits::default();

    // Pass 1: addresses, and the shape of the media sections.
    let mut session_conn: Option<Conn> = None;
    let mut media: Vec<Media> = Vec::new();
    for (idx, line) in lines.iter().enumerate() {
        let f = fields(body, &line.value);
        match line.kind {
            b'c' => {
                let conn = address_edit(body, &f, 0, flow, &mut edits);
                match media.last_mut() {
                    Some(m) => m.conn = m.conn.or(conn),
                    None => session_conn = session_conn.or(conn),
                }
            }
            b'o' if f.len() >= 3 => {
                address_edit(body, &f, f.len() - 3, flow, &mut edits);
            }
            b'm' => {
                let start = line.value.start.saturating_sub(2);
                if let Some(prev) = media.last_mut() {
                    prev.end = start;
                }
                media.push(Media {
                    m_line: idx,
                    conn: None,
                    rtcp_line: None,
                    end: body.len(),
                });
            }
            b'a' => {
                let v = body.get(line.value.clone()).unwrap_or_default();
                if let Some(rest) = v.strip_prefix(b"rtcp:") {
                    // a=rtcp:<port> [<nettype> <addrtype> <address>] (RFC 3605)
                    let off = line.value.start + 5;
                    let rf = fields(body, &(off..off + rest.len()));
                    address_edit(body, &rf, 1, flow, &mut edits);
                    if let Some(m) = media.last_mut() {
                        m.rtcp_line = Some(idx);
                    }
                } else if v.starts_with(b"control:") {
                    text::uri_host_edits(body, line.value.clone(), private, &public, &mut edits);
                }
            }
            _ => {}
        }
    }

    // Pass 2: media ports and pinholes.
    let mut pinholes = Vec::new();
    if policy.media_pinholes {
        for m in &media {
            media_edits(
                body,
                &lines,
                m,
                session_conn,
                flow,
                ports,
                &mut edits,
                &mut pinholes,
            )?;
        }
    }

    let body = (!edits.is_empty()).then(|| edits.apply(body));
    Ok(SdpRewrite { body, pinholes })
}

/// RGW64, a body from the public side for an IPv6-only private host (with
/// [`FlowAddrs::private_v6`] and [`FlowAddrs::prefix64`]): every
/// `IN IP4 <a.b.c.d>` of `c=`, `o=` and `a=rtcp:` becomes
/// `IN IP6 <prefix64::a.b.c.d>`, the address through which the host reaches
/// that IPv4 address across the translator. Ports stay (no pinholes: the
/// host's media leave outwards). `None` when nothing changes or the flow is
/// not an RGW64 one.
pub fn to_ipv6(body: &[u8], flow: &FlowAddrs) -> Option<Vec<u8>> {
    let prefix = flow.prefix64.filter(|_| flow.private_v6.is_some())?;
    map_triples(body, |conn| match conn {
        Conn::V4(ip) => Some((b"IP6", crate::embed_v4(prefix, ip).to_string())),
        _ => None,
    })
}

/// RGW64 NAT46, a body from the IPv6-only peer for a private IPv4 host
/// ([`FlowAddrs::nat46`]): `IN IP6 <peer's IPv6>` of `c=`, `o=` and
/// `a=rtcp:` becomes `IN IP4 <its proxy IPv4>`, the address through which
/// the host reaches it across the translator. Other IPv6 addresses (a media
/// relay elsewhere) have no proxy IPv4 and stay. Ports stay (the host's
/// media leave outwards). `None` when nothing changes or the flow is not a
/// NAT46 one.
pub fn to_ipv4(body: &[u8], flow: &FlowAddrs) -> Option<Vec<u8>> {
    let (peer6, _, _) = flow.nat46()?;
    let peer4 = *flow.peer.ip();
    map_triples(body, |conn| match conn {
        Conn::V6(ip) if ip == peer6 => Some((b"IP4", peer4.to_string())),
        _ => None,
    })
}

/// Applies `map` to every `<nettype> <addrtype> <address>` triple of `c=`,
/// `o=` and `a=rtcp:` lines: `Some((addrtype, address))` replaces both.
fn map_triples(
    body: &[u8],
    map: impl Fn(Conn) -> Option<(&'static [u8; 3], String)>,
) -> Option<Vec<u8>> {
    let mut edits = Edits::default();
    let triple = |f: &[Range<usize>], first: usize, edits: &mut Edits| {
        let (Some(n), Some(t), Some(a)) = (f.get(first), f.get(first + 1), f.get(first + 2)) else {
            return;
        };
        if let Some((addrtype, addr)) = map(conn_of(body, n, t, a)) {
            edits.replace(t.clone(), addrtype.to_vec());
            edits.replace(address_part(body, a), addr.into_bytes());
        }
    };
    for line in split_lines(body) {
        let f = fields(body, &line.value);
        match line.kind {
            b'c' => triple(&f, 0, &mut edits),
            b'o' if f.len() >= 3 => triple(&f, f.len() - 3, &mut edits),
            b'a' => {
                let v = body.get(line.value.clone()).unwrap_or_default();
                if let Some(rest) = v.strip_prefix(b"rtcp:") {
                    let off = line.value.start + 5;
                    let rf = fields(body, &(off..off + rest.len()));
                    triple(&rf, 1, &mut edits);
                }
            }
            _ => {}
        }
    }
    (!edits.is_empty()).then(|| edits.apply(body))
}

#[allow(clippy::too_many_arguments)]
fn media_edits(
    body: &[u8],
    lines: &[Line],
    m: &Media,
    session_conn: Option<Conn>,
    flow: &FlowAddrs,
    ports: &mut dyn PortAlloc,
    edits: &mut Edits,
    pinholes: &mut Vec<Pinhole>,
) -> Result<(), SdpError> {
    if !m.conn.or(session_conn).is_some_and(|c| is_private(c, flow)) {
        return Ok(());
    }
    let Some(line) = lines.get(m.m_line) else {
        return Ok(());
    };
    // m=<media> <port>[/<count>] <proto> <fmt> ...
    let f = fields(body, &line.value);
    let (Some(port_f), Some(proto_f)) = (f.get(1), f.get(2)) else {
        return Ok(());
    };
    let Some(rtp) = body.get(port_f.clone()).and_then(parse_port) else {
        return Ok(()); // zero, a /count range or garbage: leave it
    };
    let proto = body.get(proto_f.clone()).unwrap_or_default();
    let upper = proto.to_ascii_uppercase();
    let is_rtp = upper.starts_with(b"RTP/") || upper.starts_with(b"UDP/TLS/RTP/");
    let is_udp = is_rtp || upper.starts_with(b"UDP") || upper == b"UDPTL";
    if rtp == 0 || !is_udp {
        return Ok(());
    }

    let mut open = |port: u16, pinholes: &mut Vec<Pinhole>| -> Result<u16, SdpError> {
        let public_port = ports
            .public_port(Transport::Udp, port)
            .ok_or(SdpError::NoPublicPort { private_port: port })?;
        let p = Pinhole {
            snat: flow.role == Role::PrivateServer && flow.nat46().is_none(),
            // NAT46: the IPv6 peer sends its media to our IPv6 address.
            v6: Pinhole6::nat46(flow),
            ..Pinhole::new(flow, Transport::Udp, public_port, port)
        };
        if !pinholes.contains(&p) {
            pinholes.push(p);
        }
        Ok(public_port)
    };

    let rtp_public = open(rtp, pinholes)?;
    if rtp_public != rtp {
        edits.replace(port_f.clone(), rtp_public.to_string().into_bytes());
    }
    if !is_rtp {
        return Ok(());
    }

    // RTCP: explicit a=rtcp port (when its address is ours or absent), else RTP + 1.
    let explicit = m.rtcp_line.and_then(|i| lines.get(i)).and_then(|l| {
        let off = l.value.start + 5;
        let rf = fields(body, &(off..l.value.end));
        let port_r = rf.first()?.clone();
        let port = body.get(port_r.clone()).and_then(parse_port)?;
        let ours = match (rf.get(1), rf.get(2), rf.get(3)) {
            (Some(n), Some(t), Some(a)) => is_private(conn_of(body, n, t, a), flow),
            _ => true,
        };
        Some((port_r, port, ours))
    });
    match explicit {
        Some((_, _, false)) => {}
        // Port 0 is no port (a=rtcp:0, fuzzing found it): no pinhole.
        Some((_, 0, true)) => {}
        Some((port_r, port, true)) => {
            let rtcp_public = open(port, pinholes)?;
            if rtcp_public != port {
                edits.replace(port_r, rtcp_public.to_string().into_bytes());
            }
        }
        None if m.rtcp_line.is_some() => {} // unparseable a=rtcp: leave it
        None => {
            let Some(rtcp) = rtp.checked_add(1) else {
                return Ok(());
            };
            let rtcp_public = open(rtcp, pinholes)?;
            if rtp_public.checked_add(1) != Some(rtcp_public) {
                // The body's own line end (the last line may have none).
                let eol = std::iter::once(line)
                    .chain(lines.iter())
                    .filter_map(|l| body.get(l.eol.clone()))
                    .find(|e| !e.is_empty())
                    .unwrap_or(b"\r\n");
                let mut add = Vec::new();
                // A section that does not end with a line end gets one first.
                if m.end == body.len() && !body.ends_with(b"\n") {
                    add.extend_from_slice(eol);
                }
                add.extend_from_slice(b"a=rtcp:");
                add.extend_from_slice(rtcp_public.to_string().as_bytes());
                add.extend_from_slice(eol);
                edits.replace(m.end..m.end, add);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn policy(media_pinholes: bool) -> SdpPolicy {
        SdpPolicy { media_pinholes }
    }

    fn run(
        body: &str,
        role: Role,
        ports: &mut dyn PortAlloc,
        media: bool,
    ) -> (String, Vec<Pinhole>) {
        let flow = flow(role, Transport::Udp, 5060, 5060);
        let r = rewrite(body.as_bytes(), &flow, ports, &policy(media)).expect("ports");
        let out = r
            .body
            .map_or_else(|| body.to_string(), |b| String::from_utf8(b).expect("utf8"));
        (out, r.pinholes)
    }

    fn ph(public_port: u16, private_port: u16) -> (u16, u16) {
        (public_port, private_port)
    }

    fn ports_of(p: &[Pinhole]) -> Vec<(u16, u16)> {
        p.iter()
            .map(|p| ph(p.public_port, p.private_port))
            .collect()
    }

    #[test]
    fn rtcp_port_zero_opens_no_pinhole() {
        // Fuzzing regression: `a=rtcp:00` asked for a pinhole to private port 0.
        let body = "v=0\r\nc=IN IP4 192.168.0.101\r\nm=audio 7078 RTP/AVP 0\r\na=rtcp:00\r\n";
        let (_, pinholes) = run(body, Role::PrivateClient, &mut OffsetPorts(0), true);
        assert!(!pinholes.is_empty(), "the RTP port still gets its pinhole");
        assert!(pinholes.iter().all(|p| p.private_port != 0), "{pinholes:?}");
    }

    #[test]
    fn explicit_rtcp_port_and_address_follow_the_allocation() {
        let body =
            "v=0\r\no=- 1 1 IN IP4 192.168.0.101\r\ns=-\r\nc=IN IP4 192.168.0.101\r\nt=0 0\r\n\
                    m=audio 7078 RTP/AVP 0 8\r\na=rtcp:7079 IN IP4 192.168.0.101\r\n\
                    m=video 9078 RTP/AVPF 96\r\na=rtcp:9100\r\na=rtcp-mux\r\n";
        let (out, p) = run(body, Role::PrivateClient, &mut OffsetPorts(20000), true);
        assert_eq!(
            out,
            "v=0\r\no=- 1 1 IN IP4 203.0.113.10\r\ns=-\r\nc=IN IP4 203.0.113.10\r\nt=0 0\r\n\
             m=audio 27078 RTP/AVP 0 8\r\na=rtcp:27079 IN IP4 203.0.113.10\r\n\
             m=video 29078 RTP/AVPF 96\r\na=rtcp:29100\r\na=rtcp-mux\r\n"
        );
        assert_eq!(
            ports_of(&p),
            vec![(27078, 7078), (27079, 7079), (29078, 9078), (29100, 9100)]
        );
        assert!(p
            .iter()
            .all(|p| !p.snat && p.peer == PEER && p.lifetime.is_zero()));
    }

    #[test]
    fn implicit_rtcp_on_a_non_adjacent_public_port_gets_an_rtcp_attribute() {
        let body = "v=0\r\nc=IN IP4 192.168.0.101\r\nm=audio 6000 RTP/AVP 0\r\na=sendrecv\r\nm=audio 6002 RTP/AVP 0";
        let mut ports = TablePorts(vec![
            (6000, 40000),
            (6001, 40007),
            (6002, 6002),
            (6003, 6003),
        ]);
        let (out, p) = run(body, Role::PrivateServer, &mut ports, true);
        assert_eq!(
            out,
            "v=0\r\nc=IN IP4 203.0.113.10\r\nm=audio 40000 RTP/AVP 0\r\na=sendrecv\r\na=rtcp:40007\r\nm=audio 6002 RTP/AVP 0"
        );
        assert_eq!(
            ports_of(&p),
            vec![(40000, 6000), (40007, 6001), (6002, 6002), (6003, 6003)]
        );
        assert!(p.iter().all(|p| p.snat));
        // At the very end of a body without a final line end.
        let (out, _) = run(
            "c=IN IP4 192.168.0.101\nm=audio 6000 RTP/AVP 0",
            Role::PrivateClient,
            &mut ports,
            true,
        );
        assert_eq!(
            out,
            "c=IN IP4 203.0.113.10\nm=audio 40000 RTP/AVP 0\na=rtcp:40007\n"
        );
    }

    #[test]
    fn other_hosts_hold_disabled_streams_and_ipv6_are_left_alone() {
        let body = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\nc=IN IP4 192.168.0.102\r\n\
                    m=audio 6000 RTP/AVP 0\r\n\
                    m=audio 6002 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n\
                    m=video 0 RTP/AVP 31\r\nc=IN IP4 192.168.0.101\r\n\
                    m=audio 6004 RTP/AVP 0\r\nc=IN IP6 2001:db8::1\r\n\
                    m=audio 6006/2 RTP/AVP 0\r\nc=IN IP4 192.168.0.101/127\r\n\
                    m=application 6008 TCP/MSRP *\r\nc=IN IP4 192.168.0.101\r\n\
                    m=image 6010 udptl t38\r\nc=IN IP4 192.168.0.101\r\n";
        let (out, p) = run(body, Role::PrivateClient, &mut OffsetPorts(1), true);
        let expected = body
            .replace("m=image 6010", "m=image 6011")
            .replace("IP4 192.168.0.101", "IP4 203.0.113.10");
        assert_eq!(out, expected);
        // Only the T.38 stream (UDP, no RTCP) on the private address.
        assert_eq!(ports_of(&p), vec![(6011, 6010)]);
    }

    #[test]
    fn without_media_pinholes_only_addresses_change() {
        let body = "v=0\r\no=- 16207143059413717642 1 IN IP4 192.168.0.101\r\ns=x\r\n\
                    a=control:rtsp://192.168.0.101:8554/test/\r\n\
                    m=video 5000 RTP/AVP 26\r\nc=IN IP4 192.168.0.101\r\na=control:stream=0\r\n";
        let (out, p) = run(body, Role::PrivateServer, &mut NoPorts, false);
        assert_eq!(out, body.replace("192.168.0.101", "203.0.113.10"));
        assert!(p.is_empty());
    }

    #[test]
    fn allocation_failure_is_reported() {
        let flow = flow(Role::PrivateClient, Transport::Udp, 5060, 5060);
        let body = b"c=IN IP4 192.168.0.101\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert_eq!(
            rewrite(body, &flow, &mut NoPorts, &policy(true)),
            Err(SdpError::NoPublicPort { private_port: 6000 })
        );
        // Nothing to allocate: fine.
        let r = rewrite(b"v=0\r\n", &flow, &mut NoPorts, &policy(true));
        assert_eq!(r, Ok(SdpRewrite::default()));
    }

    #[test]
    fn garbage_never_panics() {
        let flow = flow(Role::PrivateServer, Transport::Udp, 5060, 5060);
        let mut rng = XorShift(42);
        const A: &[u8] = b"cmoa=IN IP4 192.168.0.101 rtcp:65535 RTP/AVP 0/\r\n";
        for i in 0..20_000 {
            let body: Vec<u8> = (0..rng.below(200))
                .map(|_| {
                    if i % 2 == 0 {
                        A[rng.below(A.len())]
                    } else {
                        rng.next() as u8
                    }
                })
                .collect();
            let _ = rewrite(&body, &flow, &mut OffsetPorts(3), &policy(true));
        }
        // Port 65535: RTP + 1 does not exist, no RTCP pinhole.
        let r = rewrite(
            b"c=IN IP4 192.168.0.101\r\nm=audio 65535 RTP/AVP 0\r\n",
            &flow,
            &mut OffsetPorts(0),
            &policy(true),
        );
        assert_eq!(r.map(|r| r.pinholes.len()), Ok(1));
    }
}

//! FTP control connection rewriter (RFC 959, RFC 2428).
//!
//! Only the private host's messages carry an address that the peer must
//! use to open the data connection, so only [`Direction::FromPrivate`] is
//! rewritten:
//!
//! * private client ([`Role::PrivateClient`], active mode outgoing):
//!   `PORT h1,h2,h3,h4,p1,p2` (RFC 959 §4.1.2) and `EPRT |1|addr|port|`
//!   (RFC 2428 §2);
//! * private server ([`Role::PrivateServer`], passive mode incoming, the
//!   server reached through its pool address): `227 … (h1,h2,h3,h4,p1,p2)`
//!   (RFC 959 §4.2, the text around the numbers is free: vsftpd, pyftpdlib
//!   and ProFTPD differ) and `229 … (|||port|)` (RFC 2428 §3).
//!
//! The other cases (passive outgoing, active incoming) need no ALG: the
//! data connection goes from the private side outwards through ordinary NAT.
//!
//! # Choices
//!
//! * RGW64: an IPv6-only private client behind the translator sends
//!   `EPRT |2|its IPv6|port|` inside packets whose source is its proxy IPv4
//!   ([`FlowAddrs::private_v6`]); the IPv4 peer cannot use it, so it becomes
//!   `EPRT |1|public|port|` with a pinhole to the proxy IPv4 (the translator
//!   takes the data connection on to the host). `EPSV` needs nothing (port
//!   only) and replies from an IPv4 server pass unchanged.
//! * RGW64 NAT46: a private IPv4 client talking to an IPv6-only server
//!   through the server's proxy IPv4 ([`FlowAddrs::nat46`]): its `PORT` /
//!   `EPRT |1|` naming itself become `EPRT |2|<public IPv6>|port|` with an
//!   IPv6 pinhole ([`crate::Pinhole6`]) to the host's `prefix64::` address,
//!   which the translator takes on to the host; its `PASV` goes on as
//!   `EPSV` and the server's `229` reaches it as
//!   `227 Entering Passive Mode (proxy,p1,p2)` (the data connection goes
//!   outwards to the proxy IPv4: no pinhole). `EPSV` needs nothing.
//! * An address is rewritten only when it is the private host's own address
//!   ([`FlowAddrs::private`]): a PORT naming a third host (FXP) is left
//!   alone. A 227 that already names the public address (a server configured
//!   with its public address, e.g. vsftpd `pasv_address`) keeps it but still
//!   gets its pinhole (its port is rewritten if the engine had to pick
//!   another one).
//! * 229 carries no address; the public client connects to the flow's public
//!   address and the announced port, so a pinhole is needed all the same;
//!   the reply is rewritten only when the public port differs.
//! * RGW64, passive mode from a public IPv4 client to an IPv6-only private
//!   server: the server cannot answer `PASV` with an IPv4 address, so the
//!   client's `PASV` goes on as `EPSV` (same length) and the flow remembers
//!   it ([`FlowAddrs::epsv_for_pasv`], kept by the engine with
//!   [`epsv_for_pasv_after`]); the server's `229 … (|||port|)` then reaches
//!   the client as `227 Entering Passive Mode (public,p1,p2)` with a
//!   pinhole to the host's proxy IPv4, as for a 229.
//! * Lines end with `\r\n`; a bare `\n` is tolerated and kept. A partial line
//!   is held ([`Outcome::Incomplete`]) only while it can still become one of
//!   the four messages above and is at most [`MAX_LINE`] bytes; any other
//!   partial line passes unchanged at once.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{
    Direction, FlowAddrs, MessageResult, Outcome, Pinhole, Pinhole6, PortAlloc, Rewriter, Role,
    Transport,
};

/// Longest partial line worth holding (a PORT or 227 line is < 100 bytes).
pub const MAX_LINE: usize = 512;

/// Rewrites PORT/EPRT commands and 227/229 replies of the private host.
#[derive(Debug, Clone, Copy, Default)]
pub struct FtpRewriter;

fn result(outcome: Outcome, consumed: usize, pinholes: Vec<Pinhole>) -> MessageResult {
    MessageResult {
        outcome,
        consumed,
        pinholes,
    }
}

/// Whether `partial` (the start of a line) could still become `word`
/// (ASCII case-insensitive).
fn could_be(partial: &[u8], word: &[u8]) -> bool {
    let n = partial.len().min(word.len());
    match (partial.get(..n), word.get(..n)) {
        (Some(p), Some(w)) => p.eq_ignore_ascii_case(w),
        _ => false,
    }
}

fn starts_with_ci(s: &[u8], word: &[u8]) -> bool {
    s.len() >= word.len() && could_be(s, word)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Decimal number of 1..=`max_digits` ASCII digits.
fn number(s: &[u8], max_digits: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_digits || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |n, &d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// `h1,h2,h3,h4,p1,p2` (spaces around the numbers tolerated).
fn host_port(s: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let mut v = [0u8; 6];
    let mut parts = s.split(|&b| b == b',');
    for slot in v.iter_mut() {
        let n = number(trim(parts.next()?), 3)?;
        *slot = u8::try_from(n).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    let [a, b, c, d, p1, p2] = v;
    Some((Ipv4Addr::new(a, b, c, d), u16::from_be_bytes([p1, p2])))
}

fn host_port_text(addr: Ipv4Addr, port: u16) -> String {
    let [a, b, c, d] = addr.octets();
    let [p1, p2] = port.to_be_bytes();
    format!("{a},{b},{c},{d},{p1},{p2}")
}

/// Splits a line into its body and its ending (`\r\n` or `\n`).
fn split_ending(line: &[u8]) -> (&[u8], &[u8]) {
    if let Some(body) = line.strip_suffix(b"\r\n") {
        (body, b"\r\n")
    } else if let Some(body) = line.strip_suffix(b"\n") {
        (body, b"\n")
    } else {
        (line, b"")
    }
}

/// The first run `n,n,n,n,n,n` in `s`: its byte range and value.
fn find_host_port(s: &[u8]) -> Option<(usize, usize, Ipv4Addr, u16)> {
    let mut i = 0;
    while i < s.len() {
        if s.get(i).is_some_and(u8::is_ascii_digit) {
            // Longest run of digits, commas and spaces from here.
            let end = i + s
                .get(i..)?
                .iter()
                .take_while(|&&b| b.is_ascii_digit() || b == b',' || b == b' ')
                .count();
            let mut run = s.get(i..end)?;
            // Trailing spaces/commas are not part of the numbers.
            while let [rest @ .., b' ' | b','] = run {
                run = rest;
            }
            if let Some((addr, port)) = host_port(run) {
                return Some((i, i + run.len(), addr, port));
            }
            // Skip this digit run.
            i += s
                .get(i..)?
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
        } else {
            i += 1;
        }
    }
    None
}

/// The first `<d><d><d>port<d>` in `s` (RFC 2428 §3): byte range of the
/// port digits and the port.
fn find_epsv_port(s: &[u8]) -> Option<(usize, usize, u16)> {
    for i in 0..s.len() {
        let d = *s.get(i)?;
        if !(33..=126).contains(&d) || d.is_ascii_digit() {
            continue;
        }
        if s.get(i + 1) != Some(&d) || s.get(i + 2) != Some(&d) {
            continue;
        }
        let start = i + 3;
        let digits = s
            .get(start..)?
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || s.get(start + digits) != Some(&d) {
            continue;
        }
        let port = number(s.get(start..start + digits)?, 5)?;
        let port = u16::try_from(port).ok().filter(|&p| p != 0)?;
        return Some((start, start + digits, port));
    }
    None
}

/// A data connection pinhole (its lifetime is the engine's to set).
fn pinhole(flow: &FlowAddrs, public_port: u16, private_port: u16) -> Pinhole {
    Pinhole {
        // NAT46: the IPv6 server connects to our IPv6 address.
        v6: Pinhole6::nat46(flow),
        ..Pinhole::new(flow, Transport::Tcp, public_port, private_port)
    }
}

/// `PASV` (a line body) → `EPSV` with the same arguments and case (same
/// length: no sequence shift), for an IPv6 server that cannot name an IPv4
/// address for the client.
fn pasv_as_epsv(body: &[u8], ending: &[u8]) -> Option<Vec<u8>> {
    let rest = pasv_command(body)?;
    let verb: &[u8] = if body.first().is_some_and(u8::is_ascii_lowercase) {
        b"epsv"
    } else {
        b"EPSV"
    };
    let mut out = Vec::with_capacity(body.len() + ending.len());
    out.extend_from_slice(verb);
    out.extend_from_slice(rest);
    out.extend_from_slice(ending);
    Some(out)
}

/// The verb of an `EPRT` replacing `cmd` (`PORT` or `EPRT`, case kept).
fn eprt_verb(cmd: &[u8], is_port: bool) -> &[u8] {
    if !is_port {
        cmd
    } else if cmd.iter().all(u8::is_ascii_lowercase) {
        b"eprt"
    } else {
        b"EPRT"
    }
}

/// Splices `replacement` over `body[start..end]` and re-adds the ending.
fn splice(body: &[u8], start: usize, end: usize, replacement: &[u8], ending: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + replacement.len() + ending.len());
    out.extend_from_slice(body.get(..start).unwrap_or(&[]));
    out.extend_from_slice(replacement);
    out.extend_from_slice(body.get(end..).unwrap_or(&[]));
    out.extend_from_slice(ending);
    out
}

/// `PORT` and `EPRT` from a private client.
fn command(line: &[u8], flow: &FlowAddrs, ports: &mut dyn PortAlloc) -> MessageResult {
    let consumed = line.len();
    let (body, ending) = split_ending(line);
    if flow.nat46().is_some() {
        if let Some(out) = pasv_as_epsv(body, ending) {
            // NAT46: the server's 229 becomes a 227 (`reply_to_v4_client`).
            return result(Outcome::Rewritten(out), consumed, Vec::new());
        }
    }
    let is_port = starts_with_ci(body, b"PORT");
    let is_eprt = starts_with_ci(body, b"EPRT");
    if !is_port && !is_eprt {
        return result(Outcome::Unchanged, consumed, Vec::new());
    }
    let (cmd, rest) = body.split_at(4);
    // "PORTX" is another command; "PORT" needs an argument.
    match rest.first() {
        Some(b' ' | b'\t') => {}
        Some(_) => return result(Outcome::Unchanged, consumed, Vec::new()),
        None => return result(Outcome::Malformed, consumed, Vec::new()),
    }
    let args = trim(rest);
    let parsed = if is_port {
        host_port(args)
    } else {
        match eprt_args(args) {
            Eprt::V4(a, p) => Some((a, p)),
            // RGW64: an IPv6-only host behind the translator names its own
            // IPv6 address; the IPv4 peer gets the public IPv4 instead
            // (`|1|`), and the pinhole leads to the host's proxy IPv4.
            Eprt::V6(a, p) if flow.private_v6 == Some(a) => Some((*flow.private.ip(), p)),
            Eprt::V6(..) | Eprt::OtherV6 => {
                return result(Outcome::Unchanged, consumed, Vec::new())
            }
            Eprt::Bad => None,
        }
    };
    let Some((addr, port)) = parsed.filter(|&(_, p)| p != 0) else {
        return result(Outcome::Malformed, consumed, Vec::new());
    };
    if addr != *flow.private.ip() {
        return result(Outcome::Unchanged, consumed, Vec::new());
    }
    let Some(public_port) = ports.public_port(Transport::Tcp, port) else {
        return result(Outcome::Unchanged, consumed, Vec::new());
    };
    let mut out = Vec::with_capacity(consumed + 8);
    if let Some((_, public6, _)) = flow.nat46() {
        // NAT46: the IPv6 server refuses PORT and IPv4 EPRT; it gets our
        // IPv6 address, whose pinhole leads to the host across the translator.
        let d = if is_port {
            '|'
        } else {
            char::from(args.first().copied().unwrap_or(b'|'))
        };
        out.extend_from_slice(eprt_verb(cmd, is_port));
        out.extend_from_slice(format!(" {d}2{d}{public6}{d}{public_port}{d}").as_bytes());
        out.extend_from_slice(ending);
        return result(
            Outcome::Rewritten(out),
            consumed,
            vec![pinhole(flow, public_port, port)],
        );
    }
    out.extend_from_slice(cmd);
    out.push(b' ');
    if is_port {
        out.extend_from_slice(host_port_text(flow.public, public_port).as_bytes());
    } else {
        let d = char::from(args.first().copied().unwrap_or(b'|'));
        out.extend_from_slice(format!("{d}1{d}{}{d}{public_port}{d}", flow.public).as_bytes());
    }
    out.extend_from_slice(ending);
    result(
        Outcome::Rewritten(out),
        consumed,
        vec![pinhole(flow, public_port, port)],
    )
}

/// RGW64: the prefix64 of a flow whose private host is IPv6-only.
fn v6_host(flow: &FlowAddrs) -> Option<Ipv6Addr> {
    flow.private_v6.and(flow.prefix64)
}

/// RGW64, active mode towards an IPv6-only private server: the public IPv4
/// client's `PORT h1,…,p2` / `EPRT |1|a.b.c.d|port|` naming itself becomes
/// `EPRT |2|prefix64::a.b.c.d|port|`, the address through which the server
/// reaches it across the translator (an IPv6 server refuses PORT and IPv4
/// EPRT). The data connection goes outwards: no pinhole.
fn command_to_v6(line: &[u8], flow: &FlowAddrs) -> MessageResult {
    let consumed = line.len();
    let unchanged = || result(Outcome::Unchanged, consumed, Vec::new());
    let Some(prefix) = v6_host(flow) else {
        return unchanged();
    };
    let (body, ending) = split_ending(line);
    if let Some(out) = pasv_as_epsv(body, ending) {
        // The IPv6 server cannot name an IPv4 address for the client: ask
        // it for the port alone; its 229 becomes a 227
        // ([`epsv_for_pasv_after`], [`reply`]).
        return result(Outcome::Rewritten(out), consumed, Vec::new());
    }
    let is_port = starts_with_ci(body, b"PORT");
    if !is_port && !starts_with_ci(body, b"EPRT") {
        return unchanged();
    }
    let (cmd, rest) = body.split_at(4);
    if !matches!(rest.first(), Some(b' ' | b'\t')) {
        return unchanged();
    }
    let args = trim(rest);
    let parsed = if is_port {
        host_port(args)
    } else {
        match eprt_args(args) {
            Eprt::V4(a, p) => Some((a, p)),
            _ => None,
        }
    };
    let Some((addr, port)) = parsed.filter(|&(a, p)| p != 0 && a == *flow.peer.ip()) else {
        return unchanged();
    };
    let d = if is_port {
        '|'
    } else {
        char::from(args.first().copied().unwrap_or(b'|'))
    };
    let mut out = Vec::with_capacity(consumed + 32);
    out.extend_from_slice(eprt_verb(cmd, is_port));
    out.extend_from_slice(
        format!(" {d}2{d}{}{d}{port}{d}", crate::embed_v4(prefix, addr)).as_bytes(),
    );
    out.extend_from_slice(ending);
    result(Outcome::Rewritten(out), consumed, Vec::new())
}

/// `PASV` (a line body without its ending, arguments tolerated): what
/// follows the verb.
fn pasv_command(body: &[u8]) -> Option<&[u8]> {
    if !starts_with_ci(body, b"PASV") {
        return None;
    }
    let rest = body.get(4..)?;
    matches!(rest.first(), None | Some(b' ' | b'\t')).then_some(rest)
}

/// RGW64: the flow's [`FlowAddrs::epsv_for_pasv`] after the complete
/// message `msg` went by in direction `dir`. The public client's `PASV` to
/// an IPv6-only server (sent on as `EPSV`) sets it; the server's answer to
/// it clears it: `229` (rewritten to `227`), or a refusal (4xx, 5xx). A
/// `227` clears it as well (the server got `PASV` after all, e.g. its start
/// had passed unchanged). Replies to earlier commands (`200`, `226`, `150`,
/// multi-line continuations) leave it.
pub fn epsv_for_pasv_after(flow: &FlowAddrs, dir: Direction, msg: &[u8]) -> bool {
    // Which side is the IPv4 client: the public one towards an IPv6-only
    // private server, the private one towards an IPv6-only server (NAT46).
    let client = if flow.role == Role::PrivateServer && v6_host(flow).is_some() {
        Direction::FromPublic
    } else if flow.role == Role::PrivateClient && flow.nat46().is_some() {
        Direction::FromPrivate
    } else {
        return false;
    };
    let (body, _) = split_ending(msg);
    if dir == client {
        flow.epsv_for_pasv || pasv_command(body).is_some()
    } else {
        let answer = matches!(
            body,
            [b'4' | b'5', b'0'..=b'9', b'0'..=b'9', b' ', ..] | [b'2', b'2', b'7' | b'9', b' ', ..]
        );
        flow.epsv_for_pasv && !answer
    }
}

/// RGW64 NAT46: the IPv6-only server's `229 … (|||port|)` answering the
/// private IPv4 client's `PASV` (sent on as `EPSV`) becomes
/// `227 Entering Passive Mode (proxy,p1,p2)`: the client connects to the
/// server's proxy IPv4 (the flow's peer) and the translator takes the data
/// connection on. Outbound: no pinhole.
fn reply_to_v4_client(line: &[u8], flow: &FlowAddrs) -> MessageResult {
    let consumed = line.len();
    let (body, ending) = split_ending(line);
    if !flow.epsv_for_pasv || !starts_with_ci(body, b"229 ") {
        return result(Outcome::Unchanged, consumed, Vec::new());
    }
    let Some((_, _, port)) = body.get(4..).and_then(find_epsv_port) else {
        return result(Outcome::Malformed, consumed, Vec::new());
    };
    let mut out = format!(
        "227 Entering Passive Mode ({})",
        host_port_text(*flow.peer.ip(), port)
    )
    .into_bytes();
    out.extend_from_slice(ending);
    result(Outcome::Rewritten(out), consumed, Vec::new())
}

enum Eprt {
    V4(Ipv4Addr, u16),
    /// A well-formed EPRT for IPv6 (RFC 2428 §2, `af` 2).
    V6(Ipv6Addr, u16),
    /// `af` 2 with an address that is not one (left to the peer to refuse).
    OtherV6,
    Bad,
}

/// `<d>af<d>addr<d>port<d>` (RFC 2428 §2).
fn eprt_args(args: &[u8]) -> Eprt {
    let Some((&d, rest)) = args.split_first() else {
        return Eprt::Bad;
    };
    if !(33..=126).contains(&d) {
        return Eprt::Bad;
    }
    let Some(inner) = rest.strip_suffix(&[d]) else {
        return Eprt::Bad;
    };
    let mut f = inner.split(|&b| b == d);
    let (Some(af), Some(addr), Some(port), None) = (f.next(), f.next(), f.next(), f.next()) else {
        return Eprt::Bad;
    };
    let port = match number(port, 5).and_then(|p| u16::try_from(p).ok()) {
        Some(p) => p,
        None => return Eprt::Bad,
    };
    match af {
        b"1" => match std::str::from_utf8(addr).ok().and_then(|a| a.parse().ok()) {
            Some(a) => Eprt::V4(a, port),
            None => Eprt::Bad,
        },
        b"2" => match std::str::from_utf8(addr).ok().and_then(|a| a.parse().ok()) {
            Some(a) => Eprt::V6(a, port),
            None => Eprt::OtherV6,
        },
        _ => Eprt::Bad,
    }
}

/// `227` and `229` replies from a private server.
fn reply(line: &[u8], flow: &FlowAddrs, ports: &mut dyn PortAlloc) -> MessageResult {
    let consumed = line.len();
    let (body, ending) = split_ending(line);
    let unchanged = || result(Outcome::Unchanged, consumed, Vec::new());
    if starts_with_ci(body, b"227 ") {
        let Some((start, end, addr, port)) = body.get(4..).and_then(find_host_port) else {
            return result(Outcome::Malformed, consumed, Vec::new());
        };
        let (start, end) = (start + 4, end + 4);
        if port == 0 {
            return result(Outcome::Malformed, consumed, Vec::new());
        }
        let keep_addr = if addr == *flow.private.ip() {
            false
        } else if addr == flow.public {
            true
        } else {
            return unchanged();
        };
        let Some(public_port) = ports.public_port(Transport::Tcp, port) else {
            return unchanged();
        };
        let holes = vec![pinhole(flow, public_port, port)];
        if keep_addr && public_port == port {
            return result(Outcome::Unchanged, consumed, holes);
        }
        let text = host_port_text(flow.public, public_port);
        let out = splice(body, start, end, text.as_bytes(), ending);
        return result(Outcome::Rewritten(out), consumed, holes);
    }
    if starts_with_ci(body, b"229 ") {
        let Some((start, end, port)) = body.get(4..).and_then(find_epsv_port) else {
            return result(Outcome::Malformed, consumed, Vec::new());
        };
        let (start, end) = (start + 4, end + 4);
        let Some(public_port) = ports.public_port(Transport::Tcp, port) else {
            return unchanged();
        };
        let holes = vec![pinhole(flow, public_port, port)];
        if flow.epsv_for_pasv && flow.private_v6.is_some() {
            // RGW64: the public client asked PASV (sent on as EPSV): it
            // expects a 227 with the address it reached us on.
            let mut out = format!(
                "227 Entering Passive Mode ({})",
                host_port_text(flow.public, public_port)
            )
            .into_bytes();
            out.extend_from_slice(ending);
            return result(Outcome::Rewritten(out), consumed, holes);
        }
        if public_port == port {
            return result(Outcome::Unchanged, consumed, holes);
        }
        let out = splice(body, start, end, public_port.to_string().as_bytes(), ending);
        return result(Outcome::Rewritten(out), consumed, holes);
    }
    unchanged()
}

impl Rewriter for FtpRewriter {
    fn rewrite(
        &self,
        buf: &[u8],
        dir: Direction,
        flow: &FlowAddrs,
        ports: &mut dyn PortAlloc,
    ) -> MessageResult {
        if buf.is_empty() {
            return result(Outcome::Incomplete, 0, Vec::new());
        }
        let to_v6 = dir == Direction::FromPublic
            && flow.role == Role::PrivateServer
            && v6_host(flow).is_some();
        let nat46 = flow.role == Role::PrivateClient && flow.nat46().is_some();
        let words: &[&[u8]] = match (dir, flow.role) {
            (Direction::FromPublic, _) if to_v6 => &[b"PORT", b"EPRT", b"PASV"],
            (Direction::FromPublic, _) if nat46 => &[b"229 "],
            (Direction::FromPublic, _) => &[],
            (Direction::FromPrivate, Role::PrivateClient) if nat46 => &[b"PORT", b"EPRT", b"PASV"],
            (Direction::FromPrivate, Role::PrivateClient) => &[b"PORT", b"EPRT"],
            (Direction::FromPrivate, Role::PrivateServer) => &[b"227 ", b"229 "],
        };
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            let relevant = words.iter().any(|w| could_be(buf, w));
            return if !relevant {
                // Cannot become an address message: pass what we have.
                result(Outcome::Unchanged, buf.len(), Vec::new())
            } else if buf.len() > MAX_LINE {
                result(Outcome::Malformed, buf.len(), Vec::new())
            } else {
                result(Outcome::Incomplete, 0, Vec::new())
            };
        };
        let line = buf.get(..=nl).unwrap_or(buf);
        match (dir, flow.role) {
            (Direction::FromPublic, _) if to_v6 => command_to_v6(line, flow),
            (Direction::FromPublic, _) if nat46 => reply_to_v4_client(line, flow),
            (Direction::FromPublic, _) => result(Outcome::Unchanged, line.len(), Vec::new()),
            (Direction::FromPrivate, Role::PrivateClient) => command(line, flow, ports),
            (Direction::FromPrivate, Role::PrivateServer) => reply(line, flow, ports),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::SocketAddrV4;
    use std::time::Duration;

    /// Identity mapping except for ports listed in `taken`, which move up by
    /// 1000; counts calls.
    #[derive(Default)]
    struct Ports {
        taken: Vec<u16>,
        none: bool,
        calls: HashMap<u16, u32>,
    }

    impl PortAlloc for Ports {
        fn public_port(&mut self, t: Transport, p: u16) -> Option<u16> {
            assert_eq!(t, Transport::Tcp);
            *self.calls.entry(p).or_default() += 1;
            if self.none {
                None
            } else if self.taken.contains(&p) {
                Some(p.wrapping_add(1000))
            } else {
                Some(p)
            }
        }
    }

    /// 192.168.0.101:40000 and 198.51.100.7:21, public address 100.64.1.131.
    fn flow(role: Role) -> FlowAddrs {
        FlowAddrs {
            public: Ipv4Addr::new(100, 64, 1, 131),
            ..crate::testutil::flow(role, Transport::Tcp, 40000, 21)
        }
    }

    /// The data pinhole a rewriter asks for: TCP from `peer` to our
    /// `100.64.1.131:public_port`, towards `private`, its lifetime left to
    /// the engine.
    fn data_pinhole(peer: Ipv4Addr, public_port: u16, private: (Ipv4Addr, u16)) -> Pinhole {
        Pinhole {
            peer,
            transport: Transport::Tcp,
            public_addr: Ipv4Addr::new(100, 64, 1, 131),
            public_port,
            private_addr: private.0,
            private_port: private.1,
            lifetime: Duration::ZERO,
            snat: false,
            v6: None,
        }
    }

    fn run(buf: &[u8], dir: Direction, role: Role, ports: &mut Ports) -> MessageResult {
        FtpRewriter.rewrite(buf, dir, &flow(role), ports)
    }

    fn rewritten(r: &MessageResult) -> &[u8] {
        match &r.outcome {
            Outcome::Rewritten(b) => b,
            o => panic!("expected rewrite, got {o:?}"),
        }
    }

    const C: Role = Role::PrivateClient;
    const S: Role = Role::PrivateServer;
    const OUT: Direction = Direction::FromPrivate;
    const IN: Direction = Direction::FromPublic;

    #[test]
    fn port_from_lftp_curl() {
        let mut p = Ports::default();
        // curl/lftp: "PORT 192,168,0,101,160,26" (port 40986).
        let msg = b"PORT 192,168,0,101,160,26\r\nLIST\r\n";
        let r = run(msg, OUT, C, &mut p);
        assert_eq!(rewritten(&r), b"PORT 100,64,1,131,160,26\r\n");
        assert_eq!(r.consumed, 27);
        assert_eq!(
            r.pinholes,
            vec![data_pinhole(
                Ipv4Addr::new(198, 51, 100, 7),
                40986,
                (Ipv4Addr::new(192, 168, 0, 101), 40986)
            )]
        );
        // Port moved by the allocator.
        let mut p = Ports {
            taken: vec![40986],
            ..Default::default()
        };
        let r = run(msg, OUT, C, &mut p);
        // 41986 = 164 * 256 + 2
        assert_eq!(rewritten(&r), b"PORT 100,64,1,131,164,2\r\n");
        assert_eq!(r.pinholes[0].public_port, 41986);
        assert_eq!(r.pinholes[0].private_port, 40986);
    }

    #[test]
    fn port_lowercase_and_bare_newline() {
        let mut p = Ports::default();
        let r = run(b"port 192,168,0,101,4,1\n", OUT, C, &mut p);
        assert_eq!(rewritten(&r), b"port 100,64,1,131,4,1\n");
        assert_eq!(r.pinholes[0].private_port, 1025);
    }

    #[test]
    fn eprt_from_lftp_curl() {
        let mut p = Ports::default();
        let r = run(b"EPRT |1|192.168.0.101|41234|\r\n", OUT, C, &mut p);
        assert_eq!(rewritten(&r), b"EPRT |1|100.64.1.131|41234|\r\n");
        assert_eq!(r.pinholes[0].public_port, 41234);
        // Other delimiter kept.
        let r = run(b"EPRT !1!192.168.0.101!41234!\r\n", OUT, C, &mut p);
        assert_eq!(rewritten(&r), b"EPRT !1!100.64.1.131!41234!\r\n");
        // IPv6: untouched.
        let r = run(b"EPRT |2|fd00::1|41234|\r\n", OUT, C, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert!(r.pinholes.is_empty());
    }

    fn flow64() -> FlowAddrs {
        FlowAddrs {
            // hostc's proxy IPv4 (pool4), as the translated packets carry it.
            private: SocketAddrV4::new(Ipv4Addr::new(10, 64, 0, 1), 40000),
            private_v6: Some("fd00::103".parse().unwrap()),
            ..flow(Role::PrivateClient)
        }
    }

    #[test]
    fn eprt_ipv6_host_behind_translator_becomes_ipv4() {
        let f = flow64();
        let mut p = Ports::default();
        let r = FtpRewriter.rewrite(b"EPRT |2|fd00::103|41234|\r\n", OUT, &f, &mut p);
        assert_eq!(rewritten(&r), b"EPRT |1|100.64.1.131|41234|\r\n");
        assert_eq!(
            r.pinholes,
            vec![data_pinhole(
                Ipv4Addr::new(198, 51, 100, 7),
                41234,
                (Ipv4Addr::new(10, 64, 0, 1), 41234)
            )]
        );
        // Port moved by the allocator; other delimiter; non-canonical spelling.
        let mut p = Ports {
            taken: vec![41234],
            ..Default::default()
        };
        let r = FtpRewriter.rewrite(b"eprt !2!FD00:0::103!41234!\n", OUT, &f, &mut p);
        assert_eq!(rewritten(&r), b"eprt !1!100.64.1.131!42234!\n");
        assert_eq!(r.pinholes[0].private_port, 41234);
        // Another IPv6 address (FXP, or another host): untouched.
        let mut p = Ports::default();
        let r = FtpRewriter.rewrite(b"EPRT |2|fd00::104|41234|\r\n", OUT, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert!(r.pinholes.is_empty() && p.calls.is_empty());
        // Not an address, or port 0: no pinhole.
        let r = FtpRewriter.rewrite(b"EPRT |2|fd00::zz|41234|\r\n", OUT, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        let r = FtpRewriter.rewrite(b"EPRT |2|fd00::103|0|\r\n", OUT, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Malformed);
        assert!(r.pinholes.is_empty());
        // EPSV and the IPv4 server's 229 need nothing.
        let r = FtpRewriter.rewrite(b"EPSV\r\n", OUT, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        let r = FtpRewriter.rewrite(
            b"229 Entering extended passive mode (|||30001|).\r\n",
            IN,
            &f,
            &mut p,
        );
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert!(p.calls.is_empty());
        // Without RGW64 the same IPv6 EPRT is not ours.
        let r = run(b"EPRT |2|fd00::103|41234|\r\n", OUT, C, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
    }

    /// NAT46: the private IPv4 client 192.168.0.101 talks to an IPv6-only
    /// server through its proxy IPv4 10.64.0.7.
    fn nat46_flow() -> FlowAddrs {
        FlowAddrs {
            peer: SocketAddrV4::new(Ipv4Addr::new(10, 64, 0, 7), 21),
            prefix64: Some("fd64:64::".parse().unwrap()),
            peer_v6: Some("2001:db8:0:113::80".parse().unwrap()),
            public_v6: Some("2001:db8:0:100::2".parse().unwrap()),
            ..flow(Role::PrivateClient)
        }
    }

    #[test]
    fn nat46_port_and_eprt_become_ipv6_eprt_with_an_ipv6_pinhole() {
        let f = nat46_flow();
        let mut p = Ports::default();
        let r = FtpRewriter.rewrite(b"PORT 192,168,0,101,160,26\r\n", OUT, &f, &mut p);
        assert_eq!(rewritten(&r), b"EPRT |2|2001:db8:0:100::2|40986|\r\n");
        let want = Pinhole {
            v6: Some(Pinhole6 {
                peer: "2001:db8:0:113::80".parse().unwrap(),
                public_addr: "2001:db8:0:100::2".parse().unwrap(),
                private_addr: "fd64:64::c0a8:65".parse().unwrap(),
            }),
            ..data_pinhole(
                Ipv4Addr::new(10, 64, 0, 7),
                40986,
                (Ipv4Addr::new(192, 168, 0, 101), 40986),
            )
        };
        assert_eq!(r.pinholes, vec![want.clone()]);
        // lower case, own delimiter, a taken port.
        let mut p = Ports {
            taken: vec![41234],
            ..Default::default()
        };
        let r = FtpRewriter.rewrite(b"eprt !1!192.168.0.101!41234!\n", OUT, &f, &mut p);
        assert_eq!(rewritten(&r), b"eprt !2!2001:db8:0:100::2!42234!\n");
        assert_eq!(r.pinholes[0].public_port, 42234);
        assert_eq!(r.pinholes[0].private_port, 41234);
        assert_eq!(r.pinholes[0].v6, want.v6);
        let r = FtpRewriter.rewrite(b"port 192,168,0,101,160,26\r\n", OUT, &f, &mut p);
        assert_eq!(rewritten(&r), b"eprt |2|2001:db8:0:100::2|40986|\r\n");
        // A third host (FXP) and EPSV are left alone; so is the server's
        // 229 to an EPSV the client asked itself.
        let r = FtpRewriter.rewrite(b"PORT 192,168,0,9,160,26\r\n", OUT, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        let r = FtpRewriter.rewrite(b"EPSV\r\n", OUT, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        let r = FtpRewriter.rewrite(b"229 Entering (|||30001|)\r\n", IN, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        // Without the IPv6 addresses (not NAT46) the PORT stays IPv4.
        let plain = FlowAddrs {
            peer_v6: None,
            ..nat46_flow()
        };
        let r = FtpRewriter.rewrite(b"PORT 192,168,0,101,160,26\r\n", OUT, &plain, &mut p);
        assert_eq!(rewritten(&r), b"PORT 100,64,1,131,160,26\r\n");
        assert_eq!(r.pinholes[0].v6, None);
    }

    #[test]
    fn nat46_pasv_becomes_epsv_and_the_229_a_227_with_the_proxy_address() {
        let mut f = nat46_flow();
        let mut p = Ports::default();
        let r = FtpRewriter.rewrite(b"PASV\r\n", OUT, &f, &mut p);
        assert_eq!(rewritten(&r), b"EPSV\r\n");
        let r = FtpRewriter.rewrite(b"pasv\r\n", OUT, &f, &mut p);
        assert_eq!(rewritten(&r), b"epsv\r\n");
        assert!(r.pinholes.is_empty());
        // The engine keeps the state: set by the PASV, cleared by the answer.
        assert!(epsv_for_pasv_after(&f, OUT, b"PASV\r\n"));
        f.epsv_for_pasv = true;
        assert!(epsv_for_pasv_after(&f, IN, b"200 Type set to I\r\n"));
        assert!(!epsv_for_pasv_after(
            &f,
            IN,
            b"229 Entering (|||30001|)\r\n"
        ));
        assert!(!epsv_for_pasv_after(&f, IN, b"500 no\r\n"));
        let r = FtpRewriter.rewrite(
            b"229 Entering extended passive mode (|||30001|).\r\n",
            IN,
            &f,
            &mut p,
        );
        // 30001 = 117 * 256 + 49
        assert_eq!(
            rewritten(&r),
            b"227 Entering Passive Mode (10,64,0,7,117,49)\r\n"
        );
        assert!(r.pinholes.is_empty() && p.calls.is_empty());
        // Split: the start of a 229 is held, other replies pass at once.
        let r = FtpRewriter.rewrite(b"229 Enter", IN, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Incomplete);
        let r = FtpRewriter.rewrite(b"150 Here", IN, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        // A broken 229 is malformed, not a 227 to nowhere.
        let r = FtpRewriter.rewrite(b"229 Entering (|||0x|)\r\n", IN, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Malformed);
    }

    #[test]
    fn public_port_and_eprt_towards_an_ipv6_server_become_ipv6_eprt() {
        let f = FlowAddrs {
            private: SocketAddrV4::new(Ipv4Addr::new(10, 64, 0, 1), 21),
            peer: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 40000),
            private_v6: Some("fd00::103".parse().unwrap()),
            prefix64: Some("fd64:64::".parse().unwrap()),
            ..flow(Role::PrivateServer)
        };
        let mut p = Ports::default();
        let r = FtpRewriter.rewrite(b"PORT 203,0,113,10,160,26\r\n", IN, &f, &mut p);
        assert_eq!(rewritten(&r), b"EPRT |2|fd64:64::cb00:710a|40986|\r\n");
        assert!(r.pinholes.is_empty() && p.calls.is_empty());
        let r = FtpRewriter.rewrite(b"EPRT !1!203.0.113.10!41234!\n", IN, &f, &mut p);
        assert_eq!(rewritten(&r), b"EPRT !2!fd64:64::cb00:710a!41234!\n");
        // A partial PORT line is waited for.
        let r = FtpRewriter.rewrite(b"PORT 203,0,1", IN, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Incomplete);
        // A third host (FXP), EPSV, other commands: unchanged.
        for msg in [
            &b"PORT 198,51,100,9,4,1\r\n"[..],
            b"EPSV\r\n",
            b"RETR f\r\n",
            b"EPRT |2|::1|5|\r\n",
        ] {
            let r = FtpRewriter.rewrite(msg, IN, &f, &mut p);
            assert_eq!(r.outcome, Outcome::Unchanged, "{msg:?}");
        }
        // Without RGW64 the public side is never rewritten.
        let r = run(b"PORT 203,0,113,10,160,26\r\n", IN, S, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
    }

    fn server64() -> FlowAddrs {
        FlowAddrs {
            private: SocketAddrV4::new(Ipv4Addr::new(10, 64, 0, 1), 21),
            peer: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 40000),
            private_v6: Some("fd00::103".parse().unwrap()),
            prefix64: Some("fd64:64::".parse().unwrap()),
            ..flow(Role::PrivateServer)
        }
    }

    #[test]
    fn pasv_towards_an_ipv6_server_becomes_epsv() {
        let f = server64();
        let mut p = Ports::default();
        for (msg, want) in [
            (&b"PASV\r\n"[..], &b"EPSV\r\n"[..]),
            (b"pasv\n", b"epsv\n"),
            (b"Pasv\r\n", b"EPSV\r\n"),
        ] {
            let r = FtpRewriter.rewrite(msg, IN, &f, &mut p);
            assert_eq!(rewritten(&r), want);
            assert_eq!(r.consumed, msg.len());
            assert!(r.pinholes.is_empty());
        }
        // Only the line itself.
        let r = FtpRewriter.rewrite(b"PASV\r\nRETR f\r\n", IN, &f, &mut p);
        assert_eq!((rewritten(&r), r.consumed), (&b"EPSV\r\n"[..], 6));
        // A partial PASV is waited for; PASVX and others are not PASV.
        let r = FtpRewriter.rewrite(b"PAS", IN, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Incomplete);
        for msg in [&b"PASVX\r\n"[..], b"EPSV\r\n", b"PAS\r\n"] {
            let r = FtpRewriter.rewrite(msg, IN, &f, &mut p);
            assert_eq!(r.outcome, Outcome::Unchanged, "{msg:?}");
        }
        // An IPv4 server's flow (no RGW64): PASV passes.
        let r = run(b"PASV\r\n", IN, S, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert!(p.calls.is_empty());
    }

    #[test]
    fn epsv_for_pasv_state() {
        let f = server64();
        let after = |f: &FlowAddrs, dir, msg: &[u8]| epsv_for_pasv_after(f, dir, msg);
        assert!(after(&f, IN, b"PASV\r\n"));
        assert!(after(&f, IN, b"pasv\n"));
        assert!(!after(&f, IN, b"EPSV\r\n"));
        assert!(!after(&f, IN, b"PASVX\r\n"));
        let on = FlowAddrs {
            epsv_for_pasv: true,
            peer_v6: None,
            public_v6: None,
            ..server64()
        };
        // Other commands keep it (pipelined after the PASV).
        assert!(after(&on, IN, b"RETR f\r\n"));
        // Replies to earlier commands keep it; the answer to it clears it.
        for msg in [
            &b"200 Type set to: Binary.\r\n"[..],
            b"226 Transfer complete.\r\n",
            b"150 File status okay.\r\n",
            b"230-Welcome\r\n",
        ] {
            assert!(after(&on, OUT, msg), "{msg:?}");
        }
        for msg in [
            &b"229 Entering extended passive mode (|||30001|).\r\n"[..],
            b"227 Entering passive mode (1,2,3,4,5,6).\r\n",
            b"500 Command not understood.\r\n",
            b"425 Can't open data connection.\r\n",
        ] {
            assert!(!after(&on, OUT, msg), "{msg:?}");
        }
        // Never for IPv4 hosts or private clients.
        assert!(!after(&flow(S), IN, b"PASV\r\n"));
        let c = FlowAddrs {
            role: Role::PrivateClient,
            ..server64()
        };
        assert!(!after(&c, IN, b"PASV\r\n"));
    }

    #[test]
    fn epsv_reply_to_a_converted_pasv_becomes_227() {
        let f = FlowAddrs {
            epsv_for_pasv: true,
            peer_v6: None,
            public_v6: None,
            ..server64()
        };
        let msg = b"229 Entering extended passive mode (|||30001|).\r\n";
        let mut p = Ports::default();
        let r = FtpRewriter.rewrite(msg, OUT, &f, &mut p);
        // 30001 = 117 * 256 + 49
        assert_eq!(
            rewritten(&r),
            b"227 Entering Passive Mode (100,64,1,131,117,49)\r\n"
        );
        assert_eq!(r.consumed, msg.len());
        assert_eq!(
            r.pinholes,
            vec![data_pinhole(
                Ipv4Addr::new(203, 0, 113, 10),
                30001,
                (Ipv4Addr::new(10, 64, 0, 1), 30001)
            )]
        );
        // Port moved by the allocator; bare newline kept.
        let mut p = Ports {
            taken: vec![30001],
            ..Default::default()
        };
        let r = FtpRewriter.rewrite(b"229 EPSV ok (|||30001|)\n", OUT, &f, &mut p);
        // 31001 = 121 * 256 + 25
        assert_eq!(
            rewritten(&r),
            b"227 Entering Passive Mode (100,64,1,131,121,25)\n"
        );
        assert_eq!(r.pinholes[0].private_port, 30001);
        // Without the flag, the client asked EPSV itself: 229 stays.
        let mut p = Ports::default();
        let r = FtpRewriter.rewrite(msg, OUT, &server64(), &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert_eq!(r.pinholes.len(), 1);
        // A malformed 229 is not turned into anything.
        let r = FtpRewriter.rewrite(b"229 (||30001|)\r\n", OUT, &f, &mut p);
        assert_eq!(r.outcome, Outcome::Malformed);
        // The flag without an IPv6 host (cannot happen: the engine never
        // sets it) changes nothing.
        let f4 = FlowAddrs {
            epsv_for_pasv: true,
            peer_v6: None,
            public_v6: None,
            ..flow(S)
        };
        let r = FtpRewriter.rewrite(msg, OUT, &f4, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
    }

    #[test]
    fn other_address_or_no_port_unchanged() {
        let mut p = Ports::default();
        let r = run(b"PORT 10,0,0,9,4,1\r\n", OUT, C, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert!(r.pinholes.is_empty());
        assert!(p.calls.is_empty());
        let mut p = Ports {
            none: true,
            ..Default::default()
        };
        let r = run(b"PORT 192,168,0,101,4,1\r\n", OUT, C, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert!(r.pinholes.is_empty());
    }

    #[test]
    fn malformed_port_and_eprt() {
        let mut p = Ports::default();
        for bad in [
            &b"PORT 192,168,0,101,4\r\n"[..],
            b"PORT 192,168,0,101,4,1,7\r\n",
            b"PORT 192,168,0,256,4,1\r\n",
            b"PORT 192,168,0,101,4,x\r\n",
            b"PORT 192,168,0,101,0,0\r\n",
            b"PORT\r\n",
            b"EPRT |1|192.168.0.101|41234\r\n",
            b"EPRT |1|192.168.0.1010|41234|\r\n",
            b"EPRT |3|192.168.0.101|41234|\r\n",
            b"EPRT |1|192.168.0.101|99999|\r\n",
            b"EPRT \r\n",
        ] {
            let r = run(bad, OUT, C, &mut p);
            assert_eq!(
                r.outcome,
                Outcome::Malformed,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(r.consumed, bad.len());
        }
        // Not PORT at all.
        let r = run(b"PORTAL 1\r\n", OUT, C, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
    }

    #[test]
    fn pasv_replies_of_real_servers() {
        let cases: [(&[u8], &[u8]); 4] = [
            // vsftpd
            (
                b"227 Entering Passive Mode (192,168,0,101,39,16).\r\n",
                b"227 Entering Passive Mode (100,64,1,131,39,16).\r\n",
            ),
            // pyftpdlib
            (
                b"227 Entering passive mode (192,168,0,101,156,65).\r\n",
                b"227 Entering passive mode (100,64,1,131,156,65).\r\n",
            ),
            // ProFTPD-style, and a variant without parentheses
            (
                b"227 Entering Passive Mode (192,168,0,101,195,80)\r\n",
                b"227 Entering Passive Mode (100,64,1,131,195,80)\r\n",
            ),
            (
                b"227 =192,168,0,101,39,16\r\n",
                b"227 =100,64,1,131,39,16\r\n",
            ),
        ];
        for (msg, want) in cases {
            let mut p = Ports::default();
            let r = run(msg, OUT, S, &mut p);
            assert_eq!(rewritten(&r), want);
            assert_eq!(r.consumed, msg.len());
            assert_eq!(r.pinholes.len(), 1);
            let h = &r.pinholes[0];
            assert_eq!(h.peer, Ipv4Addr::new(198, 51, 100, 7));
            assert_eq!(h.public_addr, Ipv4Addr::new(100, 64, 1, 131));
            assert_eq!(h.public_port, h.private_port);
        }
        let mut p = Ports::default();
        let r = run(
            b"227 Entering Passive Mode (192,168,0,101,39,16).\r\n",
            OUT,
            S,
            &mut p,
        );
        assert_eq!(r.pinholes[0].private_port, 39 * 256 + 16);
    }

    #[test]
    fn pasv_with_public_address_or_moved_port() {
        let mut p = Ports::default();
        let r = run(
            b"227 Entering Passive Mode (100,64,1,131,39,16).\r\n",
            OUT,
            S,
            &mut p,
        );
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert_eq!(r.pinholes.len(), 1);
        let mut p = Ports {
            taken: vec![10000],
            ..Default::default()
        };
        let r = run(
            b"227 Entering Passive Mode (100,64,1,131,39,16).\r\n",
            OUT,
            S,
            &mut p,
        );
        // 11000 = 42 * 256 + 248
        assert_eq!(
            rewritten(&r),
            b"227 Entering Passive Mode (100,64,1,131,42,248).\r\n"
        );
        // Third address: untouched.
        let r = run(
            b"227 Entering Passive Mode (10,1,2,3,39,16).\r\n",
            OUT,
            S,
            &mut p,
        );
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert!(r.pinholes.is_empty());
        // No numbers at all.
        let r = run(b"227 Entering Passive Mode.\r\n", OUT, S, &mut p);
        assert_eq!(r.outcome, Outcome::Malformed);
    }

    #[test]
    fn epsv_replies() {
        let mut p = Ports::default();
        let msg = b"229 Entering extended passive mode (|||40001|).\r\n";
        let r = run(msg, OUT, S, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert_eq!(r.consumed, msg.len());
        assert_eq!(r.pinholes.len(), 1);
        assert_eq!(r.pinholes[0].public_port, 40001);
        assert_eq!(r.pinholes[0].private_port, 40001);
        let mut p = Ports {
            taken: vec![40001],
            ..Default::default()
        };
        let r = run(msg, OUT, S, &mut p);
        assert_eq!(
            rewritten(&r),
            b"229 Entering extended passive mode (|||41001|).\r\n"
        );
        let r = run(
            b"229 Entering Extended Passive Mode (|||6446|)\r\n",
            OUT,
            S,
            &mut p,
        );
        assert_eq!(r.pinholes[0].private_port, 6446);
        let r = run(
            b"229 Entering Extended Passive Mode (||6446|)\r\n",
            OUT,
            S,
            &mut p,
        );
        assert_eq!(r.outcome, Outcome::Malformed);
    }

    #[test]
    fn other_lines_and_directions_unchanged() {
        let mut p = Ports::default();
        for (msg, dir, role) in [
            (&b"220 (vsFTPd 3.0.3)\r\n"[..], OUT, S),
            (b"230 Login successful.\r\n", OUT, S),
            (b"USER anonymous\r\n", OUT, C),
            // The public server's 227 and the public client's PORT: no ALG.
            (
                b"227 Entering Passive Mode (198,51,100,7,39,16).\r\n",
                IN,
                C,
            ),
            (b"PORT 192,168,0,101,4,1\r\n", IN, S),
            (b"200 PORT command successful.\r\n", IN, C),
        ] {
            let r = run(msg, dir, role, &mut p);
            assert_eq!(r.outcome, Outcome::Unchanged);
            assert_eq!(r.consumed, msg.len());
        }
        assert!(p.calls.is_empty());
    }

    #[test]
    fn partial_lines() {
        let mut p = Ports::default();
        // Could still be a PORT: hold.
        for part in [&b"P"[..], b"po", b"PORT 192,168,", b"EPRT |1|"] {
            let r = run(part, OUT, C, &mut p);
            assert_eq!(r.outcome, Outcome::Incomplete, "{part:?}");
            assert_eq!(r.consumed, 0);
        }
        let r = run(b"227 Entering Passive", OUT, S, &mut p);
        assert_eq!(r.outcome, Outcome::Incomplete);
        // Cannot: pass at once.
        let r = run(b"RETR some-long-file", OUT, C, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert_eq!(r.consumed, 19);
        let r = run(b"PORT", IN, S, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        let r = run(b"150 Here comes", OUT, S, &mut p);
        assert_eq!(r.outcome, Outcome::Unchanged);
        // Too long to be a PORT.
        let mut long = b"PORT ".to_vec();
        long.resize(MAX_LINE + 1, b'1');
        let r = run(&long, OUT, C, &mut p);
        assert_eq!(r.outcome, Outcome::Malformed);
        assert_eq!(r.consumed, long.len());
        // Empty buffer.
        let r = run(b"", OUT, C, &mut p);
        assert_eq!(r.outcome, Outcome::Incomplete);
    }

    #[test]
    fn deterministic() {
        let mut p = Ports::default();
        let a = run(b"PORT 192,168,0,101,4,1\r\n", OUT, C, &mut p);
        let b = run(b"PORT 192,168,0,101,4,1\r\n", OUT, C, &mut p);
        assert_eq!(a, b);
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let alphabet = b"PORTEPRTPASV227 9|,.()0123456789\r\n192168aA";
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 48) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|i| {
                    let r = x.rotate_left(i as u32 * 5);
                    if r % 7 < 1 {
                        (r >> 8) as u8
                    } else {
                        alphabet[(r >> 3) as usize % alphabet.len()]
                    }
                })
                .collect();
            for (dir, role) in [(OUT, C), (OUT, S), (IN, C), (IN, S)] {
                let mut p = Ports::default();
                let r = run(&buf, dir, role, &mut p);
                match r.outcome {
                    Outcome::Incomplete => assert_eq!(r.consumed, 0),
                    _ => assert!(r.consumed >= 1 && r.consumed <= buf.len()),
                }
            }
            // RGW64 server flows, with and without a converted PASV.
            for epsv_for_pasv in [false, true] {
                let f = FlowAddrs {
                    epsv_for_pasv,
                    peer_v6: None,
                    public_v6: None,
                    ..server64()
                };
                for dir in [OUT, IN] {
                    let mut p = Ports::default();
                    let r = FtpRewriter.rewrite(&buf, dir, &f, &mut p);
                    match r.outcome {
                        Outcome::Incomplete => assert_eq!(r.consumed, 0),
                        _ => assert!(r.consumed >= 1 && r.consumed <= buf.len()),
                    }
                    let _ = epsv_for_pasv_after(&f, dir, &buf);
                }
            }
        }
    }
}

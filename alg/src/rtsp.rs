//! RTSP (RFC 2326, RFC 7826) message rewriter for a TCP control stream.
//!
//! Only messages from the private side change:
//! - a request of a private client (`SETUP`, any request with a
//!   `Transport` header): each UDP transport spec's `client_port=a-b` gets
//!   public ports for a and b (b = a + 1 when only a is given) and one
//!   pinhole per port from the server (the signalling peer) to the public
//!   address; `destination=` naming the private address becomes the public
//!   one; RTSP 2.0 `dest_addr="host:port"/…` is treated the same way;
//! - a response of a private server: `server_port=c-d` gets public ports and
//!   pinholes from the public client, with `snat` so the server's RTP leaves
//!   with the pool address; `source=` / RTSP 2.0 `src_addr=` likewise;
//! - any message: an `application/sdp` body (DESCRIBE response, ANNOUNCE) has
//!   its private `c=`/`o=`/`a=control:` addresses rewritten *without* media
//!   pinholes (the ports are negotiated in SETUP) and `Content-Length` is
//!   fixed; `Content-Base`, `Content-Location` and `RTP-Info` URLs whose host
//!   is the private address get the public one.
//!
//! The reply to a private client's SETUP echoes the public `client_port`
//! values; it is not mapped back (the rewriter keeps no state, and neither
//! ffmpeg nor GStreamer compare them). Transport specs over TCP
//! (`interleaved=`) and multicast specs need nothing. Interleaved binary
//! data (`$`, channel, 16-bit length, RFC 2326 §10.12) and CRLFs between
//! messages are consumed unchanged. A message without `Content-Length` has
//! no body (RFC 2326 §12.14).

use std::ops::Range;
use std::time::Duration;

use crate::sdp::{self, SdpPolicy};
use crate::sip::text::{self, Edits, Framing, Syntax};
use crate::{
    Direction, FlowAddrs, MessageResult, Outcome, Pinhole, PortAlloc, Rewriter, Role, Transport,
};

/// Default lifetime of the pinholes opened by a SETUP: the client starts
/// PLAY right after SETUP.
pub const DEFAULT_MEDIA_LIFETIME: Duration = Duration::from_secs(120);

/// Rewrites RTSP messages on a TCP stream.
#[derive(Debug, Clone)]
pub struct RtspRewriter {
    /// Lifetime of the RTP/RTCP pinholes opened from `Transport` headers.
    pub media_lifetime: Duration,
}

impl Default for RtspRewriter {
    fn default() -> Self {
        RtspRewriter {
            media_lifetime: DEFAULT_MEDIA_LIFETIME,
        }
    }
}

const RTSP_SYNTAX: Syntax = Syntax {
    version: b"RTSP/",
    compact_forms: false,
};

/// Which end of the media a `Transport` header describes for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A private client's request: `client_port`, `destination`, `dest_addr`.
    Client,
    /// A private server's response: `server_port`, `source`, `src_addr`.
    Server,
}

/// Port allocation failed: the message passes unchanged.
struct NoPort;

impl Rewriter for RtspRewriter {
    fn rewrite(
        &self,
        buf: &[u8],
        dir: Direction,
        flow: &FlowAddrs,
        ports: &mut dyn PortAlloc,
    ) -> MessageResult {
        let stream = flow.transport == Transport::Tcp;
        if stream {
            if buf.first() == Some(&b'$') {
                // Interleaved frame: '$', channel, length (network order).
                let frame = match (buf.get(2), buf.get(3)) {
                    (Some(&hi), Some(&lo)) => 4 + usize::from(u16::from_be_bytes([hi, lo])),
                    _ => return text::result(Outcome::Incomplete, 0),
                };
                if buf.len() < frame {
                    return text::result(Outcome::Incomplete, 0);
                }
                return text::result(Outcome::Unchanged, frame);
            }
            let lead = text::leading_crlf(buf);
            if lead > 0 {
                return text::result(Outcome::Unchanged, lead);
            }
        }
        let msg = match text::frame(buf, &RTSP_SYNTAX, stream) {
            Framing::Message(m) => m,
            Framing::Incomplete => return text::result(Outcome::Incomplete, 0),
            Framing::Malformed { skip } => {
                return text::result(Outcome::Malformed, if stream { skip } else { buf.len() })
            }
        };
        if dir == Direction::FromPublic {
            return text::result(Outcome::Unchanged, msg.end);
        }
        let mut pinholes = Vec::new();
        let Ok(edits) = self.private_to_public(buf, &msg, flow, ports, &mut pinholes) else {
            return text::result(Outcome::Unchanged, msg.end);
        };
        if edits.is_empty() {
            return MessageResult {
                outcome: Outcome::Unchanged,
                consumed: msg.end,
                pinholes,
            };
        }
        MessageResult {
            outcome: Outcome::Rewritten(edits.apply(buf.get(..msg.end).unwrap_or_default())),
            consumed: msg.end,
            pinholes,
        }
    }
}

impl RtspRewriter {
    fn private_to_public(
        &self,
        buf: &[u8],
        msg: &text::Message,
        flow: &FlowAddrs,
        ports: &mut dyn PortAlloc,
        pinholes: &mut Vec<Pinhole>,
    ) -> Result<Edits, NoPort> {
        let private = *flow.private.ip();
        let public = flow.public.to_string().into_bytes();
        let side = if msg.is_request {
            Side::Client
        } else {
            Side::Server
        };
        let mut edits = Edits::default();
        let mut is_sdp = false;
        let mut content_length = None;
        for h in &msg.headers {
            let name = h.name_bytes(buf);
            let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
            if is(b"transport") {
                self.transport_edits(
                    buf,
                    h.value.clone(),
                    side,
                    flow,
                    ports,
                    &mut edits,
                    pinholes,
                )?;
            } else if is(b"content-base") || is(b"content-location") || is(b"rtp-info") {
                text::uri_host_edits(buf, h.value.clone(), private, &public, &mut edits);
            } else if is(b"content-type") {
                is_sdp = text::is_sdp(h.value_bytes(buf));
            } else if is(b"content-length") {
                content_length = Some(h.value.clone());
            }
        }
        let body = buf.get(msg.body.clone()).unwrap_or_default();
        if is_sdp && !body.is_empty() {
            let policy = SdpPolicy {
                media_pinholes: false,
                lifetime: self.media_lifetime,
            };
            let sdp = sdp::rewrite(body, flow, ports, &policy).map_err(|_| NoPort)?;
            if let Some(new_body) = sdp.body {
                if let Some(cl) = content_length {
                    edits.replace(cl, new_body.len().to_string().into_bytes());
                }
                edits.replace(msg.body.clone(), new_body);
            }
        }
        Ok(edits)
    }

    #[allow(clippy::too_many_arguments)]
    fn transport_edits(
        &self,
        buf: &[u8],
        value: Range<usize>,
        side: Side,
        flow: &FlowAddrs,
        ports: &mut dyn PortAlloc,
        edits: &mut Edits,
        pinholes: &mut Vec<Pinhole>,
    ) -> Result<(), NoPort> {
        let private = *flow.private.ip();
        let public = flow.public.to_string();
        let params = transport_params(buf, value);
        let specs = params.last().map_or(0, |p| p.spec + 1);
        let mut open = |port: u16, pinholes: &mut Vec<Pinhole>| -> Result<u16, NoPort> {
            let public_port = ports.public_port(Transport::Udp, port).ok_or(NoPort)?;
            let p = Pinhole {
                peer: *flow.peer.ip(),
                transport: Transport::Udp,
                public_addr: flow.public,
                public_port,
                private_addr: private,
                private_port: port,
                lifetime: self.media_lifetime,
                snat: flow.role == Role::PrivateServer,
            };
            if !pinholes.contains(&p) {
                pinholes.push(p);
            }
            Ok(public_port)
        };
        let (port_name, addr_name, quoted_name): (&[u8], &[u8], &[u8]) = match side {
            Side::Client => (b"client_port", b"destination", b"dest_addr"),
            Side::Server => (b"server_port", b"source", b"src_addr"),
        };
        for spec in 0..specs {
            let ps: Vec<&Param> = params.iter().filter(|p| p.spec == spec).collect();
            let Some(proto) = ps.first().and_then(|p| buf.get(p.name.clone())) else {
                continue;
            };
            // RTP/AVP, RTP/AVP/UDP, RTP/SAVP…; a TCP lower transport needs nothing.
            let upper = proto.to_ascii_uppercase();
            if upper.ends_with(b"/TCP") || !upper.starts_with(b"RTP/") {
                continue;
            }
            if ps.iter().any(|p| p.is(buf, b"multicast")) {
                continue;
            }
            for p in &ps {
                let Some(v) = p.value.clone() else { continue };
                if p.is(buf, port_name) {
                    let Some((lo, hi)) = buf.get(v.clone()).and_then(parse_port_range) else {
                        continue;
                    };
                    let pub_lo = open(lo, pinholes)?;
                    let pub_hi = match hi.or(lo.checked_add(1)) {
                        Some(h) => Some(open(h, pinholes)?),
                        None => None,
                    };
                    let new = match (hi, pub_hi) {
                        (None, Some(ph)) if pub_lo.checked_add(1) != Some(ph) => {
                            format!("{pub_lo}-{ph}")
                        }
                        (Some(_), Some(ph)) => format!("{pub_lo}-{ph}"),
                        _ => pub_lo.to_string(),
                    };
                    if buf.get(v.clone()) != Some(new.as_bytes()) {
                        edits.replace(v, new.into_bytes());
                    }
                } else if p.is(buf, addr_name) {
                    // destination=host / source=host (RFC 2326 §12.39), maybe quoted.
                    let h = host_in(buf, v);
                    if buf
                        .get(h.clone())
                        .is_some_and(|b| text::is_addr(b, private))
                    {
                        edits.replace(h, public.clone().into_bytes());
                    }
                } else if p.is(buf, quoted_name) {
                    // dest_addr / src_addr = "host:port" *("/" "host:port") (RFC 7826 §18.54).
                    for (host, port) in quoted_addrs(buf, v) {
                        if buf
                            .get(host.clone())
                            .is_some_and(|b| text::is_addr(b, private))
                        {
                            edits.replace(host, public.clone().into_bytes());
                        }
                        let Some(pp) = buf.get(port.clone()).and_then(parse_port) else {
                            continue;
                        };
                        let pub_port = open(pp, pinholes)?;
                        if pub_port != pp {
                            edits.replace(port, pub_port.to_string().into_bytes());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// One `;`-separated parameter of a `Transport` header, in the `spec`-th
/// comma-separated transport spec. The first parameter of a spec is its
/// transport protocol.
#[derive(Debug, Clone)]
struct Param {
    spec: usize,
    name: Range<usize>,
    value: Option<Range<usize>>,
}

impl Param {
    fn is(&self, buf: &[u8], name: &[u8]) -> bool {
        buf.get(self.name.clone())
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }
}

fn trim(buf: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.start < r.end && buf.get(r.start).is_some_and(|b| b.is_ascii_whitespace()) {
        r.start += 1;
    }
    while r.end > r.start && buf.get(r.end - 1).is_some_and(|b| b.is_ascii_whitespace()) {
        r.end -= 1;
    }
    r
}

fn transport_params(buf: &[u8], value: Range<usize>) -> Vec<Param> {
    let mut out = Vec::new();
    let mut spec = 0;
    let mut seg_start = value.start;
    let mut quoted = false;
    let mut i = value.start;
    let push = |spec: usize, seg: Range<usize>, out: &mut Vec<Param>| {
        let seg = trim(buf, seg);
        if seg.start >= seg.end {
            return;
        }
        let eq = buf
            .get(seg.clone())
            .and_then(|s| s.iter().position(|&b| b == b'='));
        let (name, value) = match eq {
            Some(o) => (
                trim(buf, seg.start..seg.start + o),
                Some(trim(buf, seg.start + o + 1..seg.end)),
            ),
            None => (seg, None),
        };
        out.push(Param { spec, name, value });
    };
    while i <= value.end {
        let b = if i == value.end {
            None
        } else {
            buf.get(i).copied()
        };
        match b {
            Some(b'"') => quoted = !quoted,
            Some(b'\\') if quoted => i += 1,
            Some(b';') if !quoted => {
                push(spec, seg_start..i, &mut out);
                seg_start = i + 1;
            }
            Some(b',') if !quoted => {
                push(spec, seg_start..i, &mut out);
                seg_start = i + 1;
                spec += 1;
            }
            None => {
                push(spec, seg_start..i.min(value.end), &mut out);
                break;
            }
            Some(_) => {}
        }
        i += 1;
    }
    // Specs are numbered densely from 0 even when one was empty.
    let mut renumbered = Vec::with_capacity(out.len());
    let mut last = None;
    let mut n = 0;
    for p in out {
        if last.is_some_and(|l| l != p.spec) {
            n += 1;
        }
        last = Some(p.spec);
        renumbered.push(Param { spec: n, ..p });
    }
    renumbered
}

fn parse_port(b: &[u8]) -> Option<u16> {
    if b.is_empty() || b.len() > 5 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b)
        .ok()?
        .parse()
        .ok()
        .filter(|&p| p != 0)
}

/// `a` or `a-b`.
fn parse_port_range(v: &[u8]) -> Option<(u16, Option<u16>)> {
    match v.iter().position(|&b| b == b'-') {
        Some(d) => Some((parse_port(v.get(..d)?)?, Some(parse_port(v.get(d + 1..)?)?))),
        None => Some((parse_port(v)?, None)),
    }
}

/// The host part of `host`, `"host"` or `host:port`.
fn host_in(buf: &[u8], v: Range<usize>) -> Range<usize> {
    let mut r = v;
    if buf.get(r.start) == Some(&b'"') && r.end > r.start + 1 && buf.get(r.end - 1) == Some(&b'"') {
        r = r.start + 1..r.end - 1;
    }
    let colon = buf
        .get(r.clone())
        .and_then(|s| s.iter().position(|&b| b == b':'));
    match colon {
        Some(c) => r.start..r.start + c,
        None => r,
    }
}

/// The (host, port) ranges of `"host:port"/"host:port"` (host may be empty).
fn quoted_addrs(buf: &[u8], v: Range<usize>) -> Vec<(Range<usize>, Range<usize>)> {
    let mut out = Vec::new();
    let mut i = v.start;
    while i < v.end {
        if buf.get(i) != Some(&b'"') {
            i += 1;
            continue;
        }
        let start = i + 1;
        let Some(len) = buf
            .get(start..v.end)
            .and_then(|s| s.iter().position(|&b| b == b'"'))
        else {
            break;
        };
        let end = start + len;
        if let Some(c) = buf
            .get(start..end)
            .and_then(|s| s.iter().rposition(|&b| b == b':'))
        {
            // IPv6 "[…]:port" hosts never match the IPv4 address, so the
            // last colon is the port separator in every case we rewrite.
            out.push((start..start + c, start + c + 1..end));
        }
        i = end + 1;
    }
    out
}

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

use crate::sdp::{self, SdpPolicy};
use crate::sip::text::{self, Edits, Syntax};
use crate::{
    Direction, FlowAddrs, MessageResult, Outcome, Pinhole, PortAlloc, Rewriter, Role, Transport,
};

/// Rewrites RTSP messages on a TCP stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct RtspRewriter;

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
        let msg = match text::frame_at(buf, 0, &RTSP_SYNTAX, stream) {
            Ok(m) => m,
            Err(r) => return r,
        };
        if dir == Direction::FromPublic {
            return text::result(Outcome::Unchanged, msg.end);
        }
        let mut pinholes = Vec::new();
        let Ok(edits) = private_to_public(buf, &msg, flow, ports, &mut pinholes) else {
            return text::result(Outcome::Unchanged, msg.end);
        };
        text::edited(buf, 0, &msg, edits, pinholes)
    }
}

fn private_to_public(
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
    for h in &msg.headers {
        let name = h.name_bytes(buf);
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"transport") {
            transport_edits(
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
        }
    }
    if let Some(body) = msg.sdp_body(buf).filter(|b| !b.is_empty()) {
        let policy = SdpPolicy {
            media_pinholes: false,
        };
        let sdp = sdp::rewrite(body, flow, ports, &policy).map_err(|_| NoPort)?;
        if let Some(new_body) = sdp.body {
            edits.replace_body(msg, new_body);
        }
    }
    Ok(edits)
}

#[allow(clippy::too_many_arguments)]
fn transport_edits(
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
            snat: flow.role == Role::PrivateServer,
            ..Pinhole::new(flow, Transport::Udp, public_port, port)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    // Captured on loopback in a network namespace: ffprobe (Lavf59.27.100,
    // `-rtsp_transport udp` and `tcp`) against a GStreamer 1.22 rtsp-server
    // (`videotestsrc ! jpegenc ! rtpjpegpay`), the private end being
    // 192.168.0.101 and the public one 198.51.100.7.

    // tcp 192.168.0.101:42766 -> 198.51.100.7:8554
    const FF_OPTIONS: &[u8] = concat!(
        "OPTIONS rtsp://198.51.100.7:8554/test RTSP/1.0\r\n",
        "CSeq: 1\r\n",
        "User-Agent: Lavf59.27.100\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:42766 -> 198.51.100.7:8554
    const FF_DESCRIBE: &[u8] = concat!(
        "DESCRIBE rtsp://198.51.100.7:8554/test RTSP/1.0\r\n",
        "Accept: application/sdp\r\n",
        "CSeq: 2\r\n",
        "User-Agent: Lavf59.27.100\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:42766 -> 198.51.100.7:8554
    const FF_SETUP: &[u8] = concat!(
        "SETUP rtsp://198.51.100.7:8554/test/stream=0 RTSP/1.0\r\n",
        "Transport: RTP/AVP/UDP;unicast;client_port=24588-24589\r\n",
        "CSeq: 3\r\n",
        "User-Agent: Lavf59.27.100\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:42766 -> 198.51.100.7:8554
    const FF_PLAY: &[u8] = concat!(
        "PLAY rtsp://198.51.100.7:8554/test/ RTSP/1.0\r\n",
        "Range: npt=0.000-\r\n",
        "CSeq: 4\r\n",
        "User-Agent: Lavf59.27.100\r\n",
        "Session: IZzFCqqL-qO7+FfP\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:42766 -> 198.51.100.7:8554
    const FF_TEARDOWN: &[u8] = concat!(
        "TEARDOWN rtsp://198.51.100.7:8554/test/ RTSP/1.0\r\n",
        "CSeq: 5\r\n",
        "User-Agent: Lavf59.27.100\r\n",
        "Session: IZzFCqqL-qO7+FfP\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:8554 -> 198.51.100.7:60266
    const GST_OPTIONS_200: &[u8] = concat!(
        "RTSP/1.0 200 OK\r\n",
        "CSeq: 1\r\n",
        "Public: OPTIONS, DESCRIBE, ANNOUNCE, GET_PARAMETER, PAUSE, PLAY, RECORD, SETUP, SET_PARAMETER, TEARDOWN\r\n",
        "Server: GStreamer RTSP server\r\n",
        "Date: Sun, 22 Nov 2026 18:10:45 GMT\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:8554 -> 198.51.100.7:60266
    const GST_DESCRIBE_200: &[u8] = concat!(
        "RTSP/1.0 200 OK\r\n",
        "CSeq: 2\r\n",
        "Content-Type: application/sdp\r\n",
        "Content-Base: rtsp://192.168.0.101:8554/test/\r\n",
        "Server: GStreamer RTSP server\r\n",
        "Date: Sun, 22 Nov 2026 18:10:45 GMT\r\n",
        "Content-Length: 376\r\n",
        "\r\n",
        "v=0\r\n",
        "o=- 16207143059413717642 1 IN IP4 192.168.0.101\r\n",
        "s=Session streamed with GStreamer\r\n",
        "i=rtsp-server\r\n",
        "t=0 0\r\n",
        "a=tool:GStreamer\r\n",
        "a=type:broadcast\r\n",
        "a=control:*\r\n",
        "a=range:npt=now-\r\n",
        "m=video 0 RTP/AVP 26\r\n",
        "c=IN IP4 0.0.0.0\r\n",
        "a=rtpmap:26 JPEG/90000\r\n",
        "a=framerate:10.000000\r\n",
        "a=control:stream=0\r\n",
        "a=ts-refclk:local\r\n",
        "a=mediaclk:sender\r\n",
        "a=ssrc:925216816 cname:user1301130160@host-b3df7a90\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:8554 -> 198.51.100.7:60266
    const GST_SETUP_200: &[u8] = concat!(
        "RTSP/1.0 200 OK\r\n",
        "CSeq: 3\r\n",
        "Transport: RTP/AVP;unicast;client_port=19872-19873;server_port=35768-35769;ssrc=3725B030;mode=\"PLAY\"\r\n",
        "Server: GStreamer RTSP server\r\n",
        "Session: 9g-Cksw+GQCDP8s6\r\n",
        "Date: Sun, 22 Nov 2026 18:10:45 GMT\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:8554 -> 198.51.100.7:60266
    const GST_PLAY_200: &[u8] = concat!(
        "RTSP/1.0 200 OK\r\n",
        "CSeq: 4\r\n",
        "RTP-Info: url=rtsp://192.168.0.101:8554/test/stream=0;seq=14397;rtptime=1288210467\r\n",
        "Range: npt=now-\r\n",
        "Server: GStreamer RTSP server\r\n",
        "Session: 9g-Cksw+GQCDP8s6\r\n",
        "Date: Sun, 22 Nov 2026 18:10:45 GMT\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:8554 -> 198.51.100.7:60266
    const GST_TEARDOWN_200: &[u8] = concat!(
        "RTSP/1.0 200 OK\r\n",
        "CSeq: 5\r\n",
        "Server: GStreamer RTSP server\r\n",
        "Session: 9g-Cksw+GQCDP8s6\r\n",
        "Connection: close\r\n",
        "Date: Sun, 22 Nov 2026 18:10:47 GMT\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 198.51.100.7:60266 -> 192.168.0.101:8554
    const FF_SETUP_TO_PRIVATE: &[u8] = concat!(
        "SETUP rtsp://192.168.0.101:8554/test/stream=0 RTSP/1.0\r\n",
        "Transport: RTP/AVP/UDP;unicast;client_port=19872-19873\r\n",
        "CSeq: 3\r\n",
        "User-Agent: Lavf59.27.100\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:8554 -> 198.51.100.7:39136
    const GST_PLAY_200_TCP: &[u8] = concat!(
        "RTSP/1.0 200 OK\r\n",
        "CSeq: 4\r\n",
        "RTP-Info: url=rtsp://192.168.0.101:8554/test/stream=0;seq=29097;rtptime=3848316512\r\n",
        "Range: npt=now-\r\n",
        "Server: GStreamer RTSP server\r\n",
        "Session: kcYceYoLIYTjanct\r\n",
        "Date: Sun, 22 Nov 2026 18:11:01 GMT\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:8554 -> 198.51.100.7:39136
    const GST_SETUP_200_TCP: &[u8] = concat!(
        "RTSP/1.0 200 OK\r\n",
        "CSeq: 3\r\n",
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=574D4FFA;mode=\"PLAY\"\r\n",
        "Server: GStreamer RTSP server\r\n",
        "Session: kcYceYoLIYTjanct\r\n",
        "Date: Sun, 22 Nov 2026 18:11:01 GMT\r\n",
        "\r\n",
    )
    .as_bytes();

    fn rw() -> RtspRewriter {
        RtspRewriter
    }

    fn client_flow() -> FlowAddrs {
        flow(Role::PrivateClient, Transport::Tcp, 42766, 8554)
    }

    fn server_flow() -> FlowAddrs {
        flow(Role::PrivateServer, Transport::Tcp, 8554, 60266)
    }

    fn pinholes(list: &[(u16, u16)], snat: bool) -> Vec<Pinhole> {
        list.iter()
            .map(|&(public_port, private_port)| media_pinhole(public_port, private_port, snat))
            .collect()
    }

    #[test]
    fn private_client_setup_gets_public_client_ports() {
        let r = rw().rewrite(
            FF_SETUP,
            Direction::FromPrivate,
            &client_flow(),
            &mut OffsetPorts(30000),
        );
        assert_eq!(r.consumed, FF_SETUP.len());
        let expected = concat!(
            "SETUP rtsp://198.51.100.7:8554/test/stream=0 RTSP/1.0\r\n",
            "Transport: RTP/AVP/UDP;unicast;client_port=54588-54589\r\n",
            "CSeq: 3\r\n",
            "User-Agent: Lavf59.27.100\r\n",
            "\r\n",
        );
        assert_eq!(
            String::from_utf8_lossy(&output(&r.outcome, FF_SETUP)),
            expected
        );
        assert_eq!(
            r.pinholes,
            pinholes(&[(54588, 24588), (54589, 24589)], false)
        );
        // Same ports: nothing to rewrite, the pinholes are still needed.
        let r = rw().rewrite(
            FF_SETUP,
            Direction::FromPrivate,
            &client_flow(),
            &mut OffsetPorts(0),
        );
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert_eq!(
            r.pinholes,
            pinholes(&[(24588, 24588), (24589, 24589)], false)
        );
        // Idempotent.
        let mut ports = OffsetPorts(30000);
        let a = rw().rewrite(FF_SETUP, Direction::FromPrivate, &client_flow(), &mut ports);
        let b = rw().rewrite(FF_SETUP, Direction::FromPrivate, &client_flow(), &mut ports);
        assert_eq!(a, b);
        // Exhausted pool: unchanged, nothing opened.
        let r = rw().rewrite(
            FF_SETUP,
            Direction::FromPrivate,
            &client_flow(),
            &mut NoPorts,
        );
        assert_eq!((r.outcome, r.pinholes.len()), (Outcome::Unchanged, 0));
    }

    #[test]
    fn private_client_requests_without_transport_are_unchanged() {
        for msg in [FF_OPTIONS, FF_DESCRIBE, FF_PLAY, FF_TEARDOWN] {
            let r = rw().rewrite(
                msg,
                Direction::FromPrivate,
                &client_flow(),
                &mut OffsetPorts(1),
            );
            assert_eq!((r.outcome, r.consumed), (Outcome::Unchanged, msg.len()));
            assert!(r.pinholes.is_empty());
        }
    }

    #[test]
    fn private_server_describe_rewrites_sdp_and_content_base() {
        let r = rw().rewrite(
            GST_DESCRIBE_200,
            Direction::FromPrivate,
            &server_flow(),
            &mut NoPorts,
        );
        let out = output(&r.outcome, GST_DESCRIBE_200);
        let expected = replace(
            &replace(GST_DESCRIBE_200, "192.168.0.101", "203.0.113.10"),
            "Content-Length: 376",
            "Content-Length: 375",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
        let s = String::from_utf8_lossy(&out);
        let (_, body) = s.split_once("\r\n\r\n").expect("body");
        assert_eq!(body.len(), 375);
        // Media ports come with SETUP: none here (m=video 0, c=0.0.0.0 untouched).
        assert!(s.contains("m=video 0 RTP/AVP 26\r\nc=IN IP4 0.0.0.0\r\n"));
        assert!(r.pinholes.is_empty());
    }

    #[test]
    fn private_server_setup_reply_opens_server_ports_with_snat() {
        let r = rw().rewrite(
            GST_SETUP_200,
            Direction::FromPrivate,
            &server_flow(),
            &mut OffsetPorts(1000),
        );
        assert_eq!(
            output(&r.outcome, GST_SETUP_200),
            replace(
                GST_SETUP_200,
                "server_port=35768-35769",
                "server_port=36768-36769"
            )
        );
        assert_eq!(
            r.pinholes,
            pinholes(&[(36768, 35768), (36769, 35769)], true)
        );
    }

    #[test]
    fn private_server_play_reply_rtp_info_url() {
        let r = rw().rewrite(
            GST_PLAY_200,
            Direction::FromPrivate,
            &server_flow(),
            &mut NoPorts,
        );
        assert_eq!(
            output(&r.outcome, GST_PLAY_200),
            replace(
                GST_PLAY_200,
                "rtsp://192.168.0.101:",
                "rtsp://203.0.113.10:"
            )
        );
        for msg in [GST_OPTIONS_200, GST_TEARDOWN_200] {
            let r = rw().rewrite(msg, Direction::FromPrivate, &server_flow(), &mut NoPorts);
            assert_eq!((r.outcome, r.consumed), (Outcome::Unchanged, msg.len()));
        }
    }

    #[test]
    fn public_side_messages_are_never_touched() {
        for msg in [FF_SETUP_TO_PRIVATE, GST_SETUP_200, GST_DESCRIBE_200] {
            let r = rw().rewrite(
                msg,
                Direction::FromPublic,
                &server_flow(),
                &mut OffsetPorts(5),
            );
            assert_eq!((r.outcome, r.consumed), (Outcome::Unchanged, msg.len()));
            assert!(r.pinholes.is_empty());
        }
    }

    /// The PLAY reply and the first interleaved frames of the `tcp` capture
    /// (real frame headers and RTP headers, payload filled in).
    fn interleaved_stream() -> (Vec<u8>, Vec<usize>) {
        let mut s = GST_SETUP_200_TCP.to_vec();
        let mut lens = vec![s.len()];
        s.extend_from_slice(GST_PLAY_200_TCP);
        lens.push(GST_PLAY_200_TCP.len());
        for (channel, len, rtp_header) in [
            (0u8, 1400u16, &b"\x80\x1aq\xa9\xe5`\xa6`WMO\xfa"[..]),
            (1, 28, &b"\x80\xc8\x00\x06WMO\xfa"[..]),
            (0, 0, &b""[..]),
        ] {
            let mut frame = vec![b'$', channel];
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(rtp_header);
            frame.resize(4 + usize::from(len), b'\r');
            lens.push(frame.len());
            s.extend_from_slice(&frame);
        }
        s.extend_from_slice(GST_TEARDOWN_200);
        lens.push(GST_TEARDOWN_200.len());
        (s, lens)
    }

    #[test]
    fn interleaved_frames_are_consumed_unchanged() {
        let (stream, lens) = interleaved_stream();
        let flow = flow(Role::PrivateServer, Transport::Tcp, 8554, 39136);
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < stream.len() {
            let r = rw().rewrite(
                &stream[pos..],
                Direction::FromPrivate,
                &flow,
                &mut OffsetPorts(9),
            );
            assert!(r.consumed > 0);
            if stream[pos] == b'$' {
                assert_eq!(r.outcome, Outcome::Unchanged);
            }
            assert!(r.pinholes.is_empty(), "interleaved transport opens nothing");
            got.push(r.consumed);
            pos += r.consumed;
        }
        assert_eq!(got, lens);
    }

    #[test]
    fn every_split_point_is_incomplete() {
        let (stream, lens) = interleaved_stream();
        let mut pos = 0;
        for len in lens {
            let msg = &stream[pos..pos + len];
            check_splits(&rw(), msg, Direction::FromPrivate, &server_flow());
            pos += len;
        }
        for msg in [FF_SETUP, FF_PLAY, GST_DESCRIBE_200, GST_SETUP_200] {
            check_splits(&rw(), msg, Direction::FromPrivate, &server_flow());
            check_splits(&rw(), msg, Direction::FromPrivate, &client_flow());
            check_splits(&rw(), msg, Direction::FromPublic, &client_flow());
        }
    }

    #[test]
    fn destination_source_and_rtsp2_addresses() {
        let req = concat!(
            "SETUP rtsp://198.51.100.7/a RTSP/1.0\r\n",
            "Transport: RTP/AVP;unicast;destination=192.168.0.101;client_port=5000,",
            " RTP/AVP/TCP;interleaved=0-1,",
            " RTP/AVP;multicast;destination=232.1.1.1;client_port=6000-6001,",
            " RTP/AVP/UDP;unicast;dest_addr=\"192.168.0.101:7000\"/\"192.168.0.101:7001\"\r\n",
            "CSeq: 1\r\n\r\n",
        )
        .as_bytes();
        let r = rw().rewrite(
            req,
            Direction::FromPrivate,
            &client_flow(),
            &mut OffsetPorts(100),
        );
        let expected = concat!(
            "SETUP rtsp://198.51.100.7/a RTSP/1.0\r\n",
            "Transport: RTP/AVP;unicast;destination=203.0.113.10;client_port=5100,",
            " RTP/AVP/TCP;interleaved=0-1,",
            " RTP/AVP;multicast;destination=232.1.1.1;client_port=6000-6001,",
            " RTP/AVP/UDP;unicast;dest_addr=\"203.0.113.10:7100\"/\"203.0.113.10:7101\"\r\n",
            "CSeq: 1\r\n\r\n",
        );
        assert_eq!(String::from_utf8_lossy(&output(&r.outcome, req)), expected);
        assert_eq!(
            r.pinholes,
            pinholes(
                &[(5100, 5000), (5101, 5001), (7100, 7000), (7101, 7001)],
                false
            )
        );

        // Single client port whose RTCP public port is not adjacent: both spelled out.
        let single =
            b"SETUP rtsp://h/a RTSP/1.0\r\nTransport: RTP/AVP;unicast;client_port=5000\r\n\r\n";
        let r = rw().rewrite(
            single,
            Direction::FromPrivate,
            &client_flow(),
            &mut TablePorts(vec![(5001, 9999)]),
        );
        assert_eq!(
            output(&r.outcome, single),
            replace(single, "client_port=5000", "client_port=5000-9999")
        );

        let resp = concat!(
            "RTSP/1.0 200 OK\r\nCSeq: 1\r\n",
            "Transport: RTP/AVP;unicast;source=192.168.0.101;client_port=5000-5001;server_port=6970-6971,",
            " RTP/AVP;unicast;src_addr=\"192.168.0.101:8000\"/\"192.168.0.101:8001\"\r\n",
            "Content-Location: rtsp://192.168.0.101/a/\r\n\r\n",
        )
        .as_bytes();
        let r = rw().rewrite(
            resp,
            Direction::FromPrivate,
            &server_flow(),
            &mut OffsetPorts(1),
        );
        let expected = concat!(
            "RTSP/1.0 200 OK\r\nCSeq: 1\r\n",
            "Transport: RTP/AVP;unicast;source=203.0.113.10;client_port=5000-5001;server_port=6971-6972,",
            " RTP/AVP;unicast;src_addr=\"203.0.113.10:8001\"/\"203.0.113.10:8002\"\r\n",
            "Content-Location: rtsp://203.0.113.10/a/\r\n\r\n",
        );
        assert_eq!(String::from_utf8_lossy(&output(&r.outcome, resp)), expected);
        assert_eq!(
            r.pinholes,
            pinholes(
                &[(6971, 6970), (6972, 6971), (8001, 8000), (8002, 8001)],
                true
            )
        );
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let (stream, _) = interleaved_stream();
        let seeds: &[&[u8]] = &[FF_SETUP, GST_DESCRIBE_200, GST_SETUP_200, &stream[..300]];
        for role in [Role::PrivateClient, Role::PrivateServer] {
            fuzz(&rw(), seeds, role, Transport::Tcp);
        }
        // A short '$' header waits; a body bigger than MAX_BODY does not.
        let r = rw().rewrite(
            b"$\x00",
            Direction::FromPublic,
            &client_flow(),
            &mut NoPorts,
        );
        assert_eq!((r.outcome, r.consumed), (Outcome::Incomplete, 0));
        let big = b"RTSP/1.0 200 OK\r\nContent-Length: 999999999\r\n\r\n";
        let r = rw().rewrite(big, Direction::FromPrivate, &server_flow(), &mut NoPorts);
        assert_eq!((r.outcome, r.consumed), (Outcome::Malformed, big.len()));
    }
}

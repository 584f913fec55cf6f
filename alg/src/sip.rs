//! SIP (RFC 3261) message rewriter, over UDP (one datagram) and TCP (one
//! message of the stream at a time).
//!
//! Messages from the private side (`FromPrivate`) get the private host's
//! address replaced by the public one where it routes something back to the
//! host:
//! - the request-URI (RFC 3261 §8.1.1.1) when its host is the private address;
//! - `Via` sent-by (§18.2.1) — only the host part; the port and every parameter
//!   (`branch`, `received`, `rport`, …) stay as they are: `received`/`rport`
//!   are written by the *next* hop with what it saw on the wire (§18.2.1,
//!   RFC 3581), never the private address of this host, so they need no NAT;
//! - `Contact`, `Record-Route`, `Route` URIs whose host is the private address;
//! - an `application/sdp` body ([`crate::sdp`]): `c=`, `o=`, media ports, with
//!   RTP/RTCP pinholes; `Content-Length` is recomputed.
//!
//! `From`, `To` and `Call-ID` are left alone: they are identities and dialog
//! identifiers, not routing (§8.1.1.3, §19.3); changing them in one direction
//! only would break dialog matching in RFC 2543-style UAs.
//!
//! Messages from the public side (`FromPublic`) get the reverse mapping
//! (public → private) where a UA checks its own address: the top `Via`
//! sent-by of a response (§18.1.2: a client transport discards a response
//! whose sent-by it did not write) and the request-URI of a request (an
//! incoming call or an in-dialog request addressed to the Contact we wrote).
//! Bodies from the public side are never touched.
//!
//! Framing on streams (§18.3): the header block ends at the first empty
//! line and the body is `Content-Length` bytes. A message on a stream without
//! `Content-Length` is taken to have no body (the only framing left; RFC 3261
//! makes the header mandatory on streams). CRLF keep-alives between messages
//! (RFC 5626 §3.5.1) are consumed unchanged. On UDP the body is the rest of
//! the datagram, or its first `Content-Length` bytes when the header is
//! present (bytes after it are kept verbatim).
//!
//! RGW64: for an IPv6-only host behind the translator
//! ([`FlowAddrs::private_v6`]) its IPv6 reference `[v6]` is replaced like its
//! IPv4 address (by the public IPv4), SDP `IN IP6 <v6>` becomes
//! `IN IP4 <public>` with the media pinholes to its proxy IPv4, and the
//! public → private mapping gives `[v6]` back; the IPv4 peer's own address
//! in its Contact and route headers becomes `[prefix64::peer]`, so the host
//! can send in-dialog requests there.
//!
//! RGW64 NAT46: for a private IPv4 host talking to an IPv6-only peer through
//! the peer's proxy IPv4 ([`FlowAddrs::nat46`]) the host's IPv4 becomes the
//! gateway's `[IPv6]` (request-URI, Via, Contact, routes), SDP `IN IP4
//! <host>` becomes `IN IP6 <gateway>` with IPv6 media pinholes, and a
//! request-URI addressed to the proxy IPv4 gets the peer's `[IPv6]`. From the
//! peer, our `[IPv6]` in the request-URI / top Via becomes the host's IPv4,
//! the peer's `[IPv6]` in Contact and routes and its SDP `IN IP6` become the
//! proxy IPv4.
//!
//! Not handled (passed unchanged): SDP inside `multipart/*` or compressed
//! bodies, other IPv6 addresses, host names (the private address is
//! always replaced by the public address, never by the host's FQDN: SDP
//! `c=` needs an address, and an address keeps in-dialog requests on the
//! signalling flow's own mapping).

use std::net::IpAddr;

use crate::sdp::{self, SdpPolicy};
use crate::{Direction, FlowAddrs, MessageResult, Outcome, PortAlloc, Rewriter, Transport};

use text::{Edits, Syntax};

/// Rewrites SIP requests and responses (UDP datagrams or TCP stream slices).
#[derive(Debug, Clone, Copy, Default)]
pub struct SipRewriter;

const SIP_SYNTAX: Syntax = Syntax {
    version: b"SIP/",
    compact_forms: true,
};

impl Rewriter for SipRewriter {
    fn rewrite(
        &self,
        buf: &[u8],
        dir: Direction,
        flow: &FlowAddrs,
        ports: &mut dyn PortAlloc,
    ) -> MessageResult {
        let stream = flow.transport == Transport::Tcp;
        let lead = text::leading_crlf(buf);
        if stream && lead > 0 {
            return text::result(Outcome::Unchanged, lead);
        }
        if !stream && lead == buf.len() && lead > 0 {
            // A keep-alive datagram.
            return text::result(Outcome::Unchanged, buf.len());
        }
        // §7.5: CRLFs before the start line are ignored (kept verbatim here).
        let msg = match text::frame_at(buf, lead, &SIP_SYNTAX, stream) {
            Ok(m) => m,
            Err(r) => return r,
        };
        let msg_buf = buf.get(lead..).unwrap_or_default();
        let mut pinholes = Vec::new();
        let edits = match dir {
            Direction::FromPrivate => {
                match private_to_public(msg_buf, &msg, flow, ports, &mut pinholes) {
                    Some(e) => e,
                    // No public port for a media stream: the message passes
                    // unchanged (see PortAlloc) and opens nothing.
                    None => return text::result(Outcome::Unchanged, lead + msg.end),
                }
            }
            Direction::FromPublic => public_to_private(msg_buf, &msg, flow),
        };
        text::edited(buf, lead, &msg, edits, pinholes)
    }
}

/// Private → public. `None` when a media port could not be allocated.
fn private_to_public(
    buf: &[u8],
    msg: &text::Message,
    flow: &FlowAddrs,
    ports: &mut dyn PortAlloc,
    pinholes: &mut Vec<crate::Pinhole>,
) -> Option<Edits> {
    let private = *flow.private.ip();
    let public = match flow.nat46() {
        // RGW64 NAT46: the IPv6 peer gets our IPv6 reference.
        Some((_, public6, _)) => format!("[{public6}]").into_bytes(),
        None => flow.public.to_string().into_bytes(),
    };
    let mut edits = Edits::default();
    // RGW64: an IPv6-only host writes its own IPv6 address (`[v6]`);
    // the IPv4 peer gets the public IPv4 in its place.
    let privates: Vec<IpAddr> = std::iter::once(IpAddr::V4(private))
        .chain(flow.private_v6.map(IpAddr::V6))
        .collect();
    if let Some(uri) = msg.request_uri(buf) {
        for &p in &privates {
            text::uri_host_edits(buf, uri.clone(), p, &public, &mut edits);
        }
        if let Some((peer6, _, _)) = flow.nat46() {
            // NAT46: a request addressed to the peer's proxy IPv4 reaches
            // it addressed to itself.
            let to = format!("[{peer6}]").into_bytes();
            text::uri_host_edits(buf, uri, *flow.peer.ip(), &to, &mut edits);
        }
    }
    for h in &msg.headers {
        match canonical_name(h.name_bytes(buf)) {
            Some(Name::Via) => {
                for &p in &privates {
                    text::via_edits(buf, h.value.clone(), p, &public, &mut edits)
                }
            }
            Some(Name::Contact | Name::Route | Name::RecordRoute) => {
                for &p in &privates {
                    text::uri_host_edits(buf, h.value.clone(), p, &public, &mut edits)
                }
            }
            None => {}
        }
    }
    if let Some(body) = msg.sdp_body(buf).filter(|b| !b.is_empty()) {
        let policy = SdpPolicy {
            media_pinholes: true,
        };
        let sdp = sdp::rewrite(body, flow, ports, &policy).ok()?;
        pinholes.extend(sdp.pinholes);
        if let Some(new_body) = sdp.body {
            edits.replace_body(msg, new_body);
        }
    }
    Some(edits)
}

/// Public → private where the private UA checks its own address.
fn public_to_private(buf: &[u8], msg: &text::Message, flow: &FlowAddrs) -> Edits {
    // RGW64: an IPv6-only host gets its own IPv6 reference back.
    let private = match flow.private_v6 {
        Some(v6) => format!("[{v6}]").into_bytes(),
        None => flow.private.ip().to_string().into_bytes(),
    };
    // RGW64 NAT46: the IPv6 peer names our IPv6 address.
    let public = match flow.nat46() {
        Some((_, public6, _)) => IpAddr::V6(public6),
        None => IpAddr::V4(flow.public),
    };
    let mut edits = Edits::default();
    if let Some(uri) = msg.request_uri(buf) {
        text::uri_host_edits(buf, uri, public, &private, &mut edits);
    } else if let Some(via) = msg
        .headers
        .iter()
        .find(|h| canonical_name(h.name_bytes(buf)) == Some(Name::Via))
    {
        // Only the topmost Via value is this host's (§18.1.2).
        text::via_top_edit(buf, via.value.clone(), public, &private, &mut edits);
    }
    // Across families the private UA cannot send in-dialog requests to the
    // peer's Contact or route set as written: NAT46, the IPv4 host gets the
    // IPv6 peer's proxy IPv4; an IPv6-only host gets the IPv4 peer's
    // `[prefix64::a.b.c.d]`.
    let peer_map = match (flow.nat46(), flow.private_v6.and(flow.prefix64)) {
        (Some((peer6, _, _)), _) => Some((IpAddr::V6(peer6), flow.peer.ip().to_string())),
        (None, Some(prefix)) => Some((
            IpAddr::V4(*flow.peer.ip()),
            format!("[{}]", crate::embed_v4(prefix, *flow.peer.ip())),
        )),
        (None, None) => None,
    };
    if let Some((from, to)) = peer_map {
        for h in &msg.headers {
            if let Some(Name::Contact | Name::Route | Name::RecordRoute) =
                canonical_name(h.name_bytes(buf))
            {
                text::uri_host_edits(buf, h.value.clone(), from, to.as_bytes(), &mut edits);
            }
        }
    }
    // RGW64: an IPv6-only host cannot use the peer's `IN IP4` media
    // addresses; it gets their prefix64 forms (see [`sdp::to_ipv6`]).
    // NAT46: the IPv4 host gets the IPv6 peer's proxy IPv4 ([`sdp::to_ipv4`]).
    if flow.private_v6.is_some() || flow.nat46().is_some() {
        let convert = |b: &[u8]| match flow.private_v6 {
            Some(_) => sdp::to_ipv6(b, flow),
            None => sdp::to_ipv4(b, flow),
        };
        if let Some(new_body) = msg.sdp_body(buf).and_then(convert) {
            edits.replace_body(msg, new_body);
        }
    }
    edits
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Via,
    Contact,
    Route,
    RecordRoute,
}

/// The headers this rewriter cares about, in long or compact form (§7.3.3).
fn canonical_name(name: &[u8]) -> Option<Name> {
    const NAMES: &[(&[u8], Name)] = &[
        (b"via", Name::Via),
        (b"v", Name::Via),
        (b"contact", Name::Contact),
        (b"m", Name::Contact),
        (b"route", Name::Route),
        (b"record-route", Name::RecordRoute),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, k)| *k)
}

/// Text-protocol plumbing shared by SIP and RTSP (both follow the HTTP/1.1
/// message shape): framing, header views, host replacement, byte edits.
/// Everything works on byte ranges of the input and cannot panic.
pub(crate) mod text {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::ops::Range;

    use crate::{MessageResult, Outcome, Pinhole};

    /// A header block larger than this on a stream is not waited for.
    pub const MAX_HEAD: usize = 64 * 1024;
    /// A body larger than this on a stream is not waited for.
    pub const MAX_BODY: usize = 1024 * 1024;

    pub fn result(outcome: Outcome, consumed: usize) -> MessageResult {
        MessageResult {
            outcome,
            consumed,
            pinholes: Vec::new(),
        }
    }

    /// Frames the message that starts `lead` bytes into `buf` (after CRLFs
    /// kept verbatim), or gives the result when there is none: wait for
    /// more bytes, or skip a malformed message (on a stream as far as
    /// [`frame`] says, a datagram whole).
    pub fn frame_at(
        buf: &[u8],
        lead: usize,
        syntax: &Syntax,
        stream: bool,
    ) -> Result<Message, MessageResult> {
        match frame(buf.get(lead..).unwrap_or_default(), syntax, stream) {
            Framing::Message(m) => Ok(m),
            Framing::Incomplete => Err(result(Outcome::Incomplete, 0)),
            Framing::Malformed { skip } => Err(result(
                Outcome::Malformed,
                if stream { lead + skip } else { buf.len() },
            )),
        }
    }

    /// The result for `msg`, framed by [`frame_at`]: unchanged without
    /// edits, else the `lead` bytes and the message with `edits` applied.
    pub fn edited(
        buf: &[u8],
        lead: usize,
        msg: &Message,
        edits: Edits,
        pinholes: Vec<Pinhole>,
    ) -> MessageResult {
        let consumed = lead + msg.end;
        if edits.is_empty() {
            return MessageResult {
                outcome: Outcome::Unchanged,
                consumed,
                pinholes,
            };
        }
        let mut out = Vec::with_capacity(consumed + 64);
        out.extend_from_slice(buf.get(..lead).unwrap_or_default());
        out.extend_from_slice(&edits.apply(buf.get(lead..consumed).unwrap_or_default()));
        MessageResult {
            outcome: Outcome::Rewritten(out),
            consumed,
            pinholes,
        }
    }

    /// How a protocol spells its messages.
    pub struct Syntax {
        /// Version prefix of the start line (`SIP/`, `RTSP/`).
        pub version: &'static [u8],
        /// Single-letter header names (SIP §7.3.3: `l` = Content-Length).
        pub compact_forms: bool,
    }

    #[derive(Debug, Clone)]
    pub struct Header {
        pub name: Range<usize>,
        /// Value without surrounding whitespace; may span folded lines.
        pub value: Range<usize>,
    }

    impl Header {
        pub fn name_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
            buf.get(self.name.clone()).unwrap_or_default()
        }
        pub fn value_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
            buf.get(self.value.clone()).unwrap_or_default()
        }
    }

    /// A framed message: ranges into the buffer it was framed from.
    #[derive(Debug, Clone)]
    pub struct Message {
        /// Start line without its line end.
        pub start_line: Range<usize>,
        pub is_request: bool,
        pub headers: Vec<Header>,
        /// Value of the last `Content-Type` header (SIP: also `c`).
        pub content_type: Option<Range<usize>>,
        /// Value of the last `Content-Length` header (SIP: also `l`).
        pub content_length: Option<Range<usize>>,
        pub body: Range<usize>,
        /// Bytes the message occupies.
        pub end: usize,
    }

    impl Message {
        /// The request-URI of a request (between the two spaces).
        pub fn request_uri(&self, buf: &[u8]) -> Option<Range<usize>> {
            if !self.is_request {
                return None;
            }
            let line = buf.get(self.start_line.clone())?;
            let first = line.iter().position(|&b| b == b' ')?;
            let last = line.iter().rposition(|&b| b == b' ')?;
            (last > first + 1)
                .then(|| self.start_line.start + first + 1..self.start_line.start + last)
        }

        /// The body, when `Content-Type` says it is SDP (maybe empty).
        pub fn sdp_body<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
            let content_type = buf.get(self.content_type.clone()?)?;
            is_sdp(content_type).then(|| buf.get(self.body.clone()).unwrap_or_default())
        }
    }

    pub enum Framing {
        Message(Message),
        /// A stream holds only the start of a message.
        Incomplete,
        /// Not a message of this protocol; on a stream, skip this many bytes.
        Malformed {
            skip: usize,
        },
    }

    /// Number of CR/LF bytes at the start of `buf`.
    pub fn leading_crlf(buf: &[u8]) -> usize {
        buf.iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count()
    }

    /// Position of the empty line ending the header block: (start of the
    /// empty line, start of the body). Accepts bare LF line ends.
    fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
        let mut from = 0;
        while let Some(off) = buf.get(from..)?.iter().position(|&b| b == b'\n') {
            let i = from + off;
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => return Some((i + 1, i + 2)),
                (Some(b'\r'), Some(b'\n')) => return Some((i + 1, i + 3)),
                _ => from = i + 1,
            }
        }
        None
    }

    fn is_token_char(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-.!%*_+`'~/".contains(&b)
    }

    /// Could `line` (possibly cut short) be the start line of a message?
    /// Rejects control bytes and a first word that is not a token.
    fn plausible_start(line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return false;
        }
        let first_word = line.split(|&b| b == b' ').next().unwrap_or_default();
        first_word.iter().all(|&b| is_token_char(b))
    }

    /// Parse a complete start line: (is_request).
    fn start_line_kind(line: &[u8], syntax: &Syntax) -> Option<bool> {
        let prefix_ci = |s: &[u8], p: &[u8]| {
            s.len() >= p.len() && s.get(..p.len()).is_some_and(|x| x.eq_ignore_ascii_case(p))
        };
        let mut words = line.splitn(3, |&b| b == b' ');
        let first = words.next()?;
        let second = words.next()?;
        if prefix_ci(first, syntax.version) {
            // Status line: version SP 3DIGIT SP reason (reason may be empty).
            return (second.len() == 3 && second.iter().all(u8::is_ascii_digit)).then_some(false);
        }
        let third = words.next()?;
        let ok = !first.is_empty()
            && first.iter().all(|&b| is_token_char(b))
            && !second.is_empty()
            && !third.contains(&b' ')
            && prefix_ci(third, syntax.version);
        ok.then_some(true)
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

    fn parse_decimal(v: &[u8]) -> Option<usize> {
        if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            v.iter()
                .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')),
        )
    }

    /// Frame the first message of `buf` (which must not start with CR/LF).
    pub fn frame(buf: &[u8], syntax: &Syntax, stream: bool) -> Framing {
        if buf.is_empty() {
            return if stream {
                Framing::Incomplete
            } else {
                Framing::Malformed { skip: 0 }
            };
        }
        let first_lf = buf.iter().position(|&b| b == b'\n');
        let first_line = buf.get(..first_lf.unwrap_or(buf.len())).unwrap_or_default();
        if !plausible_start(first_line) {
            return Framing::Malformed { skip: buf.len() };
        }
        let Some((blank, body_start)) = find_head_end(buf) else {
            if stream && buf.len() <= MAX_HEAD {
                return Framing::Incomplete;
            }
            return Framing::Malformed { skip: buf.len() };
        };
        let Some(first_lf) = first_lf else {
            return Framing::Malformed { skip: buf.len() };
        };
        let start_line = trim(buf, 0..first_lf);
        let Some(is_request) = buf
            .get(start_line.clone())
            .and_then(|l| start_line_kind(l, syntax))
        else {
            return Framing::Malformed { skip: body_start };
        };

        // Header lines between the start line and the empty line.
        let mut headers: Vec<Header> = Vec::new();
        let mut pos = first_lf + 1;
        while pos < blank {
            let end = buf
                .get(pos..blank)
                .and_then(|s| s.iter().position(|&b| b == b'\n'))
                .map_or(blank, |o| pos + o);
            let line = trim_cr(buf, pos..end);
            let first = buf.get(line.start).copied();
            if first == Some(b' ') || first == Some(b'\t') {
                // Folded continuation of the previous header (RFC 3261 §7.3.1).
                let Some(last) = headers.last_mut() else {
                    return Framing::Malformed { skip: body_start };
                };
                let cont = trim(buf, line.clone());
                if cont.start < cont.end {
                    last.value.end = cont.end;
                    if last.value.start == last.value.end {
                        last.value.start = cont.start;
                    }
                }
            } else if line.start < line.end {
                let Some(colon) = buf
                    .get(line.clone())
                    .and_then(|l| l.iter().position(|&b| b == b':'))
                else {
                    return Framing::Malformed { skip: body_start };
                };
                let name = trim(buf, line.start..line.start + colon);
                let name_ok = name.start < name.end
                    && buf
                        .get(name.clone())
                        .is_some_and(|n| n.iter().all(|&b| is_token_char(b) && b != b'/'));
                if !name_ok {
                    return Framing::Malformed { skip: body_start };
                }
                let value = trim(buf, line.start + colon + 1..line.end);
                headers.push(Header { name, value });
            }
            pos = end + 1;
        }

        // Content-Length (§20.14, compact `l`); conflicting values are an
        // error. Content-Type (§20.15, compact `c`).
        let mut content_length: Option<usize> = None;
        let (mut content_length_value, mut content_type) = (None, None);
        for h in &headers {
            let n = h.name_bytes(buf);
            let is = |long: &[u8], compact: &[u8]| {
                n.eq_ignore_ascii_case(long)
                    || (syntax.compact_forms && n.eq_ignore_ascii_case(compact))
            };
            if is(b"content-type", b"c") {
                content_type = Some(h.value.clone());
            }
            if !is(b"content-length", b"l") {
                continue;
            }
            match (parse_decimal(h.value_bytes(buf)), content_length) {
                (None, _) => return Framing::Malformed { skip: body_start },
                (Some(v), Some(prev)) if v != prev => {
                    return Framing::Malformed { skip: body_start }
                }
                (Some(v), _) => content_length = Some(v),
            }
            content_length_value = Some(h.value.clone());
        }

        let available = buf.len() - body_start.min(buf.len());
        let (body_len, end) = if stream {
            let len = content_length.unwrap_or(0);
            if len > available {
                if len > MAX_BODY {
                    return Framing::Malformed { skip: body_start };
                }
                return Framing::Incomplete;
            }
            (len, body_start + len)
        } else {
            match content_length {
                Some(len) if len > available => return Framing::Malformed { skip: buf.len() },
                Some(len) => (len, buf.len()),
                None => (available, buf.len()),
            }
        };
        Framing::Message(Message {
            start_line,
            is_request,
            headers,
            content_type,
            content_length: content_length_value,
            body: body_start..body_start + body_len,
            end,
        })
    }

    fn trim_cr(buf: &[u8], r: Range<usize>) -> Range<usize> {
        if r.end > r.start && buf.get(r.end - 1) == Some(&b'\r') {
            r.start..r.end - 1
        } else {
            r
        }
    }

    /// Is this a `Content-Type` value for SDP (`application/sdp`, any params)?
    fn is_sdp(value: &[u8]) -> bool {
        let media = value.split(|&b| b == b';').next().unwrap_or_default();
        media.trim_ascii().eq_ignore_ascii_case(b"application/sdp")
    }

    /// Byte replacements over one message, applied in one pass.
    #[derive(Debug, Default)]
    pub struct Edits {
        list: Vec<(Range<usize>, Vec<u8>)>,
    }

    impl Edits {
        pub fn replace(&mut self, range: Range<usize>, bytes: Vec<u8>) {
            self.list.push((range, bytes));
        }
        pub fn is_empty(&self) -> bool {
            self.list.is_empty()
        }
        /// Replace the body of `msg` and fix its `Content-Length`.
        pub fn replace_body(&mut self, msg: &Message, body: Vec<u8>) {
            if let Some(cl) = msg.content_length.clone() {
                self.replace(cl, body.len().to_string().into_bytes());
            }
            self.replace(msg.body.clone(), body);
        }
        /// `src` with the edits applied; an edit overlapping an earlier one
        /// or out of bounds is ignored.
        pub fn apply(mut self, src: &[u8]) -> Vec<u8> {
            self.list.sort_by_key(|(r, _)| (r.start, r.end));
            let mut out = Vec::with_capacity(src.len() + 64);
            let mut pos = 0;
            for (r, bytes) in &self.list {
                if r.start < pos || r.end < r.start || r.end > src.len() {
                    continue;
                }
                out.extend_from_slice(src.get(pos..r.start).unwrap_or_default());
                out.extend_from_slice(bytes);
                pos = r.end;
            }
            out.extend_from_slice(src.get(pos..).unwrap_or_default());
            out
        }
    }

    /// Does `bytes` spell exactly `addr` (dotted quad, or `[IPv6]`)?
    pub fn is_addr(bytes: &[u8], addr: impl Into<IpAddr>) -> bool {
        match addr.into() {
            IpAddr::V4(a) => {
                std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|s| s.parse::<Ipv4Addr>().ok())
                    == Some(a)
            }
            // An IPv6 reference `[addr]` (RFC 3261 §25.1), any spelling.
            IpAddr::V6(a) => {
                bytes
                    .strip_prefix(b"[")
                    .and_then(|b| b.strip_suffix(b"]"))
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.parse::<Ipv6Addr>().ok())
                    == Some(a)
            }
        }
    }

    fn starts_with_ci(s: &[u8], p: &[u8]) -> bool {
        s.get(..p.len()).is_some_and(|x| x.eq_ignore_ascii_case(p))
    }

    /// Replace the host of every `sip:`, `sips:`, `rtsp:`, `rtsps:`,
    /// `rtspu:` URI in `value` whose host is `from` by `to`. User part,
    /// port and parameters are kept.
    pub fn uri_host_edits(
        buf: &[u8],
        value: Range<usize>,
        from: impl Into<IpAddr>,
        to: &[u8],
        edits: &mut Edits,
    ) {
        let from: IpAddr = from.into();
        const SCHEMES: &[(&[u8], bool)] = &[
            (b"sips:", false),
            (b"sip:", false),
            (b"rtsps://", true),
            (b"rtspu://", true),
            (b"rtsp://", true),
        ];
        let Some(v) = buf.get(value.clone()) else {
            return;
        };
        let mut i = 0;
        while i < v.len() {
            let boundary = i == 0 || v.get(i - 1).is_some_and(|b| !b.is_ascii_alphanumeric());
            let scheme = if boundary {
                SCHEMES
                    .iter()
                    .find(|(s, _)| starts_with_ci(v.get(i..).unwrap_or_default(), s))
            } else {
                None
            };
            let Some((s, hierarchical)) = scheme else {
                i += 1;
                continue;
            };
            let start = i + s.len();
            // The URI ends at a delimiter that cannot appear inside it here.
            let uri_end = v
                .get(start..)
                .unwrap_or_default()
                .iter()
                .position(|&b| b == b'>' || b == b',' || b == b'"' || b.is_ascii_whitespace())
                .map_or(v.len(), |o| start + o);
            let authority_end = if *hierarchical {
                v.get(start..uri_end)
                    .unwrap_or_default()
                    .iter()
                    .position(|&b| b == b'/' || b == b'?' || b == b'#')
                    .map_or(uri_end, |o| start + o)
            } else {
                uri_end
            };
            let host_start = v
                .get(start..authority_end)
                .unwrap_or_default()
                .iter()
                .position(|&b| b == b'@')
                .map_or(start, |o| start + o + 1);
            let host_end = if v.get(host_start) == Some(&b'[') {
                // IPv6 reference: up to its closing bracket.
                v.get(host_start..uri_end)
                    .unwrap_or_default()
                    .iter()
                    .position(|&b| b == b']')
                    .map_or(uri_end, |o| host_start + o + 1)
            } else {
                v.get(host_start..uri_end)
                    .unwrap_or_default()
                    .iter()
                    .position(|&b| b":;?/#".contains(&b))
                    .map_or(uri_end, |o| host_start + o)
            };
            if v.get(host_start..host_end)
                .is_some_and(|h| is_addr(h, from))
            {
                edits.replace(
                    value.start + host_start..value.start + host_end,
                    to.to_vec(),
                );
            }
            i = uri_end.max(i + 1);
        }
    }

    /// Ranges (relative to `v`) of the sent-by host of each via-parm in a
    /// `Via` value: `SIP / 2.0 / UDP host[:port] *(;param)`, comma-separated.
    fn via_hosts(v: &[u8]) -> Vec<Range<usize>> {
        let mut hosts = Vec::new();
        let mut i = 0;
        while i < v.len() {
            // Skip separators before a via-parm.
            while v
                .get(i)
                .is_some_and(|&b| b == b',' || b.is_ascii_whitespace())
            {
                i += 1;
            }
            if i >= v.len() {
                break;
            }
            // sent-protocol: three tokens separated by '/', LWS allowed around '/'.
            let mut slashes = 0;
            loop {
                while v.get(i).is_some_and(|&b| is_token_char(b) && b != b'/') {
                    i += 1;
                }
                let mut j = i;
                while v.get(j).is_some_and(|b| b.is_ascii_whitespace()) {
                    j += 1;
                }
                if slashes < 2 && v.get(j) == Some(&b'/') {
                    slashes += 1;
                    i = j + 1;
                    while v.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
                        i += 1;
                    }
                } else {
                    i = j;
                    break;
                }
            }
            let host_start = i;
            let host_end = if v.get(i) == Some(&b'[') {
                // IPv6 reference: never the IPv4 address we look for.
                v.get(i..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&b| b == b']')
                    .map_or(v.len(), |o| i + o + 1)
            } else {
                v.get(i..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&b| b == b':' || b == b';' || b == b',' || b.is_ascii_whitespace())
                    .map_or(v.len(), |o| i + o)
            };
            if slashes == 2 && host_end > host_start {
                hosts.push(host_start..host_end);
            }
            // Skip port and parameters up to the next top-level comma.
            i = host_end.max(i + 1);
            let mut quoted = false;
            while let Some(&b) = v.get(i) {
                match b {
                    b'\\' if quoted => i += 1,
                    b'"' => quoted = !quoted,
                    b',' if !quoted => break,
                    _ => {}
                }
                i += 1;
            }
        }
        hosts
    }

    /// Replace every `Via` sent-by host equal to `from` by `to`.
    pub fn via_edits(
        buf: &[u8],
        value: Range<usize>,
        from: impl Into<IpAddr>,
        to: &[u8],
        edits: &mut Edits,
    ) {
        let from: IpAddr = from.into();
        let v = buf.get(value.clone()).unwrap_or_default();
        for h in via_hosts(v) {
            if v.get(h.clone()).is_some_and(|b| is_addr(b, from)) {
                edits.replace(value.start + h.start..value.start + h.end, to.to_vec());
            }
        }
    }

    /// Like [`via_edits`] for the first via-parm only.
    pub fn via_top_edit(
        buf: &[u8],
        value: Range<usize>,
        from: impl Into<IpAddr>,
        to: &[u8],
        edits: &mut Edits,
    ) {
        let from: IpAddr = from.into();
        let v = buf.get(value.clone()).unwrap_or_default();
        if let Some(h) = via_hosts(v).into_iter().next() {
            if v.get(h.clone()).is_some_and(|b| is_addr(b, from)) {
                edits.replace(value.start + h.start..value.start + h.end, to.to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{Pinhole, Role};

    // Captured with sipp 3.6.1 (Debian sip-tester, built-in `uac`/`uas`
    // scenarios, `-t u1` and `-t t1`) and a REGISTER scenario, in a network
    // namespace where the UAC is 192.168.0.101 and the UAS 198.51.100.7
    // (or the other way round for the incoming call).

    // udp 192.168.0.101:5060 -> 198.51.100.7:5070
    const UAC_INVITE: &[u8] = concat!(
        "INVITE sip:service@198.51.100.7:5070 SIP/2.0\r\n",
        "Via: SIP/2.0/UDP 192.168.0.101:5060;branch=z9hG4bK-12949-1-0\r\n",
        "From: sipp <sip:sipp@192.168.0.101:5060>;tag=12949SIPpTag001\r\n",
        "To: service <sip:service@198.51.100.7:5070>\r\n",
        "Call-ID: 1-12949@192.168.0.101\r\n",
        "CSeq: 1 INVITE\r\n",
        "Contact: sip:sipp@192.168.0.101:5060\r\n",
        "Max-Forwards: 70\r\n",
        "Subject: Performance Test\r\n",
        "Content-Type: application/sdp\r\n",
        "Content-Length:   137\r\n",
        "\r\n",
        "v=0\r\n",
        "o=user1 53655765 2353687637 IN IP4 192.168.0.101\r\n",
        "s=-\r\n",
        "c=IN IP4 192.168.0.101\r\n",
        "t=0 0\r\n",
        "m=audio 6000 RTP/AVP 0\r\n",
        "a=rtpmap:0 PCMU/8000\r\n",
    )
    .as_bytes();

    // udp 192.168.0.101:5060 -> 198.51.100.7:5070
    const UAC_ACK: &[u8] = concat!(
        "ACK sip:service@198.51.100.7:5070 SIP/2.0\r\n",
        "Via: SIP/2.0/UDP 192.168.0.101:5060;branch=z9hG4bK-12949-1-5\r\n",
        "From: sipp <sip:sipp@192.168.0.101:5060>;tag=12949SIPpTag001\r\n",
        "To: service <sip:service@198.51.100.7:5070>;tag=12911SIPpTag011\r\n",
        "Call-ID: 1-12949@192.168.0.101\r\n",
        "CSeq: 1 ACK\r\n",
        "Contact: sip:sipp@192.168.0.101:5060\r\n",
        "Max-Forwards: 70\r\n",
        "Subject: Performance Test\r\n",
        "Content-Length: 0\r\n",
        "\r\n",
    )
    .as_bytes();

    // udp 192.168.0.101:5060 -> 198.51.100.7:5070
    const UAC_BYE: &[u8] = concat!(
        "BYE sip:service@198.51.100.7:5070 SIP/2.0\r\n",
        "Via: SIP/2.0/UDP 192.168.0.101:5060;branch=z9hG4bK-12949-1-7\r\n",
        "From: sipp <sip:sipp@192.168.0.101:5060>;tag=12949SIPpTag001\r\n",
        "To: service <sip:service@198.51.100.7:5070>;tag=12911SIPpTag011\r\n",
        "Call-ID: 1-12949@192.168.0.101\r\n",
        "CSeq: 2 BYE\r\n",
        "Contact: sip:sipp@192.168.0.101:5060\r\n",
        "Max-Forwards: 70\r\n",
        "Subject: Performance Test\r\n",
        "Content-Length: 0\r\n",
        "\r\n",
    )
    .as_bytes();

    // udp 198.51.100.7:5070 -> 192.168.0.101:5060
    const UAS_200_OK_PUBLIC: &[u8] = concat!(
        "SIP/2.0 200 OK\r\n",
        "Via: SIP/2.0/UDP 192.168.0.101:5060;branch=z9hG4bK-12949-1-0\r\n",
        "From: sipp <sip:sipp@192.168.0.101:5060>;tag=12949SIPpTag001\r\n",
        "To: service <sip:service@198.51.100.7:5070>;tag=12911SIPpTag011\r\n",
        "Call-ID: 1-12949@192.168.0.101\r\n",
        "CSeq: 1 INVITE\r\n",
        "Contact: <sip:198.51.100.7:5070;transport=UDP>\r\n",
        "Content-Type: application/sdp\r\n",
        "Content-Length:   135\r\n",
        "\r\n",
        "v=0\r\n",
        "o=user1 53655765 2353687637 IN IP4 198.51.100.7\r\n",
        "s=-\r\n",
        "c=IN IP4 198.51.100.7\r\n",
        "t=0 0\r\n",
        "m=audio 6000 RTP/AVP 0\r\n",
        "a=rtpmap:0 PCMU/8000\r\n",
    )
    .as_bytes();

    // udp 192.168.0.101:5060 -> 198.51.100.7:5070
    const UAS_180_PRIVATE: &[u8] = concat!(
        "SIP/2.0 180 Ringing\r\n",
        "Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-13590-1-0\r\n",
        "From: sipp <sip:sipp@198.51.100.7:5070>;tag=13590SIPpTag001\r\n",
        "To: service <sip:service@192.168.0.101:5060>;tag=13566SIPpTag011\r\n",
        "Call-ID: 1-13590@198.51.100.7\r\n",
        "CSeq: 1 INVITE\r\n",
        "Contact: <sip:192.168.0.101:5060;transport=UDP>\r\n",
        "Content-Length: 0\r\n",
        "\r\n",
    )
    .as_bytes();

    // udp 192.168.0.101:5070 -> 198.51.100.7:5060
    const REGISTER: &[u8] = concat!(
        "REGISTER sip:198.51.100.7:5060 SIP/2.0\r\n",
        "Via: SIP/2.0/UDP 192.168.0.101:5070;branch=z9hG4bK-14384-1-0;rport\r\n",
        "From: <sip:alice@198.51.100.7>;tag=14384SIPpTag001\r\n",
        "To: <sip:alice@198.51.100.7>\r\n",
        "Call-ID: 1-14384@192.168.0.101\r\n",
        "CSeq: 1 REGISTER\r\n",
        "Contact: <sip:alice@192.168.0.101:5070;transport=UDP>;expires=3600\r\n",
        "Max-Forwards: 70\r\n",
        "User-Agent: sipp\r\n",
        "Content-Length: 0\r\n",
        "\r\n",
    )
    .as_bytes();

    // udp 198.51.100.7:5060 -> 192.168.0.101:5070
    const REGISTER_200_OK: &[u8] = concat!(
        "SIP/2.0 200 OK\r\n",
        "Via: SIP/2.0/UDP 192.168.0.101:5070;branch=z9hG4bK-14384-1-0;rport\r\n",
        "From: <sip:alice@198.51.100.7>;tag=14384SIPpTag001\r\n",
        "To: <sip:alice@198.51.100.7>;tag=14369SIPpTag011\r\n",
        "Call-ID: 1-14384@192.168.0.101\r\n",
        "CSeq: 1 REGISTER\r\n",
        "Contact: <sip:alice@192.168.0.101:5070;transport=UDP>;expires=3600\r\n",
        "Content-Length: 0\r\n",
        "\r\n",
    )
    .as_bytes();

    // udp 198.51.100.7:5070 -> 192.168.0.101:5060
    const INVITE_TO_PRIVATE: &[u8] = concat!(
        "INVITE sip:service@192.168.0.101:5060 SIP/2.0\r\n",
        "Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-13590-1-0\r\n",
        "From: sipp <sip:sipp@198.51.100.7:5070>;tag=13590SIPpTag001\r\n",
        "To: service <sip:service@192.168.0.101:5060>\r\n",
        "Call-ID: 1-13590@198.51.100.7\r\n",
        "CSeq: 1 INVITE\r\n",
        "Contact: sip:sipp@198.51.100.7:5070\r\n",
        "Max-Forwards: 70\r\n",
        "Subject: Performance Test\r\n",
        "Content-Type: application/sdp\r\n",
        "Content-Length:   135\r\n",
        "\r\n",
        "v=0\r\n",
        "o=user1 53655765 2353687637 IN IP4 198.51.100.7\r\n",
        "s=-\r\n",
        "c=IN IP4 198.51.100.7\r\n",
        "t=0 0\r\n",
        "m=audio 6000 RTP/AVP 0\r\n",
        "a=rtpmap:0 PCMU/8000\r\n",
    )
    .as_bytes();

    // udp 192.168.0.101:5060 -> 198.51.100.7:5070
    const UAS_200_OK_PRIVATE: &[u8] = concat!(
        "SIP/2.0 200 OK\r\n",
        "Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-13590-1-0\r\n",
        "From: sipp <sip:sipp@198.51.100.7:5070>;tag=13590SIPpTag001\r\n",
        "To: service <sip:service@192.168.0.101:5060>;tag=13566SIPpTag011\r\n",
        "Call-ID: 1-13590@198.51.100.7\r\n",
        "CSeq: 1 INVITE\r\n",
        "Contact: <sip:192.168.0.101:5060;transport=UDP>\r\n",
        "Content-Type: application/sdp\r\n",
        "Content-Length:   137\r\n",
        "\r\n",
        "v=0\r\n",
        "o=user1 53655765 2353687637 IN IP4 192.168.0.101\r\n",
        "s=-\r\n",
        "c=IN IP4 192.168.0.101\r\n",
        "t=0 0\r\n",
        "m=audio 6000 RTP/AVP 0\r\n",
        "a=rtpmap:0 PCMU/8000\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:5070 -> 198.51.100.7:5060
    const TCP_INVITE: &[u8] = concat!(
        "INVITE sip:service@198.51.100.7:5060 SIP/2.0\r\n",
        "Via: SIP/2.0/TCP 192.168.0.101:5070;branch=z9hG4bK-13718-1-0\r\n",
        "From: sipp <sip:sipp@192.168.0.101:5070>;tag=13718SIPpTag001\r\n",
        "To: service <sip:service@198.51.100.7:5060>\r\n",
        "Call-ID: 1-13718@192.168.0.101\r\n",
        "CSeq: 1 INVITE\r\n",
        "Contact: sip:sipp@192.168.0.101:5070\r\n",
        "Max-Forwards: 70\r\n",
        "Subject: Performance Test\r\n",
        "Content-Type: application/sdp\r\n",
        "Content-Length:   137\r\n",
        "\r\n",
        "v=0\r\n",
        "o=user1 53655765 2353687637 IN IP4 192.168.0.101\r\n",
        "s=-\r\n",
        "c=IN IP4 192.168.0.101\r\n",
        "t=0 0\r\n",
        "m=audio 6004 RTP/AVP 0\r\n",
        "a=rtpmap:0 PCMU/8000\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:5070 -> 198.51.100.7:5060
    const TCP_ACK: &[u8] = concat!(
        "ACK sip:service@198.51.100.7:5060 SIP/2.0\r\n",
        "Via: SIP/2.0/TCP 192.168.0.101:5070;branch=z9hG4bK-13718-1-5\r\n",
        "From: sipp <sip:sipp@192.168.0.101:5070>;tag=13718SIPpTag001\r\n",
        "To: service <sip:service@198.51.100.7:5060>;tag=13714SIPpTag011\r\n",
        "Call-ID: 1-13718@192.168.0.101\r\n",
        "CSeq: 1 ACK\r\n",
        "Contact: sip:sipp@192.168.0.101:5070\r\n",
        "Max-Forwards: 70\r\n",
        "Subject: Performance Test\r\n",
        "Content-Length: 0\r\n",
        "\r\n",
    )
    .as_bytes();

    // tcp 192.168.0.101:5070 -> 198.51.100.7:5060
    const TCP_BYE: &[u8] = concat!(
        "BYE sip:service@198.51.100.7:5060 SIP/2.0\r\n",
        "Via: SIP/2.0/TCP 192.168.0.101:5070;branch=z9hG4bK-13718-1-7\r\n",
        "From: sipp <sip:sipp@192.168.0.101:5070>;tag=13718SIPpTag001\r\n",
        "To: service <sip:service@198.51.100.7:5060>;tag=13714SIPpTag011\r\n",
        "Call-ID: 1-13718@192.168.0.101\r\n",
        "CSeq: 2 BYE\r\n",
        "Contact: sip:sipp@192.168.0.101:5070\r\n",
        "Max-Forwards: 70\r\n",
        "Subject: Performance Test\r\n",
        "Content-Length: 0\r\n",
        "\r\n",
    )
    .as_bytes();

    fn rw() -> SipRewriter {
        SipRewriter
    }

    fn content_length_matches(msg: &[u8]) {
        let s = String::from_utf8_lossy(msg);
        let (head, body) = s.split_once("\r\n\r\n").expect("header block");
        let cl = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l"))
                    .then(|| v.trim().parse::<usize>().expect("number"))
            })
            .expect("Content-Length");
        assert_eq!(cl, body.len(), "Content-Length of {s:?}");
    }

    const INVITE_REWRITTEN: &[u8] = concat!(
        "INVITE sip:service@198.51.100.7:5070 SIP/2.0\r\n",
        "Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-12949-1-0\r\n",
        "From: sipp <sip:sipp@192.168.0.101:5060>;tag=12949SIPpTag001\r\n",
        "To: service <sip:service@198.51.100.7:5070>\r\n",
        "Call-ID: 1-12949@192.168.0.101\r\n",
        "CSeq: 1 INVITE\r\n",
        "Contact: sip:sipp@203.0.113.10:5060\r\n",
        "Max-Forwards: 70\r\n",
        "Subject: Performance Test\r\n",
        "Content-Type: application/sdp\r\n",
        "Content-Length:   136\r\n",
        "\r\n",
        "v=0\r\n",
        "o=user1 53655765 2353687637 IN IP4 203.0.113.10\r\n",
        "s=-\r\n",
        "c=IN IP4 203.0.113.10\r\n",
        "t=0 0\r\n",
        "m=audio 36000 RTP/AVP 0\r\n",
        "a=rtpmap:0 PCMU/8000\r\n",
    )
    .as_bytes();

    #[test]
    fn uac_invite_over_udp_is_rewritten_with_media_pinholes() {
        let flow = flow(Role::PrivateClient, Transport::Udp, 5060, 5070);
        let r = rw().rewrite(
            UAC_INVITE,
            Direction::FromPrivate,
            &flow,
            &mut OffsetPorts(30000),
        );
        assert_eq!(r.consumed, UAC_INVITE.len());
        assert_eq!(
            String::from_utf8_lossy(&output(&r.outcome, UAC_INVITE)),
            String::from_utf8_lossy(INVITE_REWRITTEN)
        );
        content_length_matches(INVITE_REWRITTEN);
        assert_eq!(
            r.pinholes,
            vec![
                media_pinhole(36000, 6000, false),
                media_pinhole(36001, 6001, false)
            ]
        );
    }

    // RGW64: the INVITE of sipp -6 on an IPv6-only host, after translation
    // (its packets carry the host's proxy IPv4 192.168.0.101 here).
    const UAC_INVITE6: &[u8] = concat!(
        "INVITE sip:service@[fd64:64::c633:6407]:5070 SIP/2.0\r\n",
        "Via: SIP/2.0/UDP [fd00:192:168::103]:5060;branch=z9hG4bK-1-1-0\r\n",
        "From: sipp <sip:sipp@[fd00:192:168::103]:5060>;tag=1\r\n",
        "To: service <sip:service@[fd64:64::c633:6407]:5070>\r\n",
        "Call-ID: 1-1@fd00:192:168::103\r\n",
        "CSeq: 1 INVITE\r\n",
        "Contact: <sip:sipp@[FD00:192:168:0::103]:5060>\r\n",
        "Content-Type: application/sdp\r\n",
        "Content-Length: 145\r\n",
        "\r\n",
        "v=0\r\n",
        "o=user1 53655765 2353687637 IN IP6 fd00:192:168::103\r\n",
        "s=-\r\n",
        "c=IN IP6 fd00:192:168::103\r\n",
        "t=0 0\r\n",
        "m=audio 6000 RTP/AVP 0\r\n",
        "a=rtpmap:0 PCMU/8000\r\n",
    )
    .as_bytes();

    #[test]
    fn ipv6_host_behind_translator_is_rewritten_to_ipv4() {
        let mut flow = flow(Role::PrivateClient, Transport::Udp, 5060, 5070);
        flow.private_v6 = Some("fd00:192:168::103".parse().unwrap());
        content_length_matches(UAC_INVITE6);
        let r = rw().rewrite(
            UAC_INVITE6,
            Direction::FromPrivate,
            &flow,
            &mut OffsetPorts(30000),
        );
        let out = String::from_utf8_lossy(&output(&r.outcome, UAC_INVITE6)).into_owned();
        assert!(
            out.contains("Via: SIP/2.0/UDP 203.0.113.10:5060;branch="),
            "{out}"
        );
        assert!(
            out.contains("Contact: <sip:sipp@203.0.113.10:5060>"),
            "{out}"
        );
        // Identities and the peer's (proxy) address stay.
        assert!(
            out.contains("From: sipp <sip:sipp@[fd00:192:168::103]:5060>"),
            "{out}"
        );
        assert!(
            out.starts_with("INVITE sip:service@[fd64:64::c633:6407]:5070 "),
            "{out}"
        );
        assert!(
            out.contains("o=user1 53655765 2353687637 IN IP4 203.0.113.10\r\n"),
            "{out}"
        );
        assert!(
            out.contains("c=IN IP4 203.0.113.10\r\nt=0 0\r\nm=audio 36000 RTP/AVP 0"),
            "{out}"
        );
        assert!(!out.contains("IP6"), "{out}");
        content_length_matches(out.as_bytes());
        // Media pinholes lead to the proxy IPv4 (the translator does the rest).
        assert_eq!(
            r.pinholes,
            vec![
                media_pinhole(36000, 6000, false),
                media_pinhole(36001, 6001, false)
            ]
        );
        // The response's top Via and an incoming request-URI come back as
        // the host's IPv6 reference.
        let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-1-1-0\r\nContent-Length: 0\r\n\r\n";
        let r = rw().rewrite(resp, Direction::FromPublic, &flow, &mut OffsetPorts(0));
        let out = String::from_utf8_lossy(&output(&r.outcome, resp)).into_owned();
        assert!(
            out.contains("Via: SIP/2.0/UDP [fd00:192:168::103]:5060;"),
            "{out}"
        );
        let bye = b"BYE sip:sipp@203.0.113.10:5060 SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let r = rw().rewrite(bye, Direction::FromPublic, &flow, &mut OffsetPorts(0));
        let out = String::from_utf8_lossy(&output(&r.outcome, bye)).into_owned();
        assert!(
            out.starts_with("BYE sip:sipp@[fd00:192:168::103]:5060 SIP/2.0"),
            "{out}"
        );
        // The IPv4 callee's answer: its media address through prefix64.
        flow.prefix64 = Some("fd64:64::".parse().unwrap());
        let ok = concat!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-1-1-0\r\n",
            "Content-Type: application/sdp\r\nContent-Length: 98\r\n\r\n",
            "v=0\r\no=user1 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n",
            "m=audio 18000 RTP/AVP 8\r\n",
        )
        .as_bytes();
        content_length_matches(ok);
        let r = rw().rewrite(ok, Direction::FromPublic, &flow, &mut OffsetPorts(0));
        let out = String::from_utf8_lossy(&output(&r.outcome, ok)).into_owned();
        assert!(
            out.contains("Via: SIP/2.0/UDP [fd00:192:168::103]:5060;"),
            "{out}"
        );
        assert!(
            out.contains("o=user1 1 1 IN IP6 fd64:64::c633:6407\r\n"),
            "{out}"
        );
        assert!(out.contains("c=IN IP6 fd64:64::c633:6407\r\n"), "{out}");
        assert!(out.contains("m=audio 18000 RTP/AVP 8\r\n"), "{out}");
        // The IPv4 peer's Contact: reachable for the IPv6-only host through prefix64.
        let contact = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-1-1-0\r\nContact: <sip:198.51.100.7:5070;transport=UDP>\r\nRecord-Route: <sip:198.51.100.9;lr>\r\nContent-Length: 0\r\n\r\n";
        let r = rw().rewrite(contact, Direction::FromPublic, &flow, &mut OffsetPorts(0));
        let out = String::from_utf8_lossy(&output(&r.outcome, contact)).into_owned();
        assert!(
            out.contains("Contact: <sip:[fd64:64::c633:6407]:5070;transport=UDP>\r\n"),
            "{out}"
        );
        // Another host's address is not the peer's: left.
        assert!(
            out.contains("Record-Route: <sip:198.51.100.9;lr>\r\n"),
            "{out}"
        );
        assert!(r.pinholes.is_empty());
        content_length_matches(out.as_bytes());
        flow.prefix64 = None;
        // Without RGW64 the IPv6 message is not ours: unchanged, no pinholes.
        flow.private_v6 = None;
        let r = rw().rewrite(
            UAC_INVITE6,
            Direction::FromPrivate,
            &flow,
            &mut OffsetPorts(30000),
        );
        assert_eq!(output(&r.outcome, UAC_INVITE6), UAC_INVITE6);
        assert!(r.pinholes.is_empty());
    }

    #[test]
    fn nat46_ipv4_host_to_ipv6_peer_is_rewritten_to_ipv6_and_back() {
        let mut flow = flow(Role::PrivateClient, Transport::Udp, 5060, 5070);
        let peer6: std::net::Ipv6Addr = "2001:db8::80".parse().unwrap();
        let public6: std::net::Ipv6Addr = "2001:db8:100::2".parse().unwrap();
        flow.prefix64 = Some("fd64:64::".parse().unwrap());
        flow.peer_v6 = Some(peer6);
        flow.public_v6 = Some(public6);
        let r = rw().rewrite(
            UAC_INVITE,
            Direction::FromPrivate,
            &flow,
            &mut OffsetPorts(30000),
        );
        let out = String::from_utf8_lossy(&output(&r.outcome, UAC_INVITE)).into_owned();
        for want in [
            "INVITE sip:service@[2001:db8::80]:5070 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP [2001:db8:100::2]:5060;branch=",
            "Contact: sip:sipp@[2001:db8:100::2]:5060\r\n",
            "o=user1 53655765 2353687637 IN IP6 2001:db8:100::2\r\n",
            "c=IN IP6 2001:db8:100::2\r\nt=0 0\r\nm=audio 36000 RTP/AVP 0",
            // Identities stay.
            "From: sipp <sip:sipp@192.168.0.101:5060>",
            "To: service <sip:service@198.51.100.7:5070>",
        ] {
            assert!(out.contains(want), "{want:?} not in\n{out}");
        }
        assert!(!out.contains("IP4"), "{out}");
        content_length_matches(out.as_bytes());
        // Media pinholes on the IPv6 side, to the host's prefix64 address.
        let v6 = Some(crate::Pinhole6 {
            peer: peer6,
            public_addr: public6,
            private_addr: "fd64:64::c0a8:65".parse().unwrap(),
        });
        let want: Vec<Pinhole> = [(36000, 6000), (36001, 6001)]
            .iter()
            .map(|&(public_port, private_port)| Pinhole {
                v6: v6.clone(),
                ..media_pinhole(public_port, private_port, false)
            })
            .collect();
        assert_eq!(r.pinholes, want);
        // The IPv6 callee's answer: our [IPv6] in the top Via back to the
        // host's IPv4, its own [IPv6] (Contact, SDP) to its proxy IPv4.
        let ok = concat!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [2001:db8:100::2]:5060;branch=z9hG4bK-1-1-0\r\n",
            "Contact: <sip:[2001:db8::80]:5070;transport=UDP>\r\n",
            "Content-Type: application/sdp\r\nContent-Length: 98\r\n\r\n",
            "v=0\r\no=user1 1 1 IN IP6 2001:db8::80\r\ns=-\r\nc=IN IP6 2001:db8::80\r\nt=0 0\r\n",
            "m=audio 18000 RTP/AVP 8\r\n",
        )
        .as_bytes();
        content_length_matches(ok);
        let r = rw().rewrite(ok, Direction::FromPublic, &flow, &mut OffsetPorts(0));
        let out = String::from_utf8_lossy(&output(&r.outcome, ok)).into_owned();
        for want in [
            "Via: SIP/2.0/UDP 192.168.0.101:5060;branch=",
            "Contact: <sip:198.51.100.7:5070;transport=UDP>\r\n",
            "o=user1 1 1 IN IP4 198.51.100.7\r\n",
            "c=IN IP4 198.51.100.7\r\n",
            "m=audio 18000 RTP/AVP 8\r\n",
        ] {
            assert!(out.contains(want), "{want:?} not in\n{out}");
        }
        assert!(!out.contains("IP6") && !out.contains('['), "{out}");
        assert!(r.pinholes.is_empty());
        content_length_matches(out.as_bytes());
        // Another IPv6 media address has no proxy IPv4: it stays.
        let other = ok.to_vec();
        let other = replace(&other, "c=IN IP6 2001:db8::80", "c=IN IP6 2001:db8::99");
        let r = rw().rewrite(&other, Direction::FromPublic, &flow, &mut OffsetPorts(0));
        let out = String::from_utf8_lossy(&output(&r.outcome, &other)).into_owned();
        assert!(out.contains("c=IN IP6 2001:db8::99\r\n"), "{out}");
        // An in-dialog request of the callee comes back to the host's IPv4.
        let bye = b"BYE sip:sipp@[2001:db8:100::2]:5060 SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let r = rw().rewrite(bye, Direction::FromPublic, &flow, &mut OffsetPorts(0));
        let out = String::from_utf8_lossy(&output(&r.outcome, bye)).into_owned();
        assert!(
            out.starts_with("BYE sip:sipp@192.168.0.101:5060 SIP/2.0"),
            "{out}"
        );
        // Without public_v6 the flow is not NAT46: plain IPv4 rewriting.
        flow.public_v6 = None;
        let r = rw().rewrite(
            UAC_INVITE,
            Direction::FromPrivate,
            &flow,
            &mut OffsetPorts(30000),
        );
        let out = String::from_utf8_lossy(&output(&r.outcome, UAC_INVITE)).into_owned();
        assert!(out.contains("c=IN IP4 203.0.113.10\r\n"), "{out}");
        assert!(r.pinholes.iter().all(|p| p.v6.is_none()));
    }

    #[test]
    fn same_ports_keep_the_media_line_and_still_open_pinholes() {
        let flow = flow(Role::PrivateClient, Transport::Udp, 5060, 5070);
        let r = rw().rewrite(
            UAC_INVITE,
            Direction::FromPrivate,
            &flow,
            &mut OffsetPorts(0),
        );
        let out = output(&r.outcome, UAC_INVITE);
        assert_eq!(
            out,
            replace(
                &replace(INVITE_REWRITTEN, "36000", "6000"),
                "  136",
                "  135"
            )
        );
        content_length_matches(&out);
        assert_eq!(
            r.pinholes,
            vec![
                media_pinhole(6000, 6000, false),
                media_pinhole(6001, 6001, false)
            ]
        );
    }

    #[test]
    fn rewriting_is_idempotent_for_retransmissions() {
        let flow = flow(Role::PrivateClient, Transport::Udp, 5060, 5070);
        let mut ports = OffsetPorts(30000);
        let a = rw().rewrite(UAC_INVITE, Direction::FromPrivate, &flow, &mut ports);
        let b = rw().rewrite(UAC_INVITE, Direction::FromPrivate, &flow, &mut ports);
        assert_eq!(a, b);
        // The rewritten message has no private address left to rewrite.
        let out = output(&a.outcome, UAC_INVITE);
        assert!(!String::from_utf8_lossy(&out).contains("Via: SIP/2.0/UDP 192.168.0.101"));
    }

    #[test]
    fn uac_ack_and_bye_rewrite_via_and_contact_only() {
        let flow = flow(Role::PrivateClient, Transport::Udp, 5060, 5070);
        for msg in [UAC_ACK, UAC_BYE] {
            let r = rw().rewrite(msg, Direction::FromPrivate, &flow, &mut OffsetPorts(30000));
            let expected = replace(
                &replace(msg, "UDP 192.168.0.101:5060", "UDP 203.0.113.10:5060"),
                "Contact: sip:sipp@192.168.0.101",
                "Contact: sip:sipp@203.0.113.10",
            );
            assert_eq!(output(&r.outcome, msg), expected);
            assert!(r.pinholes.is_empty());
        }
    }

    #[test]
    fn register_rewrites_via_with_rport_and_bracketed_contact() {
        let flow = flow(Role::PrivateClient, Transport::Udp, 5070, 5060);
        let r = rw().rewrite(REGISTER, Direction::FromPrivate, &flow, &mut NoPorts);
        let expected = concat!(
            "REGISTER sip:198.51.100.7:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.10:5070;branch=z9hG4bK-14384-1-0;rport\r\n",
            "From: <sip:alice@198.51.100.7>;tag=14384SIPpTag001\r\n",
            "To: <sip:alice@198.51.100.7>\r\n",
            "Call-ID: 1-14384@192.168.0.101\r\n",
            "CSeq: 1 REGISTER\r\n",
            "Contact: <sip:alice@203.0.113.10:5070;transport=UDP>;expires=3600\r\n",
            "Max-Forwards: 70\r\n",
            "User-Agent: sipp\r\n",
            "Content-Length: 0\r\n",
            "\r\n",
        );
        assert_eq!(
            String::from_utf8_lossy(&output(&r.outcome, REGISTER)),
            expected
        );
        assert!(r.pinholes.is_empty());
    }

    #[test]
    fn response_top_via_is_mapped_back_for_the_private_uac() {
        // What the registrar sends back through the gateway: our public Via.
        let flow = flow(Role::PrivateClient, Transport::Udp, 5070, 5060);
        let from_registrar = replace(REGISTER_200_OK, "UDP 192.168.0.101", "UDP 203.0.113.10");
        let from_registrar = replace(&from_registrar, "alice@192.168.0.101", "alice@203.0.113.10");
        let r = rw().rewrite(&from_registrar, Direction::FromPublic, &flow, &mut NoPorts);
        // Via back to the private address; the registered Contact stays public.
        let expected = replace(REGISTER_200_OK, "alice@192.168.0.101", "alice@203.0.113.10");
        assert_eq!(output(&r.outcome, &from_registrar), expected);
        assert!(r.pinholes.is_empty());
    }

    #[test]
    fn public_uas_answer_needs_nothing() {
        // Captured without a gateway: the Via is the private one already.
        let flow = flow(Role::PrivateClient, Transport::Udp, 5060, 5070);
        let r = rw().rewrite(
            UAS_200_OK_PUBLIC,
            Direction::FromPublic,
            &flow,
            &mut OffsetPorts(1),
        );
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert_eq!(r.consumed, UAS_200_OK_PUBLIC.len());
        assert!(r.pinholes.is_empty());
    }

    #[test]
    fn incoming_invite_request_uri_is_mapped_to_the_private_uas() {
        let flow = flow(Role::PrivateServer, Transport::Udp, 5060, 5070);
        let via_gateway = replace(INVITE_TO_PRIVATE, "192.168.0.101", "203.0.113.10");
        let r = rw().rewrite(
            &via_gateway,
            Direction::FromPublic,
            &flow,
            &mut OffsetPorts(1),
        );
        let expected = replace(
            &via_gateway,
            "INVITE sip:service@203.0.113.10",
            "INVITE sip:service@192.168.0.101",
        );
        assert_eq!(output(&r.outcome, &via_gateway), expected);
        // The public UAC's SDP opens nothing.
        assert!(r.pinholes.is_empty());
    }

    #[test]
    fn private_uas_answer_is_rewritten_with_snat_pinholes() {
        let flow = flow(Role::PrivateServer, Transport::Udp, 5060, 5070);
        let r = rw().rewrite(
            UAS_200_OK_PRIVATE,
            Direction::FromPrivate,
            &flow,
            &mut TablePorts(vec![(6000, 41000), (6001, 41001)]),
        );
        let expected = concat!(
            "SIP/2.0 200 OK\r\n",
            "Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-13590-1-0\r\n",
            "From: sipp <sip:sipp@198.51.100.7:5070>;tag=13590SIPpTag001\r\n",
            "To: service <sip:service@192.168.0.101:5060>;tag=13566SIPpTag011\r\n",
            "Call-ID: 1-13590@198.51.100.7\r\n",
            "CSeq: 1 INVITE\r\n",
            "Contact: <sip:203.0.113.10:5060;transport=UDP>\r\n",
            "Content-Type: application/sdp\r\n",
            "Content-Length:   136\r\n",
            "\r\n",
            "v=0\r\n",
            "o=user1 53655765 2353687637 IN IP4 203.0.113.10\r\n",
            "s=-\r\n",
            "c=IN IP4 203.0.113.10\r\n",
            "t=0 0\r\n",
            "m=audio 41000 RTP/AVP 0\r\n",
            "a=rtpmap:0 PCMU/8000\r\n",
        );
        let out = output(&r.outcome, UAS_200_OK_PRIVATE);
        assert_eq!(String::from_utf8_lossy(&out), expected);
        content_length_matches(&out);
        assert_eq!(
            r.pinholes,
            vec![
                media_pinhole(41000, 6000, true),
                media_pinhole(41001, 6001, true)
            ]
        );

        let r = rw().rewrite(UAS_180_PRIVATE, Direction::FromPrivate, &flow, &mut NoPorts);
        assert_eq!(
            output(&r.outcome, UAS_180_PRIVATE),
            replace(UAS_180_PRIVATE, "<sip:192.168.0.101", "<sip:203.0.113.10")
        );
    }

    #[test]
    fn no_public_port_leaves_the_message_unchanged() {
        let flow = flow(Role::PrivateClient, Transport::Udp, 5060, 5070);
        let r = rw().rewrite(UAC_INVITE, Direction::FromPrivate, &flow, &mut NoPorts);
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert_eq!(r.consumed, UAC_INVITE.len());
        assert!(r.pinholes.is_empty());
    }

    #[test]
    fn tcp_stream_is_framed_by_content_length() {
        let flow = flow(Role::PrivateClient, Transport::Tcp, 5070, 5060);
        let mut stream = TCP_INVITE.to_vec();
        stream.extend_from_slice(b"\r\n\r\n"); // RFC 5626 keep-alive
        stream.extend_from_slice(TCP_ACK);
        stream.extend_from_slice(TCP_BYE);
        let mut pos = 0;
        let mut outs = Vec::new();
        while pos < stream.len() {
            let r = rw().rewrite(
                &stream[pos..],
                Direction::FromPrivate,
                &flow,
                &mut OffsetPorts(30000),
            );
            assert!(r.consumed > 0, "{r:?}");
            outs.push((
                r.consumed,
                output(&r.outcome, &stream[pos..pos + r.consumed]),
            ));
            pos += r.consumed;
        }
        let lens: Vec<usize> = outs.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            lens,
            vec![TCP_INVITE.len(), 4, TCP_ACK.len(), TCP_BYE.len()]
        );
        let invite = String::from_utf8_lossy(&outs[0].1).into_owned();
        assert!(invite.contains("Via: SIP/2.0/TCP 203.0.113.10:5070;branch=z9hG4bK-13718-1-0\r\n"));
        assert!(invite.contains("Contact: sip:sipp@203.0.113.10:5070\r\n"));
        assert!(invite.contains("m=audio 36004 RTP/AVP 0\r\n"));
        content_length_matches(&outs[0].1);
        assert_eq!(outs[1].1, b"\r\n\r\n");
    }

    #[test]
    fn every_split_point_of_a_stream_message_is_incomplete() {
        let flow = flow(Role::PrivateClient, Transport::Tcp, 5070, 5060);
        for msg in [TCP_INVITE, TCP_ACK, TCP_BYE, REGISTER, UAS_200_OK_PRIVATE] {
            check_splits(&rw(), msg, Direction::FromPrivate, &flow);
            check_splits(&rw(), msg, Direction::FromPublic, &flow);
        }
    }

    #[test]
    fn compact_forms_and_folded_headers() {
        let flow = flow(Role::PrivateClient, Transport::Tcp, 5060, 5070);
        let compact = replace(
            &replace(
                &replace(&replace(UAC_INVITE, "Via:", "v:"), "Contact:", "m:"),
                "Content-Type:",
                "c:",
            ),
            "Content-Length:  ",
            "l:",
        );
        let compact = replace(&compact, "branch=", "\r\n  branch=");
        let compact = replace(&compact, "5060;\r\n  branch", "5060\r\n ;branch");
        let r = rw().rewrite(
            &compact,
            Direction::FromPrivate,
            &flow,
            &mut OffsetPorts(30000),
        );
        assert_eq!(r.consumed, compact.len());
        let out = output(&r.outcome, &compact);
        let s = String::from_utf8_lossy(&out);
        assert!(
            s.contains("v: SIP/2.0/UDP 203.0.113.10:5060\r\n ;branch="),
            "{s}"
        );
        assert!(s.contains("m: sip:sipp@203.0.113.10:5060\r\n"), "{s}");
        assert!(s.contains("l: 136\r\n"), "{s}");
        content_length_matches(&out);
        assert_eq!(r.pinholes.len(), 2);
    }

    #[test]
    fn framing_records_the_body_headers_by_syntax() {
        let msg = b"ANNOUNCE rtsp://192.168.0.101/a RTSP/1.0\r\nc: text/plain\r\nl: 9\r\n\
                    Content-Type: text/plain\r\ncontent-type: application/sdp;x=1\r\n\
                    Content-Length: 4\r\n\r\nv=0\nrest";
        let rtsp = Syntax {
            version: b"RTSP/",
            compact_forms: false,
        };
        let text::Framing::Message(m) = text::frame(msg, &rtsp, true) else {
            panic!("framed");
        };
        // The last long-form headers; `c`/`l` are other headers in RTSP.
        assert_eq!(m.sdp_body(msg), Some(&b"v=0\n"[..]));
        assert_eq!(m.content_length.clone().map(|r| &msg[r]), Some(&b"4"[..]));
        let mut edits = Edits::default();
        edits.replace_body(&m, b"v=1\r\n".to_vec());
        assert!(edits
            .apply(&msg[..m.end])
            .ends_with(b"Content-Length: 5\r\n\r\nv=1\r\n"));
        // SIP reads the compact forms too: the last Content-Type is SDP,
        // but `l: 9` disagrees with `Content-Length: 4`.
        let sip = Syntax {
            version: b"RTSP/",
            compact_forms: true,
        };
        assert!(matches!(
            text::frame(msg, &sip, true),
            text::Framing::Malformed { .. }
        ));
        let plain = replace(msg, "content-type: application/sdp;x=1\r\n", "");
        let text::Framing::Message(m) = text::frame(&plain, &rtsp, true) else {
            panic!("framed");
        };
        assert_eq!(m.sdp_body(&plain), None);
    }

    #[test]
    fn via_variants() {
        let flow = flow(Role::PrivateClient, Transport::Udp, 5060, 5060);
        let msg = concat!(
            "OPTIONS sip:192.168.0.101 SIP/2.0\r\n",
            "Via: SIP / 2.0 / TCP 192.168.0.101;received=192.168.0.101;branch=z9hG4bK1,",
            " SIP/2.0/UDP [2001:db8::1]:5060;branch=\"x,y\", SIP/2.0/UDP 192.168.0.1011\r\n",
            "v: SIP/2.0/UDP 192.168.0.101:5062 ;rport\r\n",
            "Route: <sip:192.168.0.101;lr>, <sip:p@198.51.100.7;lr>\r\n",
            "Record-Route: <sip:proxy@192.168.0.101:5080;lr>\r\n",
            "From: <sip:bob@192.168.0.101>;tag=1\r\n",
            "Contact: \"Bob\" <sips:bob@192.168.0.101:5061>, <sip:bob@192.168.0.10>\r\n",
            "Content-Length: 0\r\n\r\n",
        );
        let r = rw().rewrite(msg.as_bytes(), Direction::FromPrivate, &flow, &mut NoPorts);
        let expected = concat!(
            "OPTIONS sip:203.0.113.10 SIP/2.0\r\n",
            "Via: SIP / 2.0 / TCP 203.0.113.10;received=192.168.0.101;branch=z9hG4bK1,",
            " SIP/2.0/UDP [2001:db8::1]:5060;branch=\"x,y\", SIP/2.0/UDP 192.168.0.1011\r\n",
            "v: SIP/2.0/UDP 203.0.113.10:5062 ;rport\r\n",
            "Route: <sip:203.0.113.10;lr>, <sip:p@198.51.100.7;lr>\r\n",
            "Record-Route: <sip:proxy@203.0.113.10:5080;lr>\r\n",
            "From: <sip:bob@192.168.0.101>;tag=1\r\n",
            "Contact: \"Bob\" <sips:bob@203.0.113.10:5061>, <sip:bob@192.168.0.10>\r\n",
            "Content-Length: 0\r\n\r\n",
        );
        assert_eq!(
            String::from_utf8_lossy(&output(&r.outcome, msg.as_bytes())),
            expected
        );
    }

    #[test]
    fn keepalives_and_framing_errors() {
        let udp = flow(Role::PrivateClient, Transport::Udp, 5060, 5060);
        let tcp = flow(Role::PrivateClient, Transport::Tcp, 5060, 5060);
        let d = Direction::FromPrivate;
        let r = rw().rewrite(b"\r\n", d, &udp, &mut NoPorts);
        assert_eq!((r.outcome, r.consumed), (Outcome::Unchanged, 2));
        let r = rw().rewrite(b"\r\n\r\nINVITE", d, &tcp, &mut NoPorts);
        assert_eq!((r.outcome, r.consumed), (Outcome::Unchanged, 4));
        // Content-Length larger than the datagram.
        let short = &UAC_INVITE[..UAC_INVITE.len() - 3];
        let r = rw().rewrite(short, d, &udp, &mut OffsetPorts(1));
        assert_eq!((r.outcome, r.consumed), (Outcome::Malformed, short.len()));
        // Not SIP at all.
        let r = rw().rewrite(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", d, &tcp, &mut NoPorts);
        assert_eq!(r.outcome, Outcome::Malformed);
        assert!(r.consumed >= 1);
        let r = rw().rewrite(b"\x16\x03\x01\x02\x00", d, &tcp, &mut NoPorts);
        assert_eq!((r.outcome, r.consumed), (Outcome::Malformed, 5));
        // Conflicting Content-Length values.
        let two = b"ACK sip:a@b SIP/2.0\r\nContent-Length: 0\r\nl: 3\r\n\r\nabc";
        let r = rw().rewrite(two, d, &tcp, &mut NoPorts);
        assert_eq!(r.outcome, Outcome::Malformed);
        // No Content-Length on a stream: no body.
        let none = b"ACK sip:a@b SIP/2.0\r\nTo: x\r\n\r\nOPTIONS";
        let r = rw().rewrite(none, d, &tcp, &mut NoPorts);
        assert_eq!(
            (r.outcome, r.consumed),
            (Outcome::Unchanged, none.len() - 7)
        );
        // Trailing bytes after Content-Length in a datagram are kept.
        let mut padded = UAC_INVITE.to_vec();
        padded.extend_from_slice(b"\0\0");
        let r = rw().rewrite(&padded, d, &udp, &mut OffsetPorts(30000));
        let mut expected = INVITE_REWRITTEN.to_vec();
        expected.extend_from_slice(b"\0\0");
        assert_eq!(output(&r.outcome, &padded), expected);
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let seeds: &[&[u8]] = &[UAC_INVITE, UAS_200_OK_PRIVATE, REGISTER, TCP_BYE];
        for role in [Role::PrivateClient, Role::PrivateServer] {
            fuzz(&rw(), seeds, role, Transport::Tcp);
            fuzz(&rw(), seeds, role, Transport::Udp);
        }
    }
}

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

use std::time::Duration;

use crate::sdp::{self, SdpPolicy};
use crate::{Direction, FlowAddrs, MessageResult, Outcome, PortAlloc, Rewriter, Transport};

use text::{Edits, Framing, Syntax};

/// Default lifetime of the media pinholes a SIP message opens: long enough
/// for the answer and the first RTP packets of a ringing call.
pub const DEFAULT_MEDIA_LIFETIME: Duration = Duration::from_secs(180);

/// Rewrites SIP requests and responses (UDP datagrams or TCP stream slices).
#[derive(Debug, Clone)]
pub struct SipRewriter {
    /// Lifetime of the RTP/RTCP pinholes opened from SDP bodies.
    pub media_lifetime: Duration,
}

impl Default for SipRewriter {
    fn default() -> Self {
        SipRewriter {
            media_lifetime: DEFAULT_MEDIA_LIFETIME,
        }
    }
}

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
        let msg_buf = buf.get(lead..).unwrap_or_default();
        let msg = match text::frame(msg_buf, &SIP_SYNTAX, stream) {
            Framing::Message(m) => m,
            Framing::Incomplete => return text::result(Outcome::Incomplete, 0),
            Framing::Malformed { skip } => {
                return text::result(Outcome::Malformed, if stream { skip } else { buf.len() })
            }
        };
        let consumed = lead + msg.end;
        let mut pinholes = Vec::new();
        let edits = match dir {
            Direction::FromPrivate => {
                match self.private_to_public(msg_buf, &msg, flow, ports, &mut pinholes) {
                    Some(e) => e,
                    // No public port for a media stream: the message passes
                    // unchanged (see PortAlloc) and opens nothing.
                    None => return text::result(Outcome::Unchanged, consumed),
                }
            }
            Direction::FromPublic => public_to_private(msg_buf, &msg, flow),
        };
        if edits.is_empty() {
            return MessageResult {
                outcome: Outcome::Unchanged,
                consumed,
                pinholes,
            };
        }
        let mut out = Vec::with_capacity(consumed + 64);
        out.extend_from_slice(buf.get(..lead).unwrap_or_default());
        out.extend_from_slice(&edits.apply(msg_buf.get(..msg.end).unwrap_or_default()));
        MessageResult {
            outcome: Outcome::Rewritten(out),
            consumed,
            pinholes,
        }
    }
}

impl SipRewriter {
    /// Private → public. `None` when a media port could not be allocated.
    fn private_to_public(
        &self,
        buf: &[u8],
        msg: &text::Message,
        flow: &FlowAddrs,
        ports: &mut dyn PortAlloc,
        pinholes: &mut Vec<crate::Pinhole>,
    ) -> Option<Edits> {
        let private = *flow.private.ip();
        let public = flow.public.to_string().into_bytes();
        let mut edits = Edits::default();
        if let Some(uri) = msg.request_uri(buf) {
            text::uri_host_edits(buf, uri, private, &public, &mut edits);
        }
        let mut is_sdp = false;
        let mut content_length = None;
        for h in &msg.headers {
            match canonical_name(h.name_bytes(buf)) {
                Some(Name::Via) => {
                    text::via_edits(buf, h.value.clone(), private, &public, &mut edits)
                }
                Some(Name::Contact | Name::Route | Name::RecordRoute) => {
                    text::uri_host_edits(buf, h.value.clone(), private, &public, &mut edits)
                }
                Some(Name::ContentType) => is_sdp = text::is_sdp(h.value_bytes(buf)),
                Some(Name::ContentLength) => content_length = Some(h.value.clone()),
                None => {}
            }
        }
        let body = buf.get(msg.body.clone()).unwrap_or_default();
        if is_sdp && !body.is_empty() {
            let policy = SdpPolicy {
                media_pinholes: true,
                lifetime: self.media_lifetime,
            };
            let sdp = sdp::rewrite(body, flow, ports, &policy).ok()?;
            pinholes.extend(sdp.pinholes);
            if let Some(new_body) = sdp.body {
                if let Some(cl) = content_length {
                    edits.replace(cl, new_body.len().to_string().into_bytes());
                }
                edits.replace(msg.body.clone(), new_body);
            }
        }
        Some(edits)
    }
}

/// Public → private where the private UA checks its own address.
fn public_to_private(buf: &[u8], msg: &text::Message, flow: &FlowAddrs) -> Edits {
    let private = flow.private.ip().to_string().into_bytes();
    let mut edits = Edits::default();
    if let Some(uri) = msg.request_uri(buf) {
        text::uri_host_edits(buf, uri, flow.public, &private, &mut edits);
    } else if let Some(via) = msg
        .headers
        .iter()
        .find(|h| canonical_name(h.name_bytes(buf)) == Some(Name::Via))
    {
        // Only the topmost Via value is this host's (§18.1.2).
        text::via_top_edit(buf, via.value.clone(), flow.public, &private, &mut edits);
    }
    edits
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Via,
    Contact,
    Route,
    RecordRoute,
    ContentType,
    ContentLength,
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
        (b"content-type", Name::ContentType),
        (b"c", Name::ContentType),
        (b"content-length", Name::ContentLength),
        (b"l", Name::ContentLength),
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
    use std::net::Ipv4Addr;
    use std::ops::Range;

    use crate::{MessageResult, Outcome};

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

        // Content-Length (§20.14, compact `l`); conflicting values are an error.
        let mut content_length: Option<usize> = None;
        for h in &headers {
            let n = h.name_bytes(buf);
            let is_cl = n.eq_ignore_ascii_case(b"content-length")
                || (syntax.compact_forms && n.eq_ignore_ascii_case(b"l"));
            if !is_cl {
                continue;
            }
            match (parse_decimal(h.value_bytes(buf)), content_length) {
                (None, _) => return Framing::Malformed { skip: body_start },
                (Some(v), Some(prev)) if v != prev => {
                    return Framing::Malformed { skip: body_start }
                }
                (Some(v), _) => content_length = Some(v),
            }
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
    pub fn is_sdp(value: &[u8]) -> bool {
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

    /// Does `bytes` spell exactly `addr` (dotted quad)?
    pub fn is_addr(bytes: &[u8], addr: Ipv4Addr) -> bool {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            == Some(addr)
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
        from: Ipv4Addr,
        to: &[u8],
        edits: &mut Edits,
    ) {
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
            let host_end = v
                .get(host_start..uri_end)
                .unwrap_or_default()
                .iter()
                .position(|&b| b":;?/#".contains(&b))
                .map_or(uri_end, |o| host_start + o);
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
        from: Ipv4Addr,
        to: &[u8],
        edits: &mut Edits,
    ) {
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
        from: Ipv4Addr,
        to: &[u8],
        edits: &mut Edits,
    ) {
        let v = buf.get(value.clone()).unwrap_or_default();
        if let Some(h) = via_hosts(v).into_iter().next() {
            if v.get(h.clone()).is_some_and(|b| is_addr(b, from)) {
                edits.replace(value.start + h.start..value.start + h.end, to.to_vec());
            }
        }
    }
}

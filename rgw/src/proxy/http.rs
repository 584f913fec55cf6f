//! The host an HTTP/1.x request is for, read from its request head
//! (sans-IO).
//!
//! Supported (RFC 9112):
//! - Request line `METHOD SP request-target SP HTTP/1.x` (§3), after any
//!   number of empty lines (§2.2). Lines end in CRLF or a bare LF (§2.2).
//! - The Host header (§3.2), field name case-insensitive, value trimmed of
//!   spaces and tabs, port stripped; the name must be an LDH host name and is
//!   returned lower-cased without a trailing dot ([`host_name`]).
//! - Absolute-form targets `GET http://host[:port]/path HTTP/1.1` (§3.2.2):
//!   the target's authority wins over any Host header, which may then be
//!   missing. A CONNECT's authority-form target (§3.2.3) is used the same way.
//! - Nothing is decided before the blank line that ends the head, so a second
//!   Host header further down is always seen. The head, blank line included,
//!   must fit in [`MAX_PEEK`] (16 KiB). Bytes after the head (a body, a
//!   pipelined request) are ignored here and forwarded by the shell.
//!
//! Answers:
//! - `Found(name)`.
//! - `Absent`: HTTP/1.0 without Host, or an empty Host header (§3.2: a
//!   request whose target has no authority).
//! - `Invalid`: HTTP/1.1 without Host, more than one Host (§3.2), a Host that
//!   is not a host name (IP literals included: the proxy routes names), a
//!   port that is not a number up to 65535, userinfo in an authority,
//!   whitespace before a field's colon (§5.1) or at the start of a line
//!   (obs-fold, §5.2), a bare CR or a NUL, a field name that is not a token,
//!   a version other than HTTP/1.x (HTTP/0.9, the HTTP/2 preface), a head
//!   over 16 KiB. Bytes that cannot start a request line (a TLS ClientHello,
//!   for one) are refused at once, without waiting for a line end.

use super::{host_name, Parse, MAX_PEEK};

/// Finds the host an HTTP/1.x request head at the start of `buf` is for. See
/// the module documentation. Never panics; once `buf` holds [`MAX_PEEK`]
/// bytes or more the answer is never [`Parse::Incomplete`].
pub fn host(buf: &[u8]) -> Parse<String> {
    let window = &buf[..buf.len().min(MAX_PEEK)];
    match parse_head(window) {
        Parse::Incomplete if buf.len() >= MAX_PEEK => {
            Parse::Invalid("request head larger than 16 KiB")
        }
        other => other,
    }
}

fn parse_head(buf: &[u8]) -> Parse<String> {
    let mut lines = Lines { buf, pos: 0 };

    let request_line = loop {
        match lines.next() {
            Line::Partial(rest) => {
                return match check_partial_request_line(rest) {
                    Ok(()) => Parse::Incomplete,
                    Err(why) => Parse::Invalid(why),
                };
            }
            Line::Bad(why) => return Parse::Invalid(why),
            Line::Full([]) => continue,
            Line::Full(line) => break line,
        }
    };
    let request = match parse_request_line(request_line) {
        Ok(r) => r,
        Err(why) => return Parse::Invalid(why),
    };

    let mut host: Option<&[u8]> = None;
    loop {
        match lines.next() {
            Line::Partial(rest) => {
                return match check_field_line(rest, false) {
                    Ok(_) => Parse::Incomplete,
                    Err(why) => Parse::Invalid(why),
                };
            }
            Line::Bad(why) => return Parse::Invalid(why),
            Line::Full([]) => break,
            Line::Full(line) => match check_field_line(line, true) {
                Err(why) => return Parse::Invalid(why),
                Ok(Some((name, value))) if name.eq_ignore_ascii_case(b"host") => {
                    if host.is_some() {
                        return Parse::Invalid("more than one Host header");
                    }
                    host = Some(value);
                }
                Ok(_) => {}
            },
        }
    }

    let authority = match (request.target_authority, host) {
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) if request.host_required => {
            return Parse::Invalid("HTTP/1.1 request without Host");
        }
        (None, None) => return Parse::Absent,
    };
    match authority_host(authority) {
        Ok(Some(name)) => Parse::Found(name),
        Ok(None) if request.target_authority.is_some() => {
            Parse::Invalid("request target without a host")
        }
        Ok(None) => Parse::Absent,
        Err(why) => Parse::Invalid(why),
    }
}

enum Line<'a> {
    /// A complete line without its CRLF or LF.
    Full(&'a [u8]),
    /// The bytes after the last line end (possibly none).
    Partial(&'a [u8]),
    Bad(&'static str),
}

struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Line<'a> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            // A CR at the very end may still be followed by its LF.
            let body = rest.strip_suffix(b"\r").unwrap_or(rest);
            return match check_line_bytes(body) {
                Ok(()) => Line::Partial(rest),
                Err(why) => Line::Bad(why),
            };
        };
        self.pos += nl + 1;
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match check_line_bytes(line) {
            Ok(()) => Line::Full(line),
            Err(why) => Line::Bad(why),
        }
    }
}

fn check_line_bytes(line: &[u8]) -> Result<(), &'static str> {
    for &b in line {
        match b {
            b'\r' => return Err("bare CR in request head"),
            0 => return Err("NUL in request head"),
            _ => {}
        }
    }
    Ok(())
}

/// token characters (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Refuses, before its line end arrives, a request line whose method is not
/// a token (TLS, binary junk).
fn check_partial_request_line(rest: &[u8]) -> Result<(), &'static str> {
    let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
    let method_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    if rest[..method_end].iter().all(|&b| is_tchar(b)) {
        Ok(())
    } else {
        Err("not an HTTP request (bad method)")
    }
}

struct RequestLine<'a> {
    /// The authority of an absolute-form or authority-form target.
    target_authority: Option<&'a [u8]>,
    /// HTTP/1.1 and later must send Host.
    host_required: bool,
}

fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, &'static str> {
    const SHAPE: &str = "request line is not METHOD TARGET HTTP-VERSION";
    let first = line.iter().position(|&b| b == b' ').ok_or(SHAPE)?;
    let last = line.iter().rposition(|&b| b == b' ').ok_or(SHAPE)?;
    if first == last {
        return Err(SHAPE);
    }
    let method = &line[..first];
    let target = &line[first + 1..last];
    let version = &line[last + 1..];
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err("not an HTTP request (bad method)");
    }
    let minor = match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => *minor,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err("HTTP version other than 1.x");
        }
        _ => return Err("bad HTTP version in request line"),
    };
    if target.is_empty() || target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err("bad request target");
    }
    let target_authority = if target[0] == b'/' || target == b"*" {
        None
    } else if method == b"CONNECT" {
        Some(target)
    } else {
        Some(absolute_form_authority(target)?)
    };
    Ok(RequestLine {
        target_authority,
        host_required: minor != b'0',
    })
}

/// The authority of `scheme://authority[/path][?query]` (RFC 3986 §3).
fn absolute_form_authority(target: &[u8]) -> Result<&[u8], &'static str> {
    const BAD: &str = "bad request target";
    let colon = target.iter().position(|&b| b == b':').ok_or(BAD)?;
    let scheme = &target[..colon];
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let rest = target[colon + 1..].strip_prefix(b"//").ok_or(BAD)?;
    if !scheme_ok {
        return Err(BAD);
    }
    let end = rest
        .iter()
        .position(|&b| b"/?#".contains(&b))
        .unwrap_or(rest.len());
    Ok(&rest[..end])
}

/// A header field's name and value.
type Field<'a> = (&'a [u8], &'a [u8]);

/// Checks a header field line (a partial one if `!complete`) and returns
/// its name and its value without surrounding spaces and tabs when complete.
fn check_field_line(line: &[u8], complete: bool) -> Result<Option<Field<'_>>, &'static str> {
    if line.first().is_some_and(|&b| is_ows(b)) {
        return Err("line starting with whitespace in header (obs-fold)");
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        if complete {
            return Err("header line without a colon");
        }
        // A partial line may end in the CR of its CRLF.
        let name = line.strip_suffix(b"\r").unwrap_or(line);
        return if name.iter().all(|&b| is_tchar(b)) {
            Ok(None)
        } else {
            Err("bad header field name")
        };
    };
    let name = &line[..colon];
    if name.is_empty() {
        return Err("empty header field name");
    }
    if name.last().is_some_and(|&b| is_ows(b)) {
        return Err("whitespace before the colon of a header field");
    }
    if !name.iter().all(|&b| is_tchar(b)) {
        return Err("bad header field name");
    }
    if !complete {
        return Ok(None);
    }
    let value = &line[colon + 1..];
    let start = value
        .iter()
        .position(|&b| !is_ows(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| !is_ows(b))
        .map_or(start, |p| p + 1);
    Ok(Some((name, &value[start..end])))
}

/// The host name in `host[:port]`; `Ok(None)` when empty.
fn authority_host(authority: &[u8]) -> Result<Option<String>, &'static str> {
    if authority.is_empty() {
        return Ok(None);
    }
    if authority.contains(&b'@') {
        return Err("userinfo in the request's authority");
    }
    if authority[0] == b'[' {
        return Err("Host is an IP literal, not a host name");
    }
    let (host, port) = match authority.iter().position(|&b| b == b':') {
        Some(c) => (&authority[..c], &authority[c + 1..]),
        None => (authority, &b""[..]),
    };
    if port.len() > 5
        || !port.iter().all(u8::is_ascii_digit)
        || port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) > 65535
    {
        return Err("bad port in Host");
    }
    host_name(host).map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::vectors::{
        hex, CURL_ABSOLUTE, CURL_GET, CURL_HEADERS, CURL_HELLO, CURL_HTTP10_NO_HOST, CURL_POST,
    };
    use super::*;

    const NAME: &str = "www.hosta.gwa.demo";

    fn found(name: &str) -> Parse<String> {
        Parse::Found(name.to_string())
    }

    /// Where the head ends: after the first empty line that follows a
    /// non-empty one.
    fn head_end(bytes: &[u8]) -> usize {
        let mut start = 0;
        let mut seen_line = false;
        for (i, _) in bytes.iter().enumerate().filter(|(_, &b)| b == b'\n') {
            let line = &bytes[start..i];
            let empty = line.is_empty() || line == b"\r";
            if empty && seen_line {
                return i + 1;
            }
            seen_line |= !empty;
            start = i + 1;
        }
        panic!("test head has no end");
    }

    /// Every prefix shorter than the head is Incomplete; from the blank line
    /// on the answer is `want`.
    fn check(bytes: &[u8], want: Parse<String>) {
        let end = head_end(bytes);
        for n in 0..end {
            assert_eq!(host(&bytes[..n]), Parse::Incomplete, "prefix of {n} bytes");
        }
        for n in end..=bytes.len() {
            assert_eq!(
                host(&bytes[..n]),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut more = bytes.to_vec();
        more.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: other.example\r\n\r\n");
        assert_eq!(host(&more), want);
    }

    fn invalid(bytes: &[u8]) {
        assert!(
            matches!(host(bytes), Parse::Invalid(_)),
            "{:?} gave {:?}",
            String::from_utf8_lossy(bytes),
            host(bytes)
        );
    }

    #[test]
    fn captured_from_curl() {
        check(CURL_GET, found(NAME));
        check(CURL_HEADERS, found(NAME)); // upper case, port 8080
        check(CURL_ABSOLUTE, found(NAME));
        check(CURL_HTTP10_NO_HOST, Parse::Absent);
        check(CURL_POST, found(NAME));
    }

    #[test]
    fn variants() {
        let cases: &[(&[u8], Parse<String>)] = &[
            (b"GET / HTTP/1.1\r\nhost: a.b\r\n\r\n", found("a.b")),
            (b"GET / HTTP/1.1\r\nHOST:a.b\r\n\r\n", found("a.b")),
            (b"GET / HTTP/1.1\r\nHost: \t A.B. \t\r\n\r\n", found("a.b")),
            (b"GET / HTTP/1.1\r\nHost: a.b:\r\n\r\n", found("a.b")),
            (b"GET / HTTP/1.1\r\nHost: a.b:65535\r\n\r\n", found("a.b")),
            (b"GET / HTTP/1.1\nHost: a.b\n\n", found("a.b")),
            (b"GET / HTTP/1.1\r\nHost: a.b\n\r\n", found("a.b")),
            (b"\r\n\r\nGET / HTTP/1.1\r\nHost: a.b\r\n\r\n", found("a.b")),
            (b"GET / HTTP/1.0\r\nHost: a.b\r\n\r\n", found("a.b")),
            (b"GET / HTTP/1.9\r\nHost: a.b\r\n\r\n", found("a.b")),
            (b"OPTIONS * HTTP/1.1\r\nHost: a.b\r\n\r\n", found("a.b")),
            (
                b"GET / HTTP/1.1\r\nX-Host: c.d\r\nHost: a.b\r\nHostname: e.f\r\n\r\n",
                found("a.b"),
            ),
            (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", Parse::Absent),
            (b"GET / HTTP/1.1\r\nHost:   \r\n\r\n", Parse::Absent),
            (b"GET / HTTP/1.0\r\n\r\n", Parse::Absent),
            (
                b"GET / HTTP/1.1\r\nX: \xc3\xa9\x01\r\nHost: a.b\r\n\r\n",
                found("a.b"),
            ),
            // Absolute-form: the target's authority wins, Host is optional.
            (
                b"GET http://WWW.HostA.gwa.demo:8080/x?y HTTP/1.1\r\nHost: c.d\r\n\r\n",
                found(NAME),
            ),
            (b"GET https://a.b HTTP/1.1\r\n\r\n", found("a.b")),
            (b"GET http://a.b?q HTTP/1.1\r\n\r\n", found("a.b")),
            (b"GET HTTP://a.b#f HTTP/1.0\r\n\r\n", found("a.b")),
            (
                b"CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n\r\n",
                found("a.b"),
            ),
        ];
        for (bytes, want) in cases {
            check(bytes, want.clone());
        }
    }

    #[test]
    fn invalid_heads() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.b\r\nHost: a.b\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a.b\r\nhost: c.d\r\n\r\n",
            b"GET http://a.b/ HTTP/1.1\r\nHost: a.b\r\nHost: c.d\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a.b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.b\r\n  continued\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: a.b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.b:http\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.b:65536\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.b:000080\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.b:1:2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: u@a.b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a_b.c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.b\rX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.b\r\nX: \0\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad{Name}: x\r\n\r\n",
            b"GET http://u:p@a.b/ HTTP/1.1\r\n\r\n",
            b"GET http:///x HTTP/1.1\r\nHost: a.b\r\n\r\n",
            b"GET http:/a.b/ HTTP/1.1\r\n\r\n",
            b"GET 1ttp://a.b/ HTTP/1.1\r\n\r\n",
            b"GET a.b HTTP/1.1\r\nHost: a.b\r\n\r\n",
            b"GET / a HTTP/1.1\r\nHost: a.b\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: a.b\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a.b\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / http/1.1\r\nHost: a.b\r\n\r\n",
            b"GET / HTTP/1.10\r\nHost: a.b\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a.b\r\n\r\n",
        ] {
            invalid(bytes);
        }
    }

    #[test]
    fn refused_before_the_line_end() {
        // A TLS ClientHello sent to the HTTP port: refused on its first byte.
        let hello = hex(CURL_HELLO);
        invalid(&hello[..1]);
        invalid(b"G\x16");
        invalid(b"GET / HTTP/1.1\r\nHost: a.b\r\n X");
        invalid(b"GET / HTTP/1.1\r\nHo st");
        invalid(b"GET / HTTP/1.1\rX");
        assert_eq!(host(b"GET / HTTP/1.1\r\nHost: a.b\r"), Parse::Incomplete);
        assert_eq!(host(b"GET / HTTP/1.1\r\nHost\r"), Parse::Incomplete);
        assert_eq!(host(b"GET / HTTP/1.1\r"), Parse::Incomplete);
        assert_eq!(host(b"GET\r"), Parse::Incomplete);
    }

    #[test]
    fn size_limit() {
        let start = b"GET / HTTP/1.1\r\nHost: a.b\r\n";
        let filler_line = |n: usize| {
            let mut l = b"X-Fill: ".to_vec();
            l.resize(n - 2, b'x');
            l.extend_from_slice(b"\r\n");
            l
        };
        // A head of exactly 16 KiB, blank line included, is accepted.
        let mut head = start.to_vec();
        head.extend_from_slice(&filler_line(MAX_PEEK - start.len() - 2));
        head.extend_from_slice(b"\r\n");
        assert_eq!(head.len(), MAX_PEEK);
        assert_eq!(host(&head), found("a.b"));
        assert_eq!(host(&head[..MAX_PEEK - 1]), Parse::Incomplete);
        // One byte more is refused, whatever follows.
        let mut head = start.to_vec();
        head.extend_from_slice(&filler_line(MAX_PEEK - start.len() - 1));
        head.extend_from_slice(b"\r\n");
        assert_eq!(head.len(), MAX_PEEK + 1);
        assert_eq!(host(&head[..MAX_PEEK - 1]), Parse::Incomplete);
        invalid(&head[..MAX_PEEK]);
        invalid(&head);
        // Never Incomplete at MAX_PEEK bytes, whatever the bytes.
        invalid(&vec![b'a'; MAX_PEEK]);
        invalid(&b"\r\n".repeat(MAX_PEEK));
    }

    /// xorshift64*: deterministic pseudo-random bytes without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x5eed_0000_1111_2222);
        let alphabet = b"GET HTTP/1.0.1\r\n:host [] @ / 9 a.b \t\x00\xff";
        for i in 0..30_000 {
            let n = (rng.next() % 300) as usize;
            let b: Vec<u8> = if i % 2 == 0 {
                (0..n).map(|_| rng.next() as u8).collect()
            } else {
                (0..n)
                    .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
                    .collect()
            };
            let _ = host(&b);
        }
    }

    #[test]
    fn mutated_heads_never_panic() {
        let mut rng = Rng(7);
        for v in [
            CURL_GET,
            CURL_HEADERS,
            CURL_ABSOLUTE,
            CURL_HTTP10_NO_HOST,
            CURL_POST,
        ] {
            for i in 0..v.len() {
                for x in [0u8, b'\r', b'\n', b' ', b':', b'[', b'@', b'/', 0xff] {
                    let mut b = v.to_vec();
                    b[i] = x;
                    let _ = host(&b);
                }
            }
            for _ in 0..3_000 {
                let mut b = v.to_vec();
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % b.len();
                    b[i] = rng.next() as u8;
                }
                let cut = (rng.next() as usize) % (b.len() + 1);
                let _ = host(&b[..cut]);
            }
        }
    }
}

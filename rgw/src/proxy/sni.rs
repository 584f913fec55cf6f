//! The server name a TLS client asks for, read from its ClientHello without
//! terminating TLS (sans-IO).
//!
//! Supported:
//! - TLS 1.0 to 1.3 ClientHellos (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) in
//!   plaintext handshake records (RFC 8446 §5.1, RFC 5246 §6.2.1): any
//!   record version 3.x, record fragments of 1 to 2^14 bytes.
//! - A ClientHello fragmented over several consecutive handshake records, as
//!   long as all those records (headers included) fit in the first
//!   [`MAX_PEEK`] (16 KiB) bytes of the connection. Bytes after the
//!   ClientHello (a ChangeCipherSpec, 0-RTT data) are ignored here and
//!   forwarded by the shell.
//! - The server_name extension (RFC 6066 §3) with exactly one host_name
//!   entry; the name must be an LDH host name ([`host_name`]): it is returned
//!   lower-cased and without a trailing dot.
//!
//! Refused ([`Parse::Invalid`]): anything that is not a handshake record
//! (including an SSL 2.0 compatible ClientHello, plain HTTP, an alert), a
//! first handshake message other than ClientHello, a record of another type
//! in the middle of the ClientHello, empty or oversized records, lengths that
//! do not add up, a server_name extension that appears twice or whose list is
//! empty, holds an unknown name type or more than one host_name, and names
//! that are not LDH host names (IP literals, underscores, IDNs not in
//! A-label form).
//!
//! Not handled: DTLS, QUIC (the name is inside encrypted Initial packets),
//! Encrypted Client Hello (ECH: the outer, public name is what is found).

use super::{host_name, Parse, MAX_PEEK};

/// TLS record content type `handshake`.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello`.
const CLIENT_HELLO: u8 = 1;
/// Extension type `server_name`.
const EXT_SERVER_NAME: u16 = 0;
/// ServerName name type `host_name`.
const NAME_TYPE_HOST: u8 = 0;
/// Record header: type (1), legacy_record_version (2), length (2).
const RECORD_HEADER: usize = 5;
/// Largest plaintext record fragment, 2^14 (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 1 << 14;
/// Handshake header: msg_type (1), length (3).
const HANDSHAKE_HEADER: usize = 4;

/// Finds the server name in a ClientHello at the start of `buf` (the first
/// bytes a TLS client sent). See the module documentation for what is
/// accepted. Never panics; once `buf` holds [`MAX_PEEK`] bytes or more the
/// answer is never [`Parse::Incomplete`].
pub fn server_name(buf: &[u8]) -> Parse<String> {
    let window = &buf[..buf.len().min(MAX_PEEK)];
    match reassemble(window) {
        Step::Incomplete if buf.len() >= MAX_PEEK => {
            Parse::Invalid("ClientHello does not fit in the first 16 KiB")
        }
        Step::Incomplete => Parse::Incomplete,
        Step::Invalid(why) => Parse::Invalid(why),
        Step::Done(body) => match parse_client_hello(&body) {
            Ok(Some(name)) => Parse::Found(name),
            Ok(None) => Parse::Absent,
            Err(why) => Parse::Invalid(why),
        },
    }
}

enum Step<'a> {
    Incomplete,
    Invalid(&'static str),
    /// The ClientHello body (after the 4-byte handshake header).
    Done(std::borrow::Cow<'a, [u8]>),
}

/// Collects the handshake bytes of the first handshake message from
/// consecutive handshake records until the whole ClientHello is there.
fn reassemble(buf: &[u8]) -> Step<'_> {
    // Fast path, and early rejection of bytes that are not TLS at all: look
    // at the first record header, however little of it has arrived.
    if let Err(why) = check_record_header(buf) {
        return Step::Invalid(why);
    }
    if buf.len() < RECORD_HEADER {
        return Step::Incomplete;
    }
    let first_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    let first = &buf[RECORD_HEADER..buf.len().min(RECORD_HEADER + first_len)];
    if let Err(why) = check_handshake_header(first) {
        return Step::Invalid(why);
    }
    if first.len() >= HANDSHAKE_HEADER {
        let total = HANDSHAKE_HEADER + u24(&first[1..4]);
        if first.len() >= total {
            return Step::Done(first[HANDSHAKE_HEADER..total].into());
        }
    }

    // General case: the ClientHello spans several records.
    let mut msg: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        if let Err(why) = check_record_header(rest) {
            return Step::Invalid(why);
        }
        if rest.len() < RECORD_HEADER {
            return Step::Incomplete;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        let avail = (rest.len() - RECORD_HEADER).min(len);
        msg.extend_from_slice(&rest[RECORD_HEADER..RECORD_HEADER + avail]);
        if let Err(why) = check_handshake_header(&msg) {
            return Step::Invalid(why);
        }
        if msg.len() >= HANDSHAKE_HEADER {
            let total = HANDSHAKE_HEADER + u24(&msg[1..4]);
            if msg.len() >= total {
                msg.truncate(total);
                msg.drain(..HANDSHAKE_HEADER);
                return Step::Done(msg.into());
            }
        }
        if avail < len {
            return Step::Incomplete;
        }
        pos += RECORD_HEADER + len;
    }
}

/// Checks as much of a record header as `rest` holds.
fn check_record_header(rest: &[u8]) -> Result<(), &'static str> {
    if let Some(&t) = rest.first() {
        if t != CONTENT_HANDSHAKE {
            return Err(
                if t & 0x80 != 0 && rest.get(2).is_none_or(|&m| m == CLIENT_HELLO) {
                    "SSL 2.0 ClientHello (not supported) or not TLS"
                } else if t.is_ascii_alphabetic() {
                    "not TLS (looks like plain text, e.g. HTTP)"
                } else {
                    "not a TLS handshake record"
                },
            );
        }
    }
    if let Some(&major) = rest.get(1) {
        if major != 3 {
            return Err("TLS record version is not 3.x");
        }
    }
    if rest.len() >= RECORD_HEADER {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Err("empty TLS handshake record");
        }
        if len > MAX_FRAGMENT {
            return Err("TLS record longer than 2^14 bytes");
        }
    }
    Ok(())
}

/// Checks as much of the handshake header as `msg` holds.
fn check_handshake_header(msg: &[u8]) -> Result<(), &'static str> {
    if let Some(&t) = msg.first() {
        if t != CLIENT_HELLO {
            return Err("first handshake message is not a ClientHello");
        }
    }
    if msg.len() >= HANDSHAKE_HEADER {
        // With at least one record header in front, the whole ClientHello
        // must fit in the first MAX_PEEK bytes.
        if RECORD_HEADER + HANDSHAKE_HEADER + u24(&msg[1..4]) > MAX_PEEK {
            return Err("ClientHello larger than 16 KiB");
        }
    }
    Ok(())
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// Parses a complete ClientHello body; `Ok(None)` when it has no
/// server_name extension.
fn parse_client_hello(body: &[u8]) -> Result<Option<String>, &'static str> {
    const SHORT: &str = "ClientHello shorter than its fields";
    let mut r = Reader(body);
    let version = r.take(2).ok_or(SHORT)?;
    if version[0] != 3 {
        return Err("ClientHello version is not 3.x");
    }
    r.take(32).ok_or(SHORT)?; // random
    let session_id = r.vec8().ok_or(SHORT)?;
    if session_id.len() > 32 {
        return Err("ClientHello session id longer than 32 bytes");
    }
    let suites = r.vec16().ok_or(SHORT)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("bad cipher_suites length in ClientHello");
    }
    let compression = r.vec8().ok_or(SHORT)?;
    if compression.is_empty() {
        return Err("empty compression_methods in ClientHello");
    }
    if r.0.is_empty() {
        // No extensions at all (allowed before TLS 1.3).
        return Ok(None);
    }
    let mut exts = Reader(r.vec16().ok_or(SHORT)?);
    if !r.0.is_empty() {
        return Err("bytes after the extensions in ClientHello");
    }
    let mut name = None;
    while !exts.0.is_empty() {
        let ext_type = exts
            .u16()
            .ok_or("truncated extension header in ClientHello")?;
        let data = exts
            .vec16()
            .ok_or("extension longer than the extensions block")?;
        if ext_type == EXT_SERVER_NAME {
            if name.is_some() {
                return Err("two server_name extensions in ClientHello");
            }
            name = Some(parse_server_name(data)?);
        }
    }
    Ok(name)
}

/// Parses the extension_data of server_name (RFC 6066 §3).
fn parse_server_name(data: &[u8]) -> Result<String, &'static str> {
    let mut ext = Reader(data);
    let mut list = Reader(ext.vec16().ok_or("truncated server_name extension")?);
    if !ext.0.is_empty() {
        return Err("bytes after the server_name list");
    }
    if list.0.is_empty() {
        return Err("empty server_name list");
    }
    let mut name = None;
    while !list.0.is_empty() {
        let name_type = list.u8().ok_or("truncated server_name entry")?;
        if name_type != NAME_TYPE_HOST {
            return Err("unknown server_name type");
        }
        let host = list.vec16().ok_or("truncated server_name host_name")?;
        if name.is_some() {
            return Err("more than one host_name in server_name");
        }
        name = Some(host_name(host).map_err(|_| "server_name is not an LDH host name")?);
    }
    name.ok_or("empty server_name list")
}

/// A cursor over a byte slice; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::super::vectors::{
        hex, CURL_GET, CURL_HELLO, OPENSSL_FRAGMENTED, OPENSSL_HELLO, OPENSSL_NO_SNI,
    };
    use super::*;

    const NAME: &str = "www.hosta.gwa.demo";

    fn found(name: &str) -> Parse<String> {
        Parse::Found(name.to_string())
    }

    /// Every proper prefix of a valid ClientHello is Incomplete, the whole
    /// thing gives `want`, and so does the whole thing with more bytes after it.
    fn check_vector(bytes: &[u8], want: Parse<String>) {
        for n in 0..bytes.len() {
            assert_eq!(
                server_name(&bytes[..n]),
                Parse::Incomplete,
                "prefix of {n} bytes"
            );
        }
        assert_eq!(server_name(bytes), want);
        let mut more = bytes.to_vec();
        more.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]); // ChangeCipherSpec
        assert_eq!(server_name(&more), want);
    }

    /// Splits the handshake bytes of a single-record ClientHello into records
    /// of at most `size` bytes.
    fn refragment(bytes: &[u8], size: usize) -> Vec<u8> {
        let len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        let msg = &bytes[RECORD_HEADER..RECORD_HEADER + len];
        let mut out = Vec::new();
        for chunk in msg.chunks(size) {
            out.extend_from_slice(&[bytes[0], bytes[1], bytes[2]]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    /// A minimal ClientHello with these extensions, in one record.
    fn hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut ext_bytes = Vec::new();
        for (t, d) in exts {
            ext_bytes.extend_from_slice(&t.to_be_bytes());
            ext_bytes.extend_from_slice(&(d.len() as u16).to_be_bytes());
            ext_bytes.extend_from_slice(d);
        }
        body.extend_from_slice(&(ext_bytes.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext_bytes);
        wrap(&body)
    }

    fn wrap(body: &[u8]) -> Vec<u8> {
        let mut msg = vec![CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(body);
        let mut rec = vec![CONTENT_HANDSHAKE, 3, 1];
        rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        rec.extend_from_slice(&msg);
        rec
    }

    /// server_name extension data with these (type, name) entries.
    fn sni_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (t, n) in entries {
            list.push(*t);
            list.extend_from_slice(&(n.len() as u16).to_be_bytes());
            list.extend_from_slice(n);
        }
        let mut d = (list.len() as u16).to_be_bytes().to_vec();
        d.extend_from_slice(&list);
        d
    }

    #[test]
    fn openssl_s_client() {
        check_vector(&hex(OPENSSL_HELLO), found(NAME));
    }

    #[test]
    fn curl() {
        check_vector(&hex(CURL_HELLO), found(NAME));
    }

    #[test]
    fn no_server_name() {
        check_vector(&hex(OPENSSL_NO_SNI), Parse::Absent);
    }

    #[test]
    fn fragmented_by_openssl() {
        let bytes = hex(OPENSSL_FRAGMENTED);
        // Really three records.
        assert_eq!(&bytes[..5], &[22, 3, 1, 2, 0]);
        assert_eq!(&bytes[517..522], &[22, 3, 1, 2, 0]);
        check_vector(&bytes, found(NAME));
    }

    #[test]
    fn refragmented_down_to_one_byte_records() {
        for v in [OPENSSL_HELLO, CURL_HELLO] {
            let bytes = hex(v);
            for size in [1, 2, 3, 4, 5, 7, 40, 100, 300] {
                check_vector(&refragment(&bytes, size), found(NAME));
            }
        }
    }

    #[test]
    fn hand_built() {
        assert_eq!(
            server_name(&hello(&[(0, sni_ext(&[(0, b"WWW.HostA.gwa.demo.")]))])),
            found(NAME)
        );
        assert_eq!(server_name(&hello(&[(0x2b, vec![2, 3, 4])])), Parse::Absent);
        assert_eq!(server_name(&hello(&[])), Parse::Absent);
        // No extensions block at all (TLS 1.2 and older may omit it).
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0, 0x2f, 1, 0]);
        assert_eq!(server_name(&wrap(&body)), Parse::Absent);
        // server_name after other extensions, including an empty one.
        let exts = [
            (10, vec![0, 2, 0, 29]),
            (23, vec![]),
            (0, sni_ext(&[(0, b"a.b")])),
        ];
        assert_eq!(server_name(&hello(&exts)), found("a.b"));
    }

    #[test]
    fn invalid() {
        let ok = hex(OPENSSL_HELLO);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (CURL_GET.to_vec(), "plain HTTP"),
            (vec![0x80, 0x2e, 0x01, 0x00, 0x02], "SSL 2.0 hello"),
            (vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28], "alert"),
            (vec![0x17], "application data"),
            (vec![0x16, 0x02], "record version 2.x"),
            (vec![0x16, 0x03, 0x01, 0x00, 0x00], "empty record"),
            (vec![0x16, 0x03, 0x01, 0x40, 0x01], "record of 2^14 + 1"),
            (vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x02], "ServerHello"),
            (
                vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x40, 0x00],
                "16 KiB hello",
            ),
            (hello(&[(0, sni_ext(&[(0, b"a_b.example")]))]), "underscore"),
            (hello(&[(0, sni_ext(&[(0, b"192.0.2.1")]))]), "IP literal"),
            (hello(&[(0, sni_ext(&[(0, b"")]))]), "empty name"),
            (hello(&[(0, sni_ext(&[]))]), "empty list"),
            (hello(&[(0, sni_ext(&[(1, b"a.b")]))]), "unknown name type"),
            (
                hello(&[(0, sni_ext(&[(0, b"a.b"), (0, b"c.d")]))]),
                "two host_names",
            ),
            (
                hello(&[(0, sni_ext(&[(0, b"a.b")])), (0, sni_ext(&[(0, b"c.d")]))]),
                "two server_name extensions",
            ),
            (
                hello(&[(0, vec![0, 5, 0, 0, 1, b'a'])]),
                "list longer than extension",
            ),
            (hello(&[(0, vec![0])]), "truncated extension"),
        ];
        for (bytes, what) in cases {
            assert!(matches!(server_name(&bytes), Parse::Invalid(_)), "{what}");
        }

        // Lengths that do not add up inside a complete message.
        let mut bad = ok.clone();
        bad[5 + 4 + 2 + 32] = 33; // session id length
        assert!(matches!(server_name(&bad), Parse::Invalid(_)));
        let mut bad = ok.clone();
        let n = bad.len();
        bad[8] -= 1; // handshake length one short: extensions overrun
        assert!(matches!(server_name(&bad[..n - 1]), Parse::Invalid(_)));

        // A record of another type between two fragments of the ClientHello.
        let mut bad = refragment(&ok, 100);
        bad.splice(105..105, [0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00]);
        assert!(matches!(server_name(&bad), Parse::Invalid(_)));
    }

    #[test]
    fn limits() {
        // At MAX_PEEK bytes the answer is never Incomplete.
        // A ClientHello of exactly 16 KiB with its record and handshake headers.
        let mut big = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xf7];
        big.resize(MAX_PEEK + 100, 0);
        for n in [MAX_PEEK - 1, MAX_PEEK, MAX_PEEK + 100] {
            let r = server_name(&big[..n]);
            assert_eq!(r != Parse::Incomplete, n >= MAX_PEEK, "{n}: {r:?}");
        }
        // A small ClientHello in tiny records whose headers push it past 16 KiB.
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0, 0x2f, 1, 0]);
        body.extend_from_slice(&[0, 8, 0xff, 0x01, 0, 4, 0, 0, 0, 0]);
        let mut padded = body.clone();
        padded.extend_from_slice(&[0; 3000]);
        let ext_len = (padded.len() - body.len() + 8) as u16;
        padded[41..43].copy_from_slice(&ext_len.to_be_bytes());
        padded[45..47].copy_from_slice(&(ext_len - 4).to_be_bytes());
        let one_record = wrap(&padded);
        assert_eq!(server_name(&one_record), Parse::Absent);
        let tiny = refragment(&one_record, 1);
        assert!(tiny.len() > MAX_PEEK);
        assert!(matches!(server_name(&tiny), Parse::Invalid(_)));
        assert_eq!(server_name(&tiny[..MAX_PEEK - 1]), Parse::Incomplete);
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
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        for i in 0..20_000 {
            let n = (rng.next() % 600) as usize;
            let mut b = rng.bytes(n);
            // Half the time, a plausible record header so the parser goes deeper.
            if i % 2 == 0 && b.len() >= 6 {
                b[..3].copy_from_slice(&[22, 3, 1]);
                b[5] = 1;
            }
            let _ = server_name(&b);
        }
    }

    #[test]
    fn mutated_vectors_never_panic() {
        let mut rng = Rng(42);
        for v in [
            OPENSSL_HELLO,
            CURL_HELLO,
            OPENSSL_NO_SNI,
            OPENSSL_FRAGMENTED,
        ] {
            let orig = hex(v);
            // Every single byte set to a few values, at every position.
            for i in 0..orig.len() {
                for x in [0x00, 0x01, 0x7f, 0x80, 0xff, orig[i] ^ 1] {
                    let mut b = orig.clone();
                    b[i] = x;
                    let _ = server_name(&b);
                }
            }
            // Random multi-byte mutations and truncations.
            for _ in 0..5_000 {
                let mut b = orig.clone();
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % b.len();
                    b[i] = rng.next() as u8;
                }
                let cut = (rng.next() as usize) % (b.len() + 1);
                let _ = server_name(&b[..cut]);
            }
        }
    }
}

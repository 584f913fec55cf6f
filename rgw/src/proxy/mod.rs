//! The built-in web proxy: `www.<host>.<zone>` resolves to the service
//! address, where this proxy routes plain HTTP by its Host header and TLS by
//! the ClientHello's server_name (SNI) to the private host's web server. TLS
//! is not terminated: the proxy reads the first bytes of a connection, picks
//! a backend by name, forwards those bytes unchanged and then splices both
//! directions.
//!
//! - [`sni`] and [`http`] are sans-IO parsers over the bytes read so far. They
//!   never panic, never read past [`MAX_PEEK`] bytes, and answer
//!   [`Parse::Incomplete`] until they can decide.
//! - [`server`] is the tokio shell: accept, read with a deadline, route,
//!   connect, splice.
//!
//! This module does not depend on the rest of the crate: the name → backend
//! mapping comes in through the [`Router`] trait.

pub mod http;
pub mod server;
pub mod sni;

#[cfg(test)]
mod vectors;

pub use server::{serve, serve_with, Limits, Mode, ProxyStats, Router};

/// The most bytes the proxy reads from a client before it must know the
/// name: the HTTP request head (including its blank line) or the TLS records
/// carrying the whole ClientHello must fit in the first 16 KiB. Both parsers
/// answer something other than [`Parse::Incomplete`] once they have seen this
/// many bytes, so a reader that stops at `MAX_PEEK` always gets a decision.
pub const MAX_PEEK: usize = 16 * 1024;

/// What a parser made of the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    /// Not enough bytes to decide yet; read more and ask again.
    Incomplete,
    /// The bytes are not a valid request of this kind (or exceed the limits);
    /// the reason is for logs and for the HTTP 400 body.
    Invalid(&'static str),
    /// The request names this host (lower-case, no trailing dot, LDH).
    Found(T),
    /// A valid request that names no host: a ClientHello without the
    /// server_name extension, an HTTP/1.0 request without Host, or an empty
    /// Host header.
    Absent,
}

/// Checks that `raw` is an LDH host name (RFC 952 / RFC 1123 §2.1: labels of
/// 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen,
/// at most 253 characters) and returns it lower-cased, with one trailing dot
/// removed. A name whose last label is all digits is refused: that is an IPv4
/// literal (or a numeric top-level domain, which does not exist), and the
/// proxy routes names, not addresses.
pub fn host_name(raw: &[u8]) -> Result<String, &'static str> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() {
        return Err("empty host name");
    }
    if name.len() > 253 {
        return Err("host name longer than 253 characters");
    }
    let mut last_all_digits = false;
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err("empty label in host name");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters in host name");
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("host name is not letters, digits, hyphens and dots");
        }
        if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return Err("label starts or ends with a hyphen in host name");
        }
        last_all_digits = label.iter().all(u8::is_ascii_digit);
    }
    if last_all_digits {
        return Err("an IP address, not a host name (last label all digits)");
    }
    // All bytes are ASCII here, so this is lossless.
    Ok(name
        .iter()
        .map(|&b| char::from(b.to_ascii_lowercase()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn ldh_names() {
        assert_eq!(
            host_name(b"www.hosta.gwa.demo").unwrap(),
            "www.hosta.gwa.demo"
        );
        assert_eq!(
            host_name(b"WWW.HostA.GWA.demo.").unwrap(),
            "www.hosta.gwa.demo"
        );
        assert_eq!(host_name(b"a-b.c1").unwrap(), "a-b.c1");
        assert_eq!(
            host_name(b"xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(host_name(b"localhost").unwrap(), "localhost");
        assert_eq!(host_name(b"1.example").unwrap(), "1.example");
        let label63 = "a".repeat(63);
        assert!(host_name(format!("{label63}.x").as_bytes()).is_ok());
        let long = format!("{l}.{l}.{l}.{m}", l = label63, m = "b".repeat(61));
        assert_eq!(long.len(), 253);
        assert!(host_name(long.as_bytes()).is_ok());
        assert!(host_name(format!("{long}.").as_bytes()).is_ok());
    }

    #[test]
    fn not_ldh_names() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a..b",
            b".a",
            b"a..",
            b"-a.b",
            b"a-.b",
            b"a_b.c",
            b"a b",
            b"a:80",
            b"127.0.0.1",
            b"10.1",
            b"[::1]",
            b"caf\xc3\xa9.example",
            b"a\0b",
            b"a%2eb",
        ] {
            assert!(
                host_name(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let label64 = "a".repeat(64);
        assert!(host_name(format!("{label64}.x").as_bytes()).is_err());
        let long = format!("{l}.{l}.{l}.{m}", l = "a".repeat(63), m = "b".repeat(62));
        assert_eq!(long.len(), 254);
        assert!(host_name(long.as_bytes()).is_err());
    }
}

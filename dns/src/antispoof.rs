//! Anti-spoofing for allocating queries over UDP (hardening issue, admission policy).
//!
//! A UDP query's source address can be forged, so a reservation made for it
//! may serve nobody (pool exhaustion by spoofed queries). Two answers make the
//! querier prove it receives packets at its address before anything is
//! reserved:
//!
//! * [`AntiSpoof::Tc`]: answer TC=1 with no records (RFC 1035 §4.2.1, RFC 7766
//!   §5); a real resolver retries over TCP, whose handshake proves the address,
//!   and only TCP queries allocate.
//! * [`AntiSpoof::Cname`]: answer a TTL 0 CNAME to `<token>.<alias zone>`; the
//!   resolver follows it (RFC 1034 §3.6.2) and only the query for the alias
//!   allocates. The token is unguessable (64-bit keyed MAC), names what to
//!   reserve, expires after a short lifetime and is bound to the network of
//!   the resolver it was sent to, so a spoofer — who never sees the answer —
//!   cannot produce the follow-up.
//!
//! Sans-IO: time comes in as a [`Duration`] since an epoch the caller fixes;
//! the key is random per process (a restart invalidates outstanding aliases,
//! which is harmless: they live seconds).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;

use crate::sfqdn::{L4Proto, ServiceKey};

/// How allocating queries over UDP on the public view are answered.
#[derive(Debug, Clone, Default)]
pub enum AntiSpoof {
    /// Allocate for any query (the seed's behaviour).
    #[default]
    Off,
    /// TC=1 over UDP; allocate only over TCP.
    Tc,
    /// A CNAME to a fresh alias; allocate only when the alias is queried.
    Cname(AliasZone),
}

/// The zone under which aliases live, their lifetime and the MAC key.
#[derive(Debug, Clone)]
pub struct AliasZone {
    /// Absolute name inside the gateway's zone, e.g. `alias.gwa.demo.`.
    pub name: Name,
    /// How long an alias may be followed after it was issued.
    pub lifetime: Duration,
    pub key: AliasKey,
}

/// The secret behind alias tokens: SipHash keyed with 128 random bits (std's
/// `RandomState`), a pseudo-random function with 64-bit output. Cloning keeps
/// the key, so a reload does not invalidate aliases in flight.
#[derive(Clone, Default)]
pub struct AliasKey(Arc<RandomState>);

impl std::fmt::Debug for AliasKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AliasKey(..)")
    }
}

/// What an alias stands for: the reservation the original query asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliasTarget {
    pub host: usize,
    pub service: Option<ServiceKey>,
}

/// Why an alias query does not allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AliasError {
    /// Not a token we issued (bad length, alphabet or MAC): a guess.
    Forged,
    /// Issued by us, but its lifetime is over.
    Expired,
    /// Issued by us to a resolver in another network (see [`resolver_net`]).
    ResolverMismatch,
}

/// Bytes of a token: host (2), proto (1, 0 = whole address), port (2),
/// expiry (4, in 100 ms units since the epoch), MAC bound to the resolver's
/// network (8), MAC without it (4, to tell a mismatch from a forgery).
const TOKEN_BYTES: usize = 21;
/// Base32 characters of a token label (5 bits each).
pub const TOKEN_CHARS: usize = (TOKEN_BYTES * 8).div_ceil(5);
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The network a follow-up must come from: the resolver's /24 (IPv4) or /48
/// (IPv6). Resolver farms send follow-ups from sibling addresses; a /24 keeps
/// them working while a token leaked elsewhere is not honoured as is.
pub fn resolver_net(resolver: Option<IpAddr>) -> [u8; 7] {
    match resolver {
        None => [0; 7],
        Some(IpAddr::V4(a)) => {
            let o = a.octets();
            [4, o[0], o[1], o[2], 0, 0, 0]
        }
        Some(IpAddr::V6(a)) => {
            let o = a.octets();
            [6, o[0], o[1], o[2], o[3], o[4], o[5]]
        }
    }
}

fn ticks(t: Duration) -> u32 {
    u32::try_from(t.as_millis() / 100).unwrap_or(u32::MAX)
}

impl AliasKey {
    fn mac(&self, domain: u8, fields: &[u8; 9], net: &[u8; 7]) -> u64 {
        self.0.hash_one((domain, fields, net))
    }

    /// The token label for `target`, issued at `now` to `resolver`.
    pub fn issue(
        &self,
        target: AliasTarget,
        now: Duration,
        lifetime: Duration,
        resolver: Option<IpAddr>,
    ) -> String {
        let mut fields = [0u8; 9];
        let host = u16::try_from(target.host).unwrap_or(u16::MAX);
        fields[0..2].copy_from_slice(&host.to_be_bytes());
        if let Some(s) = target.service {
            fields[2] = s.proto.number();
            fields[3..5].copy_from_slice(&s.port.to_be_bytes());
        }
        let expiry = ticks(now.saturating_add(lifetime)).saturating_add(1);
        fields[5..9].copy_from_slice(&expiry.to_be_bytes());
        let mut raw = [0u8; TOKEN_BYTES];
        raw[..9].copy_from_slice(&fields);
        raw[9..17].copy_from_slice(&self.mac(1, &fields, &resolver_net(resolver)).to_be_bytes());
        let loose = self.mac(2, &fields, &[0; 7]) as u32;
        raw[17..21].copy_from_slice(&loose.to_be_bytes());
        base32(&raw)
    }

    /// Checks a token label (any case) queried at `now` by `resolver`.
    pub fn verify(
        &self,
        label: &[u8],
        now: Duration,
        resolver: Option<IpAddr>,
    ) -> Result<AliasTarget, AliasError> {
        let raw = unbase32(label).ok_or(AliasError::Forged)?;
        let mut fields = [0u8; 9];
        fields.copy_from_slice(&raw[..9]);
        let mac = u64::from_be_bytes(raw[9..17].try_into().map_err(|_| AliasError::Forged)?);
        let loose = u32::from_be_bytes(raw[17..21].try_into().map_err(|_| AliasError::Forged)?);
        if loose != self.mac(2, &fields, &[0; 7]) as u32 {
            return Err(AliasError::Forged);
        }
        let bound = mac == self.mac(1, &fields, &resolver_net(resolver));
        let target = decode_target(&fields).ok_or(AliasError::Forged)?;
        let expiry = u32::from_be_bytes([fields[5], fields[6], fields[7], fields[8]]);
        if ticks(now) >= expiry {
            return Err(AliasError::Expired);
        }
        if !bound {
            return Err(AliasError::ResolverMismatch);
        }
        Ok(target)
    }

    /// The target named by a token whose loose MAC is ours (for re-issuing an
    /// alias after an expiry or a resolver mismatch).
    pub fn target_of(&self, label: &[u8]) -> Option<AliasTarget> {
        let raw = unbase32(label)?;
        let mut fields = [0u8; 9];
        fields.copy_from_slice(&raw[..9]);
        let loose = u32::from_be_bytes(raw[17..21].try_into().ok()?);
        if loose != self.mac(2, &fields, &[0; 7]) as u32 {
            return None;
        }
        decode_target(&fields)
    }
}

fn decode_target(fields: &[u8; 9]) -> Option<AliasTarget> {
    let host = usize::from(u16::from_be_bytes([fields[0], fields[1]]));
    let service = match fields[2] {
        0 => None,
        n => Some(ServiceKey {
            proto: L4Proto::from_number(n)?,
            port: u16::from_be_bytes([fields[3], fields[4]]),
        }),
    };
    Some(AliasTarget { host, service })
}

fn base32(raw: &[u8; TOKEN_BYTES]) -> String {
    let mut out = String::with_capacity(TOKEN_CHARS);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

fn unbase32(label: &[u8]) -> Option<[u8; TOKEN_BYTES]> {
    if label.len() != TOKEN_CHARS {
        return None;
    }
    let mut out = [0u8; TOKEN_BYTES];
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for &c in label {
        let v = match c.to_ascii_lowercase() {
            c @ b'a'..=b'z' => c - b'a',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = ((acc << 5) | u32::from(v)) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
        }
    }
    // The padding bits of the last character must be zero (one encoding per token).
    if n != TOKEN_BYTES || acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(100);
    const LIFE: Duration = Duration::from_secs(5);

    fn res(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("test address"))
    }

    fn target() -> AliasTarget {
        AliasTarget {
            host: 3,
            service: Some(ServiceKey {
                proto: L4Proto::Udp,
                port: 5060,
            }),
        }
    }

    #[test]
    fn a_token_round_trips_and_is_a_dns_label() {
        let k = AliasKey::default();
        let t = k.issue(target(), T0, LIFE, res("203.0.113.54"));
        assert_eq!(t.len(), TOKEN_CHARS);
        assert!(t.len() <= 63 && t.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            k.verify(t.as_bytes(), T0, res("203.0.113.54")),
            Ok(target())
        );
        // Case does not matter (0x20 randomisation by resolvers).
        let upper = t.to_ascii_uppercase();
        assert_eq!(
            k.verify(upper.as_bytes(), T0, res("203.0.113.54")),
            Ok(target())
        );
        let fqdn = AliasTarget {
            host: 0,
            service: None,
        };
        let t = k.issue(fqdn, T0, LIFE, None);
        assert_eq!(k.verify(t.as_bytes(), T0, None), Ok(fqdn));
    }

    #[test]
    fn tokens_expire_after_their_lifetime() {
        let k = AliasKey::default();
        let t = k.issue(target(), T0, LIFE, res("203.0.113.54"));
        let r = res("203.0.113.54");
        assert!(k.verify(t.as_bytes(), T0 + LIFE, r).is_ok());
        assert_eq!(
            k.verify(t.as_bytes(), T0 + LIFE + Duration::from_millis(200), r),
            Err(AliasError::Expired)
        );
        assert_eq!(k.target_of(t.as_bytes()), Some(target()));
    }

    #[test]
    fn same_slash24_follows_other_networks_are_mismatches() {
        let k = AliasKey::default();
        let t = k.issue(target(), T0, LIFE, res("203.0.113.54"));
        assert!(k.verify(t.as_bytes(), T0, res("203.0.113.77")).is_ok());
        assert_eq!(
            k.verify(t.as_bytes(), T0, res("198.18.0.1")),
            Err(AliasError::ResolverMismatch)
        );
        let t6 = k.issue(target(), T0, LIFE, res("2001:db8:1:2::53"));
        assert!(k
            .verify(t6.as_bytes(), T0, res("2001:db8:1:ffff::1"))
            .is_ok());
        assert_eq!(
            k.verify(t6.as_bytes(), T0, res("2001:db8:2::1")),
            Err(AliasError::ResolverMismatch)
        );
    }

    #[test]
    fn guesses_and_other_keys_are_forgeries() {
        let k = AliasKey::default();
        let t = k.issue(target(), T0, LIFE, res("203.0.113.54"));
        let r = res("203.0.113.54");
        assert_eq!(
            AliasKey::default().verify(t.as_bytes(), T0, r),
            Err(AliasError::Forged),
            "a token of another key (another process)"
        );
        // Every single-character change of a valid token is rejected.
        let mut bytes = t.clone().into_bytes();
        for i in 0..bytes.len() {
            let orig = bytes[i];
            for &c in ALPHABET.iter().filter(|&&c| c != orig.to_ascii_lowercase()) {
                bytes[i] = c;
                assert!(
                    k.verify(&bytes, T0, r).is_err(),
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            bytes[i] = orig;
        }
        for bad in [
            &b""[..],
            b"a",
            b"hosta",
            &[0xff; TOKEN_CHARS][..],
            &t.as_bytes()[1..],
        ] {
            assert_eq!(k.verify(bad, T0, r), Err(AliasError::Forged));
        }
        // Different issues of the same target differ (the expiry changes the MAC).
        let t2 = k.issue(target(), T0 + Duration::from_secs(1), LIFE, r);
        assert_ne!(t, t2);
    }
}

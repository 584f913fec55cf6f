//! Marks one conntrack entry "be liberal" in both directions (ctnetlink
//! `IPCTNL_MSG_CT_NEW` update with `CTA_PROTOINFO_TCP_FLAGS_*`).
//!
//! Why: the ALG changes TCP payload lengths and fixes SEQ/ACK itself, so the
//! kernel's TCP window tracking sees, in one direction, numbers from the
//! sender's space and acknowledgements from the rewritten space. An ACK for
//! bytes that were added by a rewrite lies beyond what conntrack saw sent and
//! is classified INVALID (`tcp_in_window`: "ACK is over the upper bound").
//! The kernel's own helpers avoid this with their seqadj extension, which
//! userspace cannot set. The per-entry liberal flag turns off only the window
//! checks, only for the ALG control flows, instead of the namespace-wide
//! `nf_conntrack_tcp_be_liberal` sysctl.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const NLA_F_NESTED: u16 = 0x8000;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_PROTOINFO: u16 = 4;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;
/// `IP_CT_TCP_FLAG_BE_LIBERAL`
const BE_LIBERAL: u8 = 0x08;

/// A TCP conntrack entry's original tuple (as the first packet had it,
/// before any NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrigTuple {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn nested(out: &mut Vec<u8>, ty: u16, build: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    build(out);
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    out[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
}

/// The whole netlink message (header included) for `tuple`.
pub fn message(tuple: &OrigTuple, seq: u32) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    // nfgenmsg: family, version, res_id (big endian)
    m.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    nested(&mut m, CTA_TUPLE_ORIG, |m| {
        nested(m, CTA_TUPLE_IP, |m| {
            attr(m, CTA_IP_V4_SRC, &tuple.src.octets());
            attr(m, CTA_IP_V4_DST, &tuple.dst.octets());
        });
        nested(m, CTA_TUPLE_PROTO, |m| {
            attr(m, CTA_PROTO_NUM, &[6]);
            attr(m, CTA_PROTO_SRC_PORT, &tuple.sport.to_be_bytes());
            attr(m, CTA_PROTO_DST_PORT, &tuple.dport.to_be_bytes());
        });
    });
    nested(&mut m, CTA_PROTOINFO, |m| {
        nested(m, CTA_PROTOINFO_TCP, |m| {
            // struct nf_ct_tcp_flags { __u8 flags; __u8 mask; }
            attr(
                m,
                CTA_PROTOINFO_TCP_FLAGS_ORIGINAL,
                &[BE_LIBERAL, BE_LIBERAL],
            );
            attr(m, CTA_PROTOINFO_TCP_FLAGS_REPLY, &[BE_LIBERAL, BE_LIBERAL]);
        });
    });
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    let ty = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

/// A ctnetlink socket in the calling thread's network namespace.
pub struct CtLiberal {
    fd: OwnedFd,
    seq: u32,
}

impl CtLiberal {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: `tv` is a live timeval and its exact size is passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(CtLiberal { fd, seq: 1 })
    }

    /// Sets the liberal flag on the entry; `Err` with ENOENT when there is
    /// no such (confirmed) entry.
    pub fn set(&mut self, tuple: &OrigTuple) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = message(tuple, seq);
        // SAFETY: a zeroed sockaddr_nl is valid; family set below.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `msg` and `sa` are live for the call; sizes are exact.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 1024];
        for _ in 0..8 {
            // SAFETY: `buf` is writable for its whole length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let got = &buf[..n as usize];
            let (Some(ty), Some(rseq), Some(code)) = (
                got.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]])),
                got.get(8..12)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
                got.get(16..20)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            ) else {
                continue;
            };
            if ty != libc::NLMSG_ERROR as u16 || rseq != seq {
                continue; // stale reply
            }
            return if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-code))
            };
        }
        Err(io::Error::other("no ctnetlink acknowledgement"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let t = OrigTuple {
            src: Ipv4Addr::new(192, 168, 0, 101),
            sport: 40000,
            dst: Ipv4Addr::new(203, 0, 113, 80),
            dport: 5060,
        };
        let m = message(&t, 7);
        assert_eq!(m.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().expect("4")) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x100);
        // addresses and ports appear in network order
        let find = |needle: &[u8]| m.windows(needle.len()).any(|w| w == needle);
        assert!(find(&[192, 168, 0, 101]) && find(&[203, 0, 113, 80]));
        assert!(find(&40000u16.to_be_bytes()) && find(&5060u16.to_be_bytes()));
        assert!(
            find(&[6, 0, 4, 0, BE_LIBERAL, BE_LIBERAL]),
            "flags attribute present"
        );
    }
}

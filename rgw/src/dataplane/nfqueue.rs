//! A minimal NFQUEUE client for the ALG: one netlink socket bound to one
//! queue, packets received into one reused buffer, verdicts sent with
//! `sendmsg` straight from the caller's payload (no copy, no allocation per
//! packet).
//!
//! Why not the `nfq` crate (which the gate uses): the ALG needs the socket's
//! receive buffer sized for its queue. The kernel queues every packet as its
//! own netlink message on the socket; with the default receive buffer
//! (`net.core.rmem_default`, about 208 KiB) a few dozen SIP packets fill it
//! and the rest are dropped ("user dropped" in
//! `/proc/net/netfilter/nfnetlink_queue`) long before the queue's own
//! `max_len` is reached. `nfq` does not expose its descriptor.
//!
//! Wire format (`include/uapi/linux/netfilter/nfnetlink_queue.h`): every
//! message is `nlmsghdr` + `nfgenmsg` (family, version, queue number in
//! network order) + attributes. Packets arrive as `NFQNL_MSG_PACKET` with
//! `NFQA_PACKET_HDR` (packet id, network order), the interface indexes and
//! `NFQA_PAYLOAD`; verdicts go out as `NFQNL_MSG_VERDICT` with
//! `NFQA_VERDICT_HDR` (verdict, id) and optionally `NFQA_MARK` and a new
//! `NFQA_PAYLOAD`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDR: usize = 16;
/// `sizeof(struct nfgenmsg)`.
const NFGEN_HDR: usize = 4;
/// Attribute header (`struct nlattr`).
const NLA_HDR: usize = 4;
/// Room for the metadata of a packet message on top of the payload.
const META_ROOM: usize = 8192;
/// Longest payload the kernel copies (the copy range is 16 bits).
const MAX_PAYLOAD: usize = 0xffff;
/// Verdict header bytes before the payload: nlmsghdr, nfgenmsg, verdict
/// attribute (4 + 8), mark attribute (4 + 4), payload attribute header.
const VERDICT_HEAD: usize = NLMSG_HDR + NFGEN_HDR + (NLA_HDR + 8) + (NLA_HDR + 4) + NLA_HDR;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn nfq_type(msg: libc::c_int) -> u16 {
    ((libc::NFNL_SUBSYS_QUEUE as u16) << 8) | msg as u16
}

/// One queued packet: its id and devices, and where its payload lies in the
/// receive buffer ([`NfQueue::payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub id: u32,
    pub indev: u32,
    pub outdev: u32,
    payload: (usize, usize),
}

/// The fate of a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

/// A netlink socket bound to one NFQUEUE queue.
pub struct NfQueue {
    fd: OwnedFd,
    queue: u16,
    /// Receive buffer, 8-byte aligned (netlink headers need 4).
    rx: Vec<u64>,
    seq: u32,
    refused: u64,
    last_refusal: i32,
}

fn put_u16(b: &mut [u8], off: usize, v: u16) {
    if let Some(d) = b.get_mut(off..off + 2) {
        d.copy_from_slice(&v.to_ne_bytes());
    }
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    if let Some(d) = b.get_mut(off..off + 4) {
        d.copy_from_slice(&v.to_ne_bytes());
    }
}

fn ne_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn be_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Writes nlmsghdr + nfgenmsg at the start of `b`; returns the offset after them.
fn put_header(
    b: &mut [u8],
    len: usize,
    msg: libc::c_int,
    flags: u16,
    seq: u32,
    queue: u16,
) -> usize {
    put_u32(b, 0, u32::try_from(len).unwrap_or(u32::MAX));
    put_u16(b, 4, nfq_type(msg));
    put_u16(b, 6, flags);
    put_u32(b, 8, seq);
    put_u32(b, 12, 0); // port id: the kernel
    if let Some(g) = b.get_mut(NLMSG_HDR..NLMSG_HDR + NFGEN_HDR) {
        g[0] = libc::AF_UNSPEC as u8;
        g[1] = libc::NFNETLINK_V0 as u8;
        g[2..4].copy_from_slice(&queue.to_be_bytes());
    }
    NLMSG_HDR + NFGEN_HDR
}

/// Writes one attribute header at `off`; returns the offset of its payload.
fn put_attr_hdr(b: &mut [u8], off: usize, ty: libc::c_int, payload_len: usize) -> usize {
    put_u16(
        b,
        off,
        u16::try_from(NLA_HDR + payload_len).unwrap_or(u16::MAX),
    );
    put_u16(b, off + 2, ty as u16);
    off + NLA_HDR
}

/// Finds the packet in one netlink datagram of the queue socket. Other
/// messages (an error reply to a verdict) are skipped; `Err` carries the
/// errno of an error reply when no packet was found.
fn parse_datagram(buf: &[u8]) -> Result<Option<Queued>, i32> {
    let mut off = 0;
    let mut error = None;
    while let (Some(len), Some(ty)) = (ne_u32(buf, off), ne_u16(buf, off + 4)) {
        let len = len as usize;
        if len < NLMSG_HDR || off + len > buf.len() {
            break;
        }
        if ty == libc::NLMSG_ERROR as u16 {
            if let Some(code) = ne_u32(buf, off + NLMSG_HDR) {
                let code = code as i32;
                if code != 0 {
                    error = Some(-code);
                }
            }
        } else if ty == nfq_type(libc::NFQNL_MSG_PACKET) {
            if let Some(p) = parse_packet(buf, off, off + len) {
                return Ok(Some(p));
            }
        }
        off += align4(len);
    }
    match error {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// Parses the attributes of one packet message `buf[start..end]`.
fn parse_packet(buf: &[u8], start: usize, end: usize) -> Option<Queued> {
    let mut off = start + NLMSG_HDR + NFGEN_HDR;
    let (mut id, mut indev, mut outdev, mut payload) = (None, 0, 0, (0, 0));
    while off + NLA_HDR <= end {
        let len = usize::from(ne_u16(buf, off)?);
        let ty = ne_u16(buf, off + 2)? & (libc::NLA_TYPE_MASK as u16);
        if len < NLA_HDR || off + len > end {
            return None;
        }
        let data = off + NLA_HDR;
        match libc::c_int::from(ty) {
            libc::NFQA_PACKET_HDR => id = Some(be_u32(buf, data)?),
            libc::NFQA_IFINDEX_INDEV => indev = be_u32(buf, data)?,
            libc::NFQA_IFINDEX_OUTDEV => outdev = be_u32(buf, data)?,
            libc::NFQA_PAYLOAD => payload = (data, len - NLA_HDR),
            _ => {}
        }
        off += align4(len);
    }
    Some(Queued {
        id: id?,
        indev,
        outdev,
        payload,
    })
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` is a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl NfQueue {
    /// Opens a socket and binds it to `queue`: the first `copy_range` bytes
    /// of each packet (0xffff: whole packets), at most `max_len` packets
    /// waiting in the kernel, and a receive buffer of `rcvbuf` bytes so that
    /// those packets fit on the socket. No ENOBUFS errors are reported when
    /// the socket overflows anyway (the kernel counts the drops).
    pub fn open(queue: u16, max_len: u32, rcvbuf: usize, copy_range: u16) -> io::Result<NfQueue> {
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_nl is valid (port id chosen by the kernel).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a live sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let want = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        // SO_RCVBUFFORCE ignores rmem_max (needs CAP_NET_ADMIN, which binding
        // a queue needs anyway); fall back to the capped SO_RCVBUF.
        if setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want).is_err() {
            setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, want)?;
        }
        setsockopt_int(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_NO_ENOBUFS,
            1,
        )?;
        let mut q = NfQueue {
            fd,
            queue,
            rx: vec![0u64; (META_ROOM + MAX_PAYLOAD).div_ceil(8)],
            seq: 1,
            refused: 0,
            last_refusal: 0,
        };
        // Bind: NFQA_CFG_CMD { command, pad, pf (network order) }.
        q.config(
            libc::NFQA_CFG_CMD,
            &[libc::NFQNL_CFG_CMD_BIND as u8, 0, 0, 0],
        )?;
        // NFQA_CFG_PARAMS { copy_range (network order), copy_mode }.
        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&u32::from(copy_range).to_be_bytes());
        params[4] = libc::NFQNL_COPY_PACKET as u8;
        q.config(libc::NFQA_CFG_PARAMS, &params)?;
        q.config(libc::NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())?;
        Ok(q)
    }

    /// The receive buffer size the kernel granted (its doubled value).
    pub fn rcvbuf(&self) -> io::Result<usize> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v`/`len` describe a live c_int-sized buffer.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(v).unwrap_or(0))
    }

    fn rx_bytes(&self) -> &[u8] {
        // SAFETY: the Vec owns `len * 8` initialised bytes; any bit pattern
        // is a valid u8, and the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.rx.as_ptr().cast::<u8>(), self.rx.len() * 8) }
    }

    /// Sends one configuration attribute with NLM_F_ACK and waits for the ack.
    fn config(&mut self, ty: libc::c_int, value: &[u8]) -> io::Result<()> {
        let mut msg = [0u8; 64];
        let len = NLMSG_HDR + NFGEN_HDR + NLA_HDR + align4(value.len());
        if len > msg.len() {
            return Err(io::Error::other(
                "internal: NFQUEUE config attribute too long",
            ));
        }
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        let off = put_header(
            &mut msg,
            len,
            libc::NFQNL_MSG_CONFIG,
            flags,
            seq,
            self.queue,
        );
        let data = put_attr_hdr(&mut msg, off, ty, value.len());
        msg[data..data + value.len()].copy_from_slice(value);
        self.send(&[&msg[..len]])?;
        loop {
            let n = self.recv_raw()?;
            let buf = &self.rx_bytes()[..n];
            let mut off = 0;
            while let (Some(l), Some(t), Some(s)) =
                (ne_u32(buf, off), ne_u16(buf, off + 4), ne_u32(buf, off + 8))
            {
                let l = l as usize;
                if l < NLMSG_HDR || off + l > buf.len() {
                    break;
                }
                if t == libc::NLMSG_ERROR as u16 && s == seq {
                    let code = ne_u32(buf, off + NLMSG_HDR).unwrap_or(0) as i32;
                    if code == 0 {
                        return Ok(());
                    }
                    return Err(io::Error::from_raw_os_error(-code));
                }
                off += align4(l);
            }
        }
    }

    /// Sends up to three buffers as one message (no copy, no allocation).
    fn send(&self, parts: &[&[u8]]) -> io::Result<()> {
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [empty; 3];
        let mut n = 0;
        for (slot, p) in iov.iter_mut().zip(parts.iter().filter(|p| !p.is_empty())) {
            *slot = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
            n += 1;
        }
        self.sendmsg(&iov[..n])
    }

    fn sendmsg(&self, iov: &[libc::iovec]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl is the kernel (port id 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: an all-zero msghdr is valid; the fields set below point to
        // live locals and to `iov`, which outlive the call.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
        mh.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        mh.msg_iov = iov.as_ptr() as *mut libc::iovec;
        mh.msg_iovlen = iov.len();
        loop {
            // SAFETY: `mh` describes valid buffers for the duration of the call.
            let rc = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &mh, 0) };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// One datagram into the receive buffer; its length.
    fn recv_raw(&mut self) -> io::Result<usize> {
        let cap = self.rx.len() * 8;
        // SAFETY: the buffer is live and `cap` bytes long.
        let rc = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.rx.as_mut_ptr().cast(),
                cap,
                libc::MSG_TRUNC,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = rc as usize;
        if n > cap {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(n)
    }

    /// Waits for the next packet. Error replies to earlier verdicts (the
    /// kernel refused one) are skipped and counted ([`NfQueue::refused`]).
    pub fn recv(&mut self) -> io::Result<Queued> {
        loop {
            let n = self.recv_raw()?;
            match parse_datagram(&self.rx_bytes()[..n]) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => continue,
                Err(errno) => {
                    self.refused += 1;
                    self.last_refusal = errno;
                }
            }
        }
    }

    /// Verdicts the kernel refused so far, and the errno of the last one.
    pub fn refused(&self) -> (u64, i32) {
        (self.refused, self.last_refusal)
    }

    /// The payload of `p`, valid until the next [`NfQueue::recv`].
    pub fn payload(&self, p: &Queued) -> &[u8] {
        let (start, len) = p.payload;
        self.rx_bytes().get(start..start + len).unwrap_or(&[])
    }

    /// Sends the verdict on packet `id`, with a new mark and, if given, a new
    /// payload (sent from the caller's buffer).
    pub fn verdict(
        &self,
        id: u32,
        verdict: Verdict,
        mark: Option<u32>,
        payload: Option<&[u8]>,
    ) -> io::Result<()> {
        let mut head = [0u8; VERDICT_HEAD];
        let payload = payload.filter(|p| p.len() <= MAX_PAYLOAD && verdict == Verdict::Accept);
        let mut len = NLMSG_HDR + NFGEN_HDR + NLA_HDR + 8;
        if mark.is_some() {
            len += NLA_HDR + 4;
        }
        let pad = payload.map_or(0, |p| align4(p.len()) - p.len());
        if let Some(p) = payload {
            len += NLA_HDR + p.len() + pad;
        }
        let mut off = put_header(
            &mut head,
            len,
            libc::NFQNL_MSG_VERDICT,
            libc::NLM_F_REQUEST as u16,
            0,
            self.queue,
        );
        off = put_attr_hdr(&mut head, off, libc::NFQA_VERDICT_HDR, 8);
        let v: u32 = match verdict {
            Verdict::Drop => libc::NF_DROP as u32,
            Verdict::Accept => libc::NF_ACCEPT as u32,
        };
        head[off..off + 4].copy_from_slice(&v.to_be_bytes());
        head[off + 4..off + 8].copy_from_slice(&id.to_be_bytes());
        off += 8;
        if let Some(m) = mark {
            off = put_attr_hdr(&mut head, off, libc::NFQA_MARK, 4);
            head[off..off + 4].copy_from_slice(&m.to_be_bytes());
            off += 4;
        }
        const ZEROS: [u8; 4] = [0; 4];
        match payload {
            Some(p) => {
                off = put_attr_hdr(&mut head, off, libc::NFQA_PAYLOAD, p.len());
                self.send(&[&head[..off], p, &ZEROS[..pad]])
            }
            None => self.send(&[&head[..off]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet message as the kernel builds it (attributes in its order).
    fn packet_msg(id: u32, indev: u32, outdev: u32, payload: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        let mut attr = |ty: libc::c_int, data: &[u8]| {
            attrs.extend_from_slice(&((NLA_HDR + data.len()) as u16).to_ne_bytes());
            attrs.extend_from_slice(&(ty as u16).to_ne_bytes());
            attrs.extend_from_slice(data);
            attrs.resize(align4(attrs.len()), 0);
        };
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 2]);
        attr(libc::NFQA_PACKET_HDR, &hdr);
        attr(libc::NFQA_IFINDEX_INDEV, &indev.to_be_bytes());
        attr(libc::NFQA_IFINDEX_OUTDEV, &outdev.to_be_bytes());
        attr(libc::NFQA_PAYLOAD, payload);
        let len = NLMSG_HDR + NFGEN_HDR + attrs.len();
        let mut m = vec![0u8; NLMSG_HDR + NFGEN_HDR];
        put_header(&mut m, len, libc::NFQNL_MSG_PACKET, 0, 0, 1);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn parses_a_packet_message() {
        let m = packet_msg(0x0102_0304, 7, 9, b"hello");
        let p = parse_datagram(&m).expect("no error").expect("a packet");
        assert_eq!((p.id, p.indev, p.outdev), (0x0102_0304, 7, 9));
        let (s, l) = p.payload;
        assert_eq!(&m[s..s + l], b"hello");
    }

    #[test]
    fn skips_error_replies_and_reports_them_alone() {
        let mut err = vec![0u8; NLMSG_HDR + 20];
        let n = err.len() as u32;
        put_u32(&mut err, 0, n);
        put_u16(&mut err, 4, libc::NLMSG_ERROR as u16);
        put_u32(&mut err, NLMSG_HDR, (-libc::ENOENT) as u32);
        assert_eq!(parse_datagram(&err), Err(libc::ENOENT));
        let mut both = err.clone();
        both.extend_from_slice(&packet_msg(5, 1, 2, b"x"));
        assert_eq!(parse_datagram(&both).expect("ok").map(|p| p.id), Some(5));
    }

    #[test]
    fn truncated_or_garbage_input_is_no_packet() {
        let m = packet_msg(1, 2, 3, b"abcdef");
        for cut in 0..m.len() {
            // Never panics; a cut message is not a packet (or has its id).
            let _ = parse_datagram(&m[..cut]);
        }
        assert_eq!(parse_datagram(&[0xff; 40]), Ok(None));
        // A packet message without NFQA_PACKET_HDR is not a packet.
        let mut no_id = vec![0u8; NLMSG_HDR + NFGEN_HDR];
        let n = no_id.len();
        put_header(&mut no_id, n, libc::NFQNL_MSG_PACKET, 0, 0, 1);
        assert_eq!(parse_datagram(&no_id), Ok(None));
    }
}

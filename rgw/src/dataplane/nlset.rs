//! Fast element updates for nftables sets over a reused netlink socket.
//!
//! The ruleset (tables, sets, chains) is created elsewhere with `nft -f`. This
//! module only adds and deletes *elements* of existing sets, and does so on the
//! DNS answer path, so every call is a single netlink transaction:
//!
//! ```text
//! NFNL_MSG_BATCH_BEGIN   seq = s
//! NFT_MSG_NEWSETELEM     seq = s + 1   (NLM_F_ACK)
//! ...                    (more element messages for big `add_many` calls)
//! NFNL_MSG_BATCH_END     seq = s + n + 1
//! ```
//!
//! sent with one `sendmsg()`. The kernel processes a netfilter batch
//! synchronously inside `sendmsg()`, so once the send returns every reply is
//! already queued on the socket. The socket is therefore non-blocking: a missing
//! acknowledgement is reported as an error instead of hanging the caller.
//!
//! Acknowledgement rules (see `nfnetlink_rcv_batch()` in the kernel):
//! * every element message carries `NLM_F_ACK`, so the kernel queues exactly one
//!   reply (success or errno) per element message, also when the batch is
//!   aborted because another message failed;
//! * batch begin/end carry no `NLM_F_ACK` (kernels before 6.10 ignore it there
//!   anyway), but an error that rejects the whole batch (EPERM, ENOMEM, commit
//!   failure, ...) is reported against the begin message and ends the wait;
//!   per-message replies that may still follow it are drained;
//! * replies whose sequence number is outside the current batch are stale
//!   leftovers and are discarded, so an interrupted exchange can never be
//!   mistaken for the answer to a later call.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use nftnl::nftnl_sys as sys;

/// Errors from [`SetWriter`].
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// Local failure: socket creation, send/receive, allocation, invalid input.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel answered the request with an error (e.g. `EEXIST`, `ENOENT`).
    #[error("kernel refused {op} on set {table}/{set}: {errno}")]
    Kernel {
        op: &'static str,
        table: String,
        set: String,
        errno: std::io::Error,
    },
}

impl NlError {
    /// The OS error number, if any (kernel errno for [`NlError::Kernel`]).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NlError::Io(e) => e.raw_os_error(),
            NlError::Kernel { errno, .. } => errno.raw_os_error(),
        }
    }
}

/// Key of a `type ipv4_addr` set: the address in network byte order.
pub fn key_addr(addr: Ipv4Addr) -> [u8; 4] {
    addr.octets()
}

/// Key of a `type ipv4_addr . inet_proto . inet_service` set.
///
/// Concatenated keys are laid out in 32-bit registers: address (4 bytes),
/// protocol (1 byte, zero padded to 4), port (2 bytes network order, zero
/// padded to 4).
pub fn key_addr_proto_port(addr: Ipv4Addr, proto: u8, port: u16) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&addr.octets());
    key[4] = proto;
    key[8..10].copy_from_slice(&port.to_be_bytes());
    key
}

/// Key of the pinhole map `ipv4_addr . inet_proto . ipv4_addr . inet_service`
/// (peer, protocol, public address, public port).
pub fn key_pinhole(peer: Ipv4Addr, proto: u8, public: Ipv4Addr, port: u16) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&peer.octets());
    key[4] = proto;
    key[8..12].copy_from_slice(&public.octets());
    key[12..14].copy_from_slice(&port.to_be_bytes());
    key
}

/// Data of a `ipv4_addr . inet_service` DNAT target (address, port).
pub fn data_addr_port(addr: Ipv4Addr, port: u16) -> [u8; 8] {
    let mut data = [0u8; 8];
    data[..4].copy_from_slice(&addr.octets());
    data[4..6].copy_from_slice(&port.to_be_bytes());
    data
}

/// Key of the IPv6 pinhole map `ipv6_addr . inet_proto . ipv6_addr .
/// inet_service` (peer, protocol, public address, public port; RGW64 NAT46).
pub fn key_pinhole6(peer: Ipv6Addr, proto: u8, public: Ipv6Addr, port: u16) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..16].copy_from_slice(&peer.octets());
    key[16] = proto;
    key[20..36].copy_from_slice(&public.octets());
    key[36..38].copy_from_slice(&port.to_be_bytes());
    key
}

/// Data of a `ipv6_addr . inet_service` DNAT target (address, port).
pub fn data_addr6_port(addr: Ipv6Addr, port: u16) -> [u8; 20] {
    let mut data = [0u8; 20];
    data[..16].copy_from_slice(&addr.octets());
    data[16..18].copy_from_slice(&port.to_be_bytes());
    data
}

/// Key of the pinhole SNAT map `ipv4_addr . inet_proto . inet_service .
/// ipv4_addr` (private address, protocol, private port, peer).
pub fn key_pinhole_snat(private: Ipv4Addr, proto: u8, port: u16, peer: Ipv4Addr) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&private.octets());
    key[4] = proto;
    key[8..10].copy_from_slice(&port.to_be_bytes());
    key[12..16].copy_from_slice(&peer.octets());
    key
}

/// `NFT_NAME_MAXLEN` including the terminating NUL.
const NFT_NAME_MAXLEN: usize = 256;
/// `NFT_DATA_VALUE_MAXLEN`: longest key the kernel (and libnftnl) accepts.
pub const MAX_KEY_LEN: usize = 64;
/// Budget for the `NFTA_SET_ELEM_LIST_ELEMENTS` nest of one message. Its
/// length field is 16 bits wide, so bigger `add_many` calls are split into
/// several element messages inside the same batch (still one transaction).
const MAX_ELEMS_BYTES: usize = 60_000;
/// Size of a batch begin/end message: nlmsghdr (16) + nfgenmsg (4).
const BATCH_MSG_LEN: usize = 20;
/// Extra room per message on top of the computed upper bound.
const MSG_SLACK: usize = 64;
/// Receive buffer: large enough even for an error reply that echoes a whole
/// element message (in case `NETLINK_CAP_ACK` is unavailable).
const RX_BUF_LEN: usize = 64 * 1024;
/// Upper bound on datagrams discarded when clearing leftovers after an error.
const DRAIN_LIMIT: usize = 4096;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Bytes used by a NUL-terminated string attribute.
const fn strz_attr_len(len: usize) -> usize {
    align4(4 + len + 1)
}

/// Upper bound of the bytes one element adds to a message: list element nest
/// (4) + timeout attribute (12) + key nest (4) + key data attribute.
const fn elem_len_bound(key_len: usize, data_len: usize) -> usize {
    let data = if data_len == 0 {
        0
    } else {
        4 + align4(4 + data_len)
    };
    4 + 12 + 4 + align4(4 + key_len) + data
}

/// One element of a set (no data) or a map (with data).
pub type Elem<'a> = (&'a [u8], Option<&'a [u8]>);

/// One `key : data` element of a map, for [`SetWriter::add_map_elems`].
#[derive(Debug, Clone, Copy)]
pub struct MapElem<'a> {
    pub map: &'a str,
    pub key: &'a [u8],
    pub data: &'a [u8],
    /// `None`: the map's default timeout, if it has one.
    pub timeout: Option<Duration>,
}

/// Byte buffer with 8-byte alignment, as netlink headers need 4-byte alignment.
struct AlignedBuf {
    words: Vec<u64>,
}

impl AlignedBuf {
    fn with_len(len: usize) -> Self {
        let mut buf = AlignedBuf { words: Vec::new() };
        buf.ensure_len(len);
        buf
    }

    fn ensure_len(&mut self, len: usize) {
        let words = len.div_ceil(8);
        if self.words.len() < words {
            self.words.resize(words, 0);
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the Vec owns `len * 8` initialised bytes; every bit pattern
        // is a valid u8 and u8 has no alignment requirement. The returned
        // slice borrows `self`, so the storage outlives it.
        unsafe {
            std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.words.len() * 8)
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; the exclusive borrow of `self` guarantees no
        // other reference to the storage exists while the slice is alive, and
        // any byte values written through it are valid u64 bit patterns.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.words.as_mut_ptr().cast::<u8>(),
                self.words.len() * 8,
            )
        }
    }
}

fn invalid_input(msg: &'static str) -> NlError {
    NlError::Io(io::Error::new(io::ErrorKind::InvalidInput, msg))
}

fn name_cstring(name: &str) -> Result<CString, NlError> {
    if name.is_empty() || name.len() >= NFT_NAME_MAXLEN {
        return Err(invalid_input("table/set name must be 1..=255 bytes"));
    }
    CString::new(name).map_err(|_| invalid_input("table/set name contains a NUL byte"))
}

/// Timeout in whole milliseconds as the kernel expects it, rounded up and at
/// least 1 ms (a zero timeout would not mean "expire now").
fn timeout_ms(timeout: Duration) -> u64 {
    let ms = timeout.as_nanos().div_ceil(1_000_000).max(1);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Owned `nftnl_set`; frees it (and all elements added to it) on drop.
struct NftnlSet(NonNull<sys::nftnl_set>);

impl NftnlSet {
    fn new() -> io::Result<Self> {
        // SAFETY: plain allocation without preconditions; NULL is handled.
        let ptr = unsafe { sys::nftnl_set_alloc() };
        NonNull::new(ptr)
            .map(NftnlSet)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
    }

    fn set_str(&mut self, attr: sys::nftnl_set_attr, value: &CString) -> io::Result<()> {
        // SAFETY: `self.0` is a live set; `value` is a NUL-terminated string
        // that libnftnl copies (strdup) before returning.
        let rc = unsafe { sys::nftnl_set_set_str(self.0.as_ptr(), attr as u16, value.as_ptr()) };
        if rc < 0 {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        Ok(())
    }

    fn set_u32(&mut self, attr: sys::nftnl_set_attr, value: u32) {
        // SAFETY: `self.0` is a live set and `attr` is a u32 attribute.
        unsafe { sys::nftnl_set_set_u32(self.0.as_ptr(), attr as u16, value) }
    }

    /// Moves `elem` into the set's element list; the set frees it from now on.
    fn add_elem(&mut self, elem: NftnlElem) {
        let ptr = elem.0;
        std::mem::forget(elem);
        // SAFETY: both objects are live; ownership of the element passes to
        // the set (nftnl_set_free frees its element list), and the guard was
        // forgotten above so it is not freed twice.
        unsafe { sys::nftnl_set_elem_add(self.0.as_ptr(), ptr.as_ptr()) }
    }
}

impl Drop for NftnlSet {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from nftnl_set_alloc and is freed exactly once.
        unsafe { sys::nftnl_set_free(self.0.as_ptr()) }
    }
}

/// Owned `nftnl_set_elem` not (yet) attached to a set.
struct NftnlElem(NonNull<sys::nftnl_set_elem>);

impl NftnlElem {
    fn new(key: &[u8], data: Option<&[u8]>, timeout_ms: Option<u64>) -> io::Result<Self> {
        // SAFETY: plain allocation without preconditions; NULL is handled.
        let ptr = unsafe { sys::nftnl_set_elem_alloc() };
        let elem = NonNull::new(ptr)
            .map(NftnlElem)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let key_len = u32::try_from(key.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "key too long"))?;
        // SAFETY: `elem.0` is live; `key` is valid for `key_len` bytes and is
        // copied into the element (at most 64 bytes, otherwise rc < 0).
        let rc = unsafe {
            sys::nftnl_set_elem_set(
                elem.0.as_ptr(),
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr().cast(),
                key_len,
            )
        };
        if rc < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "key rejected by libnftnl",
            ));
        }
        if let Some(data) = data {
            let data_len = u32::try_from(data.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "data too long"))?;
            // SAFETY: `elem.0` is live; `data` is valid for `data_len` bytes
            // and is copied into the element (at most 64 bytes, else rc < 0).
            let rc = unsafe {
                sys::nftnl_set_elem_set(
                    elem.0.as_ptr(),
                    sys::NFTNL_SET_ELEM_DATA as u16,
                    data.as_ptr().cast(),
                    data_len,
                )
            };
            if rc < 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "element data rejected by libnftnl",
                ));
            }
        }
        if let Some(ms) = timeout_ms {
            // SAFETY: `elem.0` is live; the timeout attribute is a u64.
            unsafe {
                sys::nftnl_set_elem_set_u64(elem.0.as_ptr(), sys::NFTNL_SET_ELEM_TIMEOUT as u16, ms)
            }
        }
        Ok(elem)
    }
}

impl Drop for NftnlElem {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from nftnl_set_elem_alloc, was not handed to a
        // set (see `NftnlSet::add_elem`), and is freed exactly once.
        unsafe { sys::nftnl_set_elem_free(self.0.as_ptr()) }
    }
}

/// Checks that `out` can hold `needed` bytes of netlink message.
fn check_out(out: &[u8], needed: usize) -> io::Result<()> {
    if out.len() < needed || out.as_ptr().align_offset(4) != 0 {
        return Err(io::Error::other(
            "internal: netlink buffer too small or misaligned",
        ));
    }
    Ok(())
}

/// Writes a batch begin or end message; returns its aligned length.
fn write_batch_marker(out: &mut [u8], end: bool, seq: u32) -> io::Result<usize> {
    check_out(out, BATCH_MSG_LEN)?;
    let buf = out.as_mut_ptr().cast::<std::os::raw::c_char>();
    // SAFETY: `buf` is 4-byte aligned with at least BATCH_MSG_LEN writable
    // bytes (checked above); the functions write exactly one nlmsghdr plus
    // nfgenmsg (20 bytes) there.
    let nlh = unsafe {
        if end {
            sys::nftnl_batch_end(buf, seq)
        } else {
            sys::nftnl_batch_begin(buf, seq)
        }
    };
    // SAFETY: the functions return the header they just wrote inside `out`.
    let len = unsafe { (*nlh).nlmsg_len } as usize;
    Ok(align4(len))
}

/// Writes one NEWSETELEM/DELSETELEM message for `keys`; returns its aligned
/// length.
#[allow(clippy::too_many_arguments)]
fn write_setelem_msg(
    out: &mut [u8],
    msg_type: u16,
    family: u8,
    flags: u16,
    seq: u32,
    table: &CString,
    set: &CString,
    keys: &[Elem<'_>],
    timeout_ms: Option<u64>,
) -> io::Result<usize> {
    let bound = setelem_msg_bound(table, set, keys);
    check_out(out, bound)?;

    // Build the libnftnl objects first: allocation failures leave `out`
    // untouched, and all objects are freed by the guards on every path.
    let mut nset = NftnlSet::new()?;
    nset.set_str(sys::NFTNL_SET_TABLE, table)?;
    nset.set_str(sys::NFTNL_SET_NAME, set)?;
    nset.set_u32(sys::NFTNL_SET_FAMILY, u32::from(family));
    for (key, data) in keys {
        nset.add_elem(NftnlElem::new(key, *data, timeout_ms)?);
    }

    let buf = out.as_mut_ptr().cast::<std::os::raw::c_char>();
    // SAFETY: `buf` is 4-byte aligned and has at least `bound` writable bytes
    // (checked above). `bound` over-estimates everything
    // nftnl_nlmsg_build_hdr + nftnl_set_elems_nlmsg_build_payload emit for
    // this set (header, table/set name attributes, element list with key and
    // timeout per element), and those functions write nothing else.
    let len = unsafe {
        let nlh = sys::nftnl_nlmsg_build_hdr(buf, msg_type, u16::from(family), flags, seq);
        sys::nftnl_set_elems_nlmsg_build_payload(nlh, nset.0.as_ptr());
        (*nlh).nlmsg_len as usize
    };
    if len > bound {
        // Cannot happen with the bound above; refuse to send garbage if it does.
        return Err(io::Error::other(
            "internal: set element message exceeded its bound",
        ));
    }
    Ok(align4(len))
}

/// Upper bound of the size of one set element message for `keys`.
fn setelem_msg_bound(table: &CString, set: &CString, keys: &[Elem<'_>]) -> usize {
    16 + 4
        + strz_attr_len(set.as_bytes().len())
        + strz_attr_len(table.as_bytes().len())
        + 4
        + keys
            .iter()
            .map(|(k, d)| elem_len_bound(k.len(), d.map_or(0, <[u8]>::len)))
            .sum::<usize>()
        + MSG_SLACK
}

/// How many of `keys` fit into one element message.
fn chunk_len(keys: &[Elem<'_>]) -> usize {
    let mut bytes = 0;
    for (i, (key, data)) in keys.iter().enumerate() {
        bytes += elem_len_bound(key.len(), data.map_or(0, <[u8]>::len));
        if bytes > MAX_ELEMS_BYTES {
            return i.max(1);
        }
    }
    keys.len()
}

fn set_int_sockopt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int_sockopt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value`/`len` are live locals describing a c_int-sized buffer.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ne_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Adds and deletes elements of nftables sets through one netlink
/// (`NETLINK_NETFILTER`) socket that is reused for every call.
///
/// The socket belongs to the network namespace that was current for the
/// thread calling [`SetWriter::open`], also if the writer later moves to
/// another thread.
pub struct SetWriter {
    sock: mnl::Socket,
    family: u8,
    /// Sequence number of the next message to send.
    seq: u32,
    tx: AlignedBuf,
    rx: AlignedBuf,
    /// Current `SO_SNDBUF` (the kernel's doubled value).
    sndbuf: usize,
}

// SAFETY: `mnl::Socket` is !Send only because it wraps a raw pointer to a
// heap-allocated `struct mnl_socket` (fd + sockaddr). libmnl keeps no
// thread-local or shared state for it, the SetWriter owns it exclusively, and
// every use goes through `&mut self`, so moving the writer to another thread
// is sound. (SetWriter is deliberately not Sync.)
unsafe impl Send for SetWriter {}

impl fmt::Debug for SetWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetWriter")
            .field("fd", &self.sock.as_raw_fd())
            .field("family", &self.family)
            .field("seq", &self.seq)
            .finish()
    }
}

impl SetWriter {
    /// Opens and binds the socket in the calling thread's current network namespace.
    pub fn open(family: u8 /* libc::NFPROTO_IPV4 as u8 */) -> Result<Self, NlError> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter)?;
        let fd = sock.as_raw_fd();
        // Replies to a batch are queued during sendmsg(); never block on them.
        set_nonblocking(fd)?;
        // Error replies then carry only the offending header, not the whole
        // (possibly large) request. Best effort: the receive buffer is large
        // enough without it (kernels < 4.3 lack the option).
        let _ = set_int_sockopt(fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        let sndbuf = get_int_sockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)
            .ok()
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(0);
        Ok(SetWriter {
            sock,
            family,
            seq: 1,
            tx: AlignedBuf::with_len(4096),
            rx: AlignedBuf::with_len(RX_BUF_LEN),
            sndbuf,
        })
    }

    /// Adds one element with an optional timeout. `exclusive = true` uses
    /// NLM_F_EXCL ("create element": fails with EEXIST if the key exists);
    /// false = "add element" (existing key: no error).
    ///
    /// The timeout is rounded up to whole milliseconds (minimum 1 ms); `None`
    /// uses the set's default timeout, if it has one.
    pub fn add(
        &mut self,
        table: &str,
        set: &str,
        key: &[u8],
        timeout: Option<Duration>,
        exclusive: bool,
    ) -> Result<(), NlError> {
        let (op, flags) = if exclusive {
            (
                "create element",
                libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK,
            )
        } else {
            ("add element", libc::NLM_F_CREATE | libc::NLM_F_ACK)
        };
        self.transact(
            op,
            table,
            set,
            libc::NFT_MSG_NEWSETELEM as u16,
            flags as u16,
            &[(key, None)],
            timeout,
        )
    }

    /// Adds several elements to one set in ONE netlink batch (one
    /// transaction, all-or-nothing). Existing keys are not an error.
    ///
    /// Large key lists are split into several element messages inside the
    /// same batch (the element list of one message is limited to 64 KiB).
    pub fn add_many(
        &mut self,
        table: &str,
        set: &str,
        keys: &[&[u8]],
        timeout: Option<Duration>,
    ) -> Result<(), NlError> {
        let elems: Vec<Elem<'_>> = keys.iter().map(|k| (*k, None)).collect();
        let flags = libc::NLM_F_CREATE | libc::NLM_F_ACK;
        self.transact(
            "add elements",
            table,
            set,
            libc::NFT_MSG_NEWSETELEM as u16,
            flags as u16,
            &elems,
            timeout,
        )
    }

    /// Adds (or refreshes) several `key : data` elements of one map in ONE
    /// netlink batch. Existing keys are not an error.
    pub fn add_map_many(
        &mut self,
        table: &str,
        map: &str,
        entries: &[(&[u8], &[u8])],
        timeout: Option<Duration>,
    ) -> Result<(), NlError> {
        let elems: Vec<Elem<'_>> = entries.iter().map(|(k, d)| (*k, Some(*d))).collect();
        let flags = libc::NLM_F_CREATE | libc::NLM_F_ACK;
        self.transact(
            "add map elements",
            table,
            map,
            libc::NFT_MSG_NEWSETELEM as u16,
            flags as u16,
            &elems,
            timeout,
        )
    }

    /// Deletes one element; ENOENT (already expired) is reported as Kernel
    /// error with ENOENT so the caller can ignore it.
    pub fn delete(&mut self, table: &str, set: &str, key: &[u8]) -> Result<(), NlError> {
        let flags = libc::NLM_F_ACK;
        self.transact(
            "delete element",
            table,
            set,
            libc::NFT_MSG_DELSETELEM as u16,
            flags as u16,
            &[(key, None)],
            None,
        )
    }

    /// Adds (or refreshes) `key : data` elements of several maps of one
    /// table in ONE netlink batch: one transaction, all-or-nothing, one
    /// `sendmsg()` and, when all went well, one acknowledgement to read.
    /// Existing keys with the same data are not an error; a key that maps to
    /// other data fails the whole batch with `EEXIST`.
    ///
    /// Every element travels in its own message (each may have its own map
    /// and timeout); only the last one asks for an acknowledgement, since
    /// the kernel reports an error of any message anyway.
    pub fn add_map_elems(&mut self, table: &str, elems: &[MapElem<'_>]) -> Result<(), NlError> {
        let Some(last) = elems.last() else {
            return Ok(());
        };
        if elems.iter().any(|e| {
            e.key.is_empty()
                || e.key.len() > MAX_KEY_LEN
                || e.data.is_empty()
                || e.data.len() > MAX_KEY_LEN
        }) {
            return Err(invalid_input("set element key/data must be 1..=64 bytes"));
        }
        let table_c = name_cstring(table)?;
        let first_seq = self.seq;
        let mut seq = first_seq;
        self.tx.ensure_len(BATCH_MSG_LEN);
        let mut off = write_batch_marker(self.tx.bytes_mut(), false, seq)?;
        seq = seq.wrapping_add(1);
        let mut n_msgs: u32 = 0;
        // Consecutive elements of one map share its name's CString.
        let mut map_c: Option<(&str, CString)> = None;
        for (i, e) in elems.iter().enumerate() {
            if map_c.as_ref().is_none_or(|(name, _)| *name != e.map) {
                map_c = Some((e.map, name_cstring(e.map)?));
            }
            let Some((_, set_c)) = &map_c else {
                return Err(invalid_input("internal: no map name"));
            };
            let mut flags = libc::NLM_F_CREATE;
            if i + 1 == elems.len() {
                flags |= libc::NLM_F_ACK;
            }
            let keys: [Elem<'_>; 1] = [(e.key, Some(e.data))];
            let bound = setelem_msg_bound(&table_c, set_c, &keys);
            self.tx.ensure_len(off + bound + BATCH_MSG_LEN);
            off += write_setelem_msg(
                &mut self.tx.bytes_mut()[off..],
                libc::NFT_MSG_NEWSETELEM as u16,
                self.family,
                flags as u16,
                seq,
                &table_c,
                set_c,
                &keys,
                e.timeout.map(timeout_ms),
            )?;
            seq = seq.wrapping_add(1);
            n_msgs += 1;
        }
        self.tx.ensure_len(off + BATCH_MSG_LEN);
        off += write_batch_marker(&mut self.tx.bytes_mut()[off..], true, seq)?;
        self.seq = seq.wrapping_add(1);

        self.ensure_sndbuf(off);
        let sent = self.sock.send(&self.tx.bytes()[..off])?;
        if sent != off {
            return Err(NlError::Io(io::Error::other(
                "netlink batch was sent partially",
            )));
        }
        match self.collect_last_ack(first_seq, n_msgs)? {
            None => Ok(()),
            Some(errno) => Err(NlError::Kernel {
                op: "add map elements",
                table: table.to_owned(),
                set: last.map.to_owned(),
                errno: io::Error::from_raw_os_error(errno),
            }),
        }
    }

    /// Reads the replies to a batch starting at `first_seq` whose `n_msgs`
    /// element messages carry NLM_F_ACK on the last one only: waits for that
    /// reply (or a whole-batch rejection). Returns the first errno reported.
    fn collect_last_ack(&mut self, first_seq: u32, n_msgs: u32) -> Result<Option<i32>, NlError> {
        let end_rel = n_msgs + 1;
        let mut failure: Option<i32> = None;
        loop {
            let len = match self.sock.recv_raw(self.rx.bytes_mut()) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Everything is queued during sendmsg(): no reply for the
                    // last message after an error means the kernel stopped
                    // at that error (e.g. ENOMEM).
                    return match failure {
                        Some(_) => Ok(failure),
                        None => Err(NlError::Io(io::Error::other(
                            "kernel did not acknowledge the netlink batch",
                        ))),
                    };
                }
                Err(e) => {
                    self.drain();
                    return Err(NlError::Io(e));
                }
            };
            let mut done = false;
            for msg in mnl::NlMessages::new(&self.rx.bytes()[..len]) {
                let msg = msg?;
                let (Some(msg_type), Some(seq)) = (ne_u16(msg, 4), ne_u32(msg, 8)) else {
                    continue;
                };
                if msg_type != libc::NLMSG_ERROR as u16 {
                    continue;
                }
                let rel = seq.wrapping_sub(first_seq);
                if rel > end_rel {
                    continue; // stale reply to an earlier batch
                }
                let code = ne_u32(msg, 16).map(|v| v as i32).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "short netlink error message")
                })?;
                if code != 0 && failure.is_none() {
                    failure = Some(-code);
                }
                if rel == 0 || rel == end_rel {
                    if code != 0 {
                        // The whole batch was rejected; drop what may follow.
                        self.drain();
                        return Ok(failure);
                    }
                    continue;
                }
                if rel == n_msgs {
                    done = true;
                }
            }
            if done {
                return Ok(failure);
            }
        }
    }

    /// Builds, sends and acknowledges one batch with the given element messages.
    #[allow(clippy::too_many_arguments)]
    fn transact(
        &mut self,
        op: &'static str,
        table: &str,
        set: &str,
        msg_type: u16,
        flags: u16,
        keys: &[Elem<'_>],
        timeout: Option<Duration>,
    ) -> Result<(), NlError> {
        if keys.is_empty() {
            return Ok(());
        }
        if keys.iter().any(|(k, d)| {
            k.is_empty()
                || k.len() > MAX_KEY_LEN
                || d.is_some_and(|d| d.is_empty() || d.len() > MAX_KEY_LEN)
        }) {
            return Err(invalid_input("set element key/data must be 1..=64 bytes"));
        }
        let table_c = name_cstring(table)?;
        let set_c = name_cstring(set)?;
        let timeout_ms = timeout.map(timeout_ms);

        // Build the batch: begin, element message(s), end.
        let first_seq = self.seq;
        let mut seq = first_seq;
        self.tx.ensure_len(BATCH_MSG_LEN);
        let mut off = write_batch_marker(self.tx.bytes_mut(), false, seq)?;
        seq = seq.wrapping_add(1);
        let mut n_msgs: u32 = 0;
        let mut rest = keys;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(chunk_len(rest));
            let bound = setelem_msg_bound(&table_c, &set_c, chunk);
            self.tx.ensure_len(off + bound + BATCH_MSG_LEN);
            off += write_setelem_msg(
                &mut self.tx.bytes_mut()[off..],
                msg_type,
                self.family,
                flags,
                seq,
                &table_c,
                &set_c,
                chunk,
                timeout_ms,
            )?;
            seq = seq.wrapping_add(1);
            n_msgs += 1;
            rest = tail;
        }
        self.tx.ensure_len(off + BATCH_MSG_LEN);
        off += write_batch_marker(&mut self.tx.bytes_mut()[off..], true, seq)?;
        // Sequence numbers are consumed even if sending fails, so that any
        // late reply can never match a later batch.
        self.seq = seq.wrapping_add(1);

        self.ensure_sndbuf(off);
        let sent = self.sock.send(&self.tx.bytes()[..off])?;
        if sent != off {
            return Err(NlError::Io(io::Error::other(
                "netlink batch was sent partially",
            )));
        }

        match self.collect_acks(first_seq, n_msgs)? {
            None => Ok(()),
            Some(errno) => Err(NlError::Kernel {
                op,
                table: table.to_owned(),
                set: set.to_owned(),
                errno: io::Error::from_raw_os_error(errno),
            }),
        }
    }

    /// Reads the replies to the batch starting at `first_seq` with `n_msgs`
    /// element messages. Returns the first errno reported by the kernel.
    fn collect_acks(&mut self, first_seq: u32, n_msgs: u32) -> Result<Option<i32>, NlError> {
        let end_rel = n_msgs + 1;
        let mut pending = n_msgs;
        let mut failure: Option<i32> = None;
        while pending > 0 {
            let len = match self.sock.recv_raw(self.rx.bytes_mut()) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NlError::Io(io::Error::other(format!(
                        "kernel did not acknowledge {pending} of {n_msgs} netlink messages"
                    ))));
                }
                Err(e) => {
                    // E.g. ENOBUFS (replies dropped) or ENOSPC (truncated).
                    self.drain();
                    return Err(NlError::Io(e));
                }
            };
            let mut batch_rejected = false;
            for msg in mnl::NlMessages::new(&self.rx.bytes()[..len]) {
                let msg = msg?;
                let (Some(msg_type), Some(seq)) = (ne_u16(msg, 4), ne_u32(msg, 8)) else {
                    continue;
                };
                if msg_type != libc::NLMSG_ERROR as u16 {
                    continue;
                }
                let rel = seq.wrapping_sub(first_seq);
                if rel > end_rel {
                    continue; // stale reply to an earlier batch
                }
                let code = ne_u32(msg, 16).map(|v| v as i32).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "short netlink error message")
                })?;
                if rel == 0 || rel == end_rel {
                    // Batch begin/end: only errors are expected here, and an
                    // error means the whole batch was rejected.
                    if code != 0 {
                        failure = Some(-code);
                        batch_rejected = true;
                        break;
                    }
                    continue;
                }
                pending = pending.saturating_sub(1);
                if code != 0 && failure.is_none() {
                    failure = Some(-code);
                }
            }
            if batch_rejected {
                // Per-message replies may still follow (e.g. after a failed
                // commit); drop them so they don't linger in the socket.
                self.drain();
                break;
            }
        }
        Ok(failure)
    }

    /// Discards whatever is queued on the socket.
    fn drain(&mut self) {
        for _ in 0..DRAIN_LIMIT {
            match self.sock.recv_raw(self.rx.bytes_mut()) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    /// Grows `SO_SNDBUF` so that a batch of `len` bytes fits in one sendmsg().
    fn ensure_sndbuf(&mut self, len: usize) {
        // netlink_sendmsg() rejects messages larger than sk_sndbuf - 32.
        if len + 32 <= self.sndbuf {
            return;
        }
        let fd = self.sock.as_raw_fd();
        let want = libc::c_int::try_from(len + 4096).unwrap_or(libc::c_int::MAX);
        // SO_SNDBUFFORCE ignores wmem_max (needs CAP_NET_ADMIN, which writing
        // nftables needs anyway); fall back to the capped SO_SNDBUF.
        if set_int_sockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want).is_err() {
            let _ = set_int_sockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, want);
        }
        if let Ok(v) = get_int_sockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF) {
            self.sndbuf = usize::try_from(v).unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    const TABLE: &str = "rgwtest";
    const RULESET: &str = "table ip rgwtest {
    set resv_addr { type ipv4_addr; flags timeout; }
    set resv_svc { type ipv4_addr . inet_proto . inet_service; flags timeout; }
    map pinholes { type ipv4_addr . inet_proto . ipv4_addr . inet_service : ipv4_addr . inet_service; flags timeout; }
    map pinhole_snat { type ipv4_addr . inet_proto . inet_service . ipv4_addr : ipv4_addr; flags timeout; }
}
";

    fn nft_stdin(script: &str) {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("nft stdin")
            .write_all(script.as_bytes())
            .expect("write ruleset");
        let status = child.wait().expect("wait nft");
        assert!(status.success(), "nft -f - failed: {status}");
    }

    /// `nft -j list set ip rgwtest <set>` in the current thread's netns.
    fn list_set(set: &str) -> String {
        list_obj("set", set)
    }

    fn list_obj(kind: &str, name: &str) -> String {
        let out = Command::new("nft")
            .args(["-j", "list", kind, "ip", TABLE, name])
            .output()
            .expect("run nft list");
        assert!(
            out.status.success(),
            "nft list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    fn count_elems(json: &str) -> usize {
        json.matches("\"elem\": {").count()
    }

    /// Runs `f` in a fresh thread that lives in its own, new network
    /// namespace containing the test ruleset. Needs root.
    fn in_private_netns<F: FnOnce() + Send + 'static>(f: F) {
        crate::dataplane::testns::in_fresh_netns(move || {
            nft_stdin(RULESET);
            f();
        });
    }

    fn writer() -> SetWriter {
        SetWriter::open(libc::NFPROTO_IPV4 as u8).expect("open SetWriter")
    }

    fn svc(a: u8, b: u8, proto: u8, port: u16) -> [u8; 12] {
        key_addr_proto_port(Ipv4Addr::new(10, 1, a, b), proto, port)
    }

    #[test]
    fn key_layout() {
        assert_eq!(key_addr(Ipv4Addr::new(192, 0, 2, 7)), [192, 0, 2, 7]);
        assert_eq!(
            key_addr_proto_port(Ipv4Addr::new(10, 1, 2, 3), 6, 8080),
            [10, 1, 2, 3, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        assert_eq!(timeout_ms(Duration::from_secs(30)), 30_000);
        assert_eq!(timeout_ms(Duration::from_micros(1500)), 2);
        assert_eq!(timeout_ms(Duration::ZERO), 1);
    }

    #[test]
    fn add_with_timeout_is_listed() {
        in_private_netns(|| {
            let mut w = writer();
            let t = Some(Duration::from_secs(30));
            w.add(TABLE, "resv_svc", &svc(2, 3, 6, 8080), t, false)
                .expect("add svc");
            w.add(TABLE, "resv_svc", &svc(2, 4, 17, 53), t, true)
                .expect("create svc");
            w.add(
                TABLE,
                "resv_addr",
                &key_addr(Ipv4Addr::new(10, 1, 2, 3)),
                t,
                false,
            )
            .expect("add addr");
            let svc_json = list_set("resv_svc");
            assert!(
                svc_json.contains(r#"["10.1.2.3", "tcp", 8080]"#),
                "{svc_json}"
            );
            assert!(
                svc_json.contains(r#"["10.1.2.4", "udp", 53]"#),
                "{svc_json}"
            );
            assert!(svc_json.contains(r#""timeout": 30"#), "{svc_json}");
            assert_eq!(count_elems(&svc_json), 2);
            let addr_json = list_set("resv_addr");
            assert!(addr_json.contains(r#""val": "10.1.2.3""#), "{addr_json}");
            assert_eq!(count_elems(&addr_json), 1);
        });
    }

    #[test]
    fn element_expires() {
        in_private_netns(|| {
            let mut w = writer();
            w.add(
                TABLE,
                "resv_svc",
                &svc(9, 9, 6, 443),
                Some(Duration::from_secs(1)),
                false,
            )
            .expect("add");
            let before = list_set("resv_svc");
            assert!(before.contains(r#"["10.1.9.9", "tcp", 443]"#), "{before}");
            std::thread::sleep(Duration::from_millis(1500));
            let after = list_set("resv_svc");
            assert_eq!(count_elems(&after), 0, "{after}");
        });
    }

    #[test]
    fn exclusive_add_of_existing_key_fails_with_eexist() {
        in_private_netns(|| {
            let mut w = writer();
            let key = svc(1, 1, 6, 22);
            let t = Some(Duration::from_secs(60));
            w.add(TABLE, "resv_svc", &key, t, true)
                .expect("first create");
            let err = w
                .add(TABLE, "resv_svc", &key, t, true)
                .expect_err("second create");
            assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
            assert!(
                matches!(
                    err,
                    NlError::Kernel {
                        op: "create element",
                        ..
                    }
                ),
                "{err:?}"
            );
            eprintln!("error display: {err}");
            // Non-exclusive add of the existing key is fine.
            w.add(TABLE, "resv_svc", &key, t, false)
                .expect("add existing");
            assert_eq!(count_elems(&list_set("resv_svc")), 1);
        });
    }

    #[test]
    fn delete_and_delete_missing() {
        in_private_netns(|| {
            let mut w = writer();
            let key = svc(5, 5, 17, 5353);
            w.add(
                TABLE,
                "resv_svc",
                &key,
                Some(Duration::from_secs(60)),
                false,
            )
            .expect("add");
            assert_eq!(count_elems(&list_set("resv_svc")), 1);
            w.delete(TABLE, "resv_svc", &key).expect("delete");
            assert_eq!(count_elems(&list_set("resv_svc")), 0);
            let err = w
                .delete(TABLE, "resv_svc", &key)
                .expect_err("delete missing");
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
            assert!(matches!(err, NlError::Kernel { .. }), "{err:?}");
            // Expired elements are gone as well.
            let addr = key_addr(Ipv4Addr::new(10, 0, 0, 1));
            w.add(
                TABLE,
                "resv_addr",
                &addr,
                Some(Duration::from_millis(100)),
                false,
            )
            .expect("add short");
            std::thread::sleep(Duration::from_millis(300));
            let err = w
                .delete(TABLE, "resv_addr", &addr)
                .expect_err("delete expired");
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        });
    }

    #[test]
    fn map_elements_with_data() {
        in_private_netns(|| {
            let mut w = writer();
            let a = |s: &str| s.parse::<Ipv4Addr>().expect("test address");
            let key = key_pinhole(a("203.0.113.80"), 6, a("198.51.100.2"), 40001);
            let data = data_addr_port(a("192.168.0.101"), 40002);
            w.add_map_many(
                TABLE,
                "pinholes",
                &[(&key[..], &data[..])],
                Some(Duration::from_secs(30)),
            )
            .expect("add pinhole");
            let json = list_obj("map", "pinholes");
            assert!(
                json.contains(r#""203.0.113.80", "tcp", "198.51.100.2", 40001"#),
                "{json}"
            );
            assert!(json.contains(r#""192.168.0.101", 40002"#), "{json}");
            let skey = key_pinhole_snat(a("192.168.0.101"), 17, 6000, a("203.0.113.10"));
            let sdata = key_addr(a("198.51.100.17"));
            w.add_map_many(
                TABLE,
                "pinhole_snat",
                &[(&skey[..], &sdata[..])],
                Some(Duration::from_secs(30)),
            )
            .expect("add snat pinhole");
            let json = list_obj("map", "pinhole_snat");
            assert!(
                json.contains(r#""192.168.0.101", "udp", 6000, "203.0.113.10""#),
                "{json}"
            );
            assert!(json.contains("198.51.100.17"), "{json}");
        });
    }

    /// Nothing may be left queued on the writer's socket.
    fn assert_socket_empty(w: &SetWriter) {
        let mut buf = [0u8; 64];
        // SAFETY: plain non-blocking peek into a local buffer.
        let rc = unsafe {
            libc::recv(
                w.sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_PEEK,
            )
        };
        assert_eq!(rc, -1, "stale data left on the socket");
    }

    #[test]
    fn map_elems_of_two_maps_in_one_batch() {
        in_private_netns(|| {
            let mut w = writer();
            let a = |s: &str| s.parse::<Ipv4Addr>().expect("test address");
            let t = Some(Duration::from_secs(30));
            let k1 = key_pinhole(a("203.0.113.80"), 17, a("198.51.100.2"), 6000);
            let d1 = data_addr_port(a("192.168.0.101"), 6000);
            let k2 = key_pinhole(a("203.0.113.80"), 17, a("198.51.100.2"), 6001);
            let d2 = data_addr_port(a("192.168.0.101"), 6001);
            let s1 = key_pinhole_snat(a("192.168.0.101"), 17, 6000, a("203.0.113.80"));
            let sd = key_addr(a("198.51.100.2"));
            let elems = [
                MapElem {
                    map: "pinholes",
                    key: &k1,
                    data: &d1,
                    timeout: t,
                },
                MapElem {
                    map: "pinhole_snat",
                    key: &s1,
                    data: &sd,
                    timeout: t,
                },
                MapElem {
                    map: "pinholes",
                    key: &k2,
                    data: &d2,
                    timeout: Some(Duration::from_secs(60)),
                },
            ];
            w.add_map_elems(TABLE, &elems).expect("batch");
            assert_socket_empty(&w);
            let json = list_obj("map", "pinholes");
            assert_eq!(count_elems(&json), 2, "{json}");
            assert!(json.contains(r#""192.168.0.101", 6001"#), "{json}");
            assert!(json.contains(r#""timeout": 60"#), "{json}");
            let json = list_obj("map", "pinhole_snat");
            assert_eq!(count_elems(&json), 1, "{json}");
            assert!(json.contains("198.51.100.2"), "{json}");
            // The same elements again: refreshed, no error.
            w.add_map_elems(TABLE, &elems).expect("same batch again");
            assert_socket_empty(&w);
            // A key mapping to other data fails the whole batch (EEXIST),
            // also when it is not the last element, and nothing of the
            // batch is committed.
            let k3 = key_pinhole(a("203.0.113.80"), 17, a("198.51.100.2"), 6002);
            let other = data_addr_port(a("192.168.0.102"), 6000);
            let bad = [
                MapElem {
                    map: "pinholes",
                    key: &k1,
                    data: &other,
                    timeout: t,
                },
                MapElem {
                    map: "pinholes",
                    key: &k3,
                    data: &d1,
                    timeout: t,
                },
            ];
            let err = w.add_map_elems(TABLE, &bad).expect_err("clash");
            assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
            assert_socket_empty(&w);
            let json = list_obj("map", "pinholes");
            assert_eq!(count_elems(&json), 2, "{json}");
            assert!(!json.contains("6002"), "{json}");
            // A missing map is ENOENT; the writer goes on working.
            let missing = [MapElem {
                map: "nosuchmap",
                key: &k3,
                data: &d1,
                timeout: t,
            }];
            let err = w.add_map_elems(TABLE, &missing).expect_err("missing map");
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
            assert_socket_empty(&w);
            w.add_map_elems(TABLE, &bad[1..]).expect("after errors");
            assert_eq!(count_elems(&list_obj("map", "pinholes")), 3);
            assert_socket_empty(&w);
            w.add_map_elems(TABLE, &[]).expect("empty batch is a no-op");
        });
    }

    #[test]
    fn ipv6_pinhole_map_elements() {
        crate::dataplane::testns::in_fresh_netns(|| {
            nft_stdin(
                "table ip6 rgwtest {
    map pinholes6 { type ipv6_addr . inet_proto . ipv6_addr . inet_service : ipv6_addr . inet_service; flags timeout; }
}
",
            );
            let mut w = SetWriter::open(libc::NFPROTO_IPV6 as u8).expect("open netlink");
            let a = |s: &str| s.parse::<Ipv6Addr>().expect("test address");
            let key = key_pinhole6(a("2001:db8::80"), 6, a("2001:db8:100::2"), 40001);
            let data = data_addr6_port(a("fd64:64::c0a8:65"), 40002);
            w.add_map_many(
                TABLE,
                "pinholes6",
                &[(&key[..], &data[..])],
                Some(Duration::from_secs(30)),
            )
            .expect("add IPv6 pinhole");
            let out = Command::new("nft")
                .args(["-j", "list", "map", "ip6", TABLE, "pinholes6"])
                .output()
                .expect("run nft list");
            let json = String::from_utf8_lossy(&out.stdout);
            assert!(
                json.contains(r#""2001:db8::80", "tcp", "2001:db8:100::2", 40001"#),
                "{json}"
            );
            assert!(json.contains(r#""fd64:64::c0a8:65", 40002"#), "{json}");
        });
    }

    #[test]
    fn add_many_thousand_in_one_batch() {
        in_private_netns(|| {
            let mut w = writer();
            let keys: Vec<[u8; 12]> = (0..1000u16)
                .map(|i| svc((i >> 8) as u8, i as u8, 6, 1000 + i))
                .collect();
            let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            w.add_many(TABLE, "resv_svc", &refs, Some(Duration::from_secs(120)))
                .expect("add_many");
            let json = list_set("resv_svc");
            assert_eq!(count_elems(&json), 1000);
            assert!(json.contains(r#"["10.1.3.231", "tcp", 1999]"#));
            // Re-adding the same keys is not an error.
            w.add_many(TABLE, "resv_svc", &refs, Some(Duration::from_secs(120)))
                .expect("add_many again");
            assert_eq!(count_elems(&list_set("resv_svc")), 1000);
        });
    }

    #[test]
    fn add_many_multi_message_batch_is_atomic() {
        in_private_netns(|| {
            let mut w = writer();
            // 5000 keys need several element messages in the batch.
            let keys: Vec<[u8; 12]> = (0..5000u16)
                .map(|i| svc((i >> 8) as u8, i as u8, 17, i))
                .collect();
            let mut refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            let elems: Vec<Elem<'_>> = refs.iter().map(|k| (*k, None)).collect();
            assert!(chunk_len(&elems) < refs.len());
            // A key of the wrong length at the end makes the kernel refuse
            // the last message; nothing of the batch may be committed.
            let bad = [1u8, 2, 3, 4];
            refs.push(&bad);
            let err = w
                .add_many(TABLE, "resv_svc", &refs, Some(Duration::from_secs(60)))
                .expect_err("bad key must fail the batch");
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
            assert_eq!(count_elems(&list_set("resv_svc")), 0);
            refs.pop();
            w.add_many(TABLE, "resv_svc", &refs, Some(Duration::from_secs(60)))
                .expect("add_many 5000");
            assert_eq!(count_elems(&list_set("resv_svc")), 5000);
        });
    }

    #[test]
    fn missing_set_is_enoent_and_writer_keeps_working() {
        in_private_netns(|| {
            let mut w = writer();
            let key = svc(7, 7, 6, 80);
            let t = Some(Duration::from_secs(60));
            for _ in 0..3 {
                let err = w
                    .add(TABLE, "nosuchset", &key, t, false)
                    .expect_err("missing set");
                assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
                let err = w
                    .add("nosuchtable", "resv_svc", &key, t, true)
                    .expect_err("missing table");
                assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
                let err = w
                    .delete(TABLE, "nosuchset", &key)
                    .expect_err("delete missing set");
                assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
            }
            w.add(TABLE, "resv_svc", &key, t, true)
                .expect("add after errors");
            w.delete(TABLE, "resv_svc", &key)
                .expect("delete after errors");
            w.add(TABLE, "resv_svc", &key, t, true).expect("add again");
            assert_eq!(count_elems(&list_set("resv_svc")), 1);
            // Nothing may be left queued on the socket.
            let mut buf = [0u8; 64];
            // SAFETY: plain non-blocking peek into a local buffer.
            let rc = unsafe {
                libc::recv(
                    w.sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_PEEK,
                )
            };
            assert_eq!(rc, -1, "stale data left on the socket");
        });
    }

    #[test]
    fn invalid_input_is_rejected_locally() {
        in_private_netns(|| {
            let mut w = writer();
            let err = w
                .add(TABLE, "resv_addr", &[], None, false)
                .expect_err("empty key");
            assert!(matches!(err, NlError::Io(_)), "{err:?}");
            let err = w
                .add(TABLE, "bad\0name", &[1, 2, 3, 4], None, false)
                .expect_err("nul");
            assert!(matches!(err, NlError::Io(_)), "{err:?}");
            w.add_many(TABLE, "resv_addr", &[], None)
                .expect("empty add_many is a no-op");
            w.add(TABLE, "resv_addr", &[1, 2, 3, 4], None, false)
                .expect("add still works");
        });
    }

    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }

    /// Raises or lowers CAP_NET_ADMIN in the calling thread's effective set.
    fn set_net_admin_effective(on: bool) {
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        const CAP_NET_ADMIN: u32 = 12;
        let mut hdr = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: capget/capset with a v3 header and a two-element data array,
        // as the kernel ABI requires; both point to live locals.
        unsafe {
            let rc = libc::syscall(
                libc::SYS_capget,
                &mut hdr as *mut CapHeader,
                data.as_mut_ptr(),
            );
            assert_eq!(rc, 0, "capget: {}", io::Error::last_os_error());
            if on {
                data[0].effective |= 1 << CAP_NET_ADMIN;
            } else {
                data[0].effective &= !(1 << CAP_NET_ADMIN);
            }
            let rc = libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr());
            assert_eq!(rc, 0, "capset: {}", io::Error::last_os_error());
        }
    }

    /// A whole-batch rejection is reported against the batch-begin message
    /// (here EPERM from nfnetlink_rcv); it must be mapped to a Kernel error
    /// without waiting for per-message acks, and the writer must recover.
    #[test]
    fn batch_level_error_is_reported_and_writer_recovers() {
        in_private_netns(|| {
            let mut w = writer();
            let key = svc(8, 8, 6, 8);
            let t = Some(Duration::from_secs(60));
            set_net_admin_effective(false);
            let res = w.add(TABLE, "resv_svc", &key, t, true);
            set_net_admin_effective(true);
            let err = res.expect_err("add without CAP_NET_ADMIN");
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
            assert!(matches!(err, NlError::Kernel { .. }), "{err:?}");
            w.add(TABLE, "resv_svc", &key, t, true)
                .expect("add with CAP_NET_ADMIN");
            assert_eq!(count_elems(&list_set("resv_svc")), 1);
        });
    }

    #[test]
    fn writer_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<SetWriter>();
    }

    /// Micro-measurement: mean time of single `add` calls (printed, not asserted).
    #[test]
    fn measure_single_add() {
        in_private_netns(|| {
            let mut w = writer();
            let t = Some(Duration::from_secs(300));
            const N: u32 = 10_000;
            // Warm-up (socket buffers, allocator, set hash table).
            for i in 0..100u16 {
                w.add(
                    TABLE,
                    "resv_addr",
                    &key_addr(Ipv4Addr::new(10, 9, 0, i as u8)),
                    t,
                    false,
                )
                .expect("warm-up add");
            }
            let start = Instant::now();
            for i in 0..N {
                let key = key_addr_proto_port(Ipv4Addr::from(0x0a00_0000 | i), 6, 443);
                w.add(TABLE, "resv_svc", &key, t, false).expect("add");
            }
            let elapsed = start.elapsed();
            eprintln!(
                "nlset: {N} single adds took {elapsed:?}, mean {:.2} µs per add",
                elapsed.as_secs_f64() * 1e6 / f64::from(N)
            );
            assert_eq!(count_elems(&list_set("resv_svc")), N as usize);
        });
    }
}

//! The binding log: one line per claim, kept so that an operator can answer
//! "which private host was behind R:port at time t" for inbound flows.
//!
//! A claim is the moment the NFQUEUE gate gives a reservation to a first
//! packet. From then on conntrack carries the flow's DNAT and userspace never
//! sees it again, so the claim is the only point where the binding
//! (R, proto, port, remote) → private host can be recorded. The record marks
//! the start of the flow; its end is known only to conntrack
//! (`conntrack -E`), see `docs/binding-log.md`.
//!
//! The line format (one record per line, fields separated by one space):
//!
//! ```text
//! 2026-11-22T15:54:38.123Z 198.51.100.17 tcp 22 hosta 192.168.0.101 from=203.0.113.10:59522 res=203.0.113.54 ecs=-
//! ```
//!
//! time (UTC, RFC 3339, milliseconds), public address R, protocol, port (`-`
//! for a first packet without ports, e.g. ICMP), host name
//! (percent-encoded outside `[A-Za-z0-9._-]`; `-` when empty), private
//! address, then `key=value` fields: `from=` the remote address and port of
//! the claiming packet, `res=` the resolver that asked for the name, `ecs=`
//! the EDNS Client Subnet that resolver sent (`-` when not known). Readers
//! ignore unknown `key=value` fields, so fields can be added later.
//!
//! **The remote is logged.** In RGW a public address is not owned by one
//! host: after a claim R goes back to the pool at once, and the next claim
//! of R (or of the same R, proto, port) can bind another host while the
//! first flow still runs. Conntrack tells those flows apart only by the
//! remote address and port, so without them (R, proto, port, t) names a set
//! of candidates, every claim of that key whose flow may still be alive at
//! t. The remote is what an abuse report gives (the reporter's own address
//! and source port) and what makes the answer unique. It is the initiator of
//! an inbound flow to a name the subscriber published, not a destination the
//! subscriber chose: destinations of outbound flows are never logged here.
//!
//! [`BindingLog`] writes to a file with size and daily rotation;
//! [`spawn_writer`] runs it in its own thread behind a bounded channel so
//! that the claim path never waits for the disk.
//!
//! Only `std` is used; times are formatted and parsed here without a date
//! crate (proleptic Gregorian calendar, years 0000–9999).

use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---- the record ------------------------------------------------------------------

/// One claim: the binding an operator needs for attribution of an inbound flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRecord {
    /// When the claim was decided (written with millisecond precision, truncated).
    pub time: SystemTime,
    /// The public pool address R the first packet was sent to.
    pub public: Ipv4Addr,
    /// IP protocol number of the first packet (6 TCP, 17 UDP, 1 ICMP, ...).
    pub proto: u8,
    /// Destination port of the first packet; None when it has no ports
    /// (e.g. ICMP claiming a whole-address reservation).
    pub port: Option<u16>,
    /// The private address the flow is NATed to.
    pub private: Ipv4Addr,
    /// The host's name in the zone.
    pub host: String,
    /// The source address of the claiming first packet (the public peer).
    pub remote: Ipv4Addr,
    /// The source port of the claiming first packet; None without ports.
    pub remote_port: Option<u16>,
    /// The address the reserving DNS query came from (usually a resolver).
    pub resolver: Option<IpAddr>,
    /// The EDNS Client Subnet (address, source prefix length) of that query.
    pub client_subnet: Option<(IpAddr, u8)>,
}

/// Why a line is not a binding record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLineError {
    /// The field at fault (`time`, `public`, `proto`, `port`, `host`,
    /// `private`, `from`, `res`, `ecs`).
    pub field: &'static str,
    /// The text found, empty when the field is missing.
    pub found: String,
}

impl fmt::Display for ParseLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.found.is_empty() {
            write!(f, "binding log line: field `{}` missing", self.field)
        } else {
            write!(
                f,
                "binding log line: field `{}`: cannot parse {:?}",
                self.field, self.found
            )
        }
    }
}

impl std::error::Error for ParseLineError {}

fn bad(field: &'static str, found: &str) -> ParseLineError {
    ParseLineError {
        field,
        found: found.to_string(),
    }
}

/// Protocol names written in the log; other protocols are written as numbers.
const PROTO_NAMES: &[(u8, &str)] = &[
    (1, "icmp"),
    (6, "tcp"),
    (17, "udp"),
    (33, "dccp"),
    (47, "gre"),
    (50, "esp"),
    (51, "ah"),
    (132, "sctp"),
    (136, "udplite"),
];

fn proto_name(p: u8) -> Option<&'static str> {
    PROTO_NAMES.iter().find(|(n, _)| *n == p).map(|(_, s)| *s)
}

fn parse_proto(s: &str) -> Option<u8> {
    PROTO_NAMES
        .iter()
        .find(|(_, name)| *name == s)
        .map(|(n, _)| *n)
        .or_else(|| parse_decimal(s).and_then(|n| u8::try_from(n).ok()))
}

/// Digits only (no sign, no spaces), at most 10 of them.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_port(s: &str) -> Option<Option<u16>> {
    if s == "-" {
        return Some(None);
    }
    parse_decimal(s)
        .and_then(|n| u16::try_from(n).ok())
        .map(Some)
}

fn host_byte_is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn write_host(out: &mut impl fmt::Write, host: &str) -> fmt::Result {
    match host {
        "" => out.write_char('-'),
        "-" => out.write_str("%2D"),
        _ if host.bytes().all(host_byte_is_plain) => out.write_str(host),
        _ => {
            for b in host.bytes() {
                if host_byte_is_plain(b) {
                    out.write_char(char::from(b))?;
                } else {
                    write!(out, "%{b:02X}")?;
                }
            }
            Ok(())
        }
    }
}

fn parse_host(s: &str) -> Option<String> {
    if s == "-" {
        return Some(String::new());
    }
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn max_prefix(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

fn parse_subnet(s: &str) -> Option<(IpAddr, u8)> {
    let (a, len) = s.split_once('/')?;
    let a: IpAddr = a.parse().ok()?;
    let len = u8::try_from(parse_decimal(len)?).ok()?;
    (len <= max_prefix(a)).then_some((a, len))
}

fn parse_opt<T>(s: &str, f: impl FnOnce(&str) -> Option<T>) -> Option<Option<T>> {
    if s == "-" {
        Some(None)
    } else {
        f(s).map(Some)
    }
}

impl fmt::Display for BindingRecord {
    /// The record as one log line, without the newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_time(f, self.time)?;
        write!(f, " {} ", self.public)?;
        match proto_name(self.proto) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "{}", self.proto)?,
        }
        match self.port {
            Some(p) => write!(f, " {p} ")?,
            None => f.write_str(" - ")?,
        }
        write_host(f, &self.host)?;
        write!(f, " {} from={}", self.private, self.remote)?;
        if let Some(p) = self.remote_port {
            write!(f, ":{p}")?;
        }
        match self.resolver {
            Some(a) => write!(f, " res={a}")?,
            None => f.write_str(" res=-")?,
        }
        match self.client_subnet {
            // A prefix longer than the address is written as the full length.
            Some((a, len)) => write!(f, " ecs={a}/{}", len.min(max_prefix(a))),
            None => f.write_str(" ecs=-"),
        }
    }
}

impl BindingRecord {
    /// Parses one line written by [`BindingLog`] (a trailing newline is
    /// allowed). Fields may be separated by any ASCII whitespace; unknown
    /// `key=value` fields after the private address are ignored, a repeated
    /// one is an error. `res` and `ecs` may be absent (None); `from` is
    /// required.
    pub fn parse_line(line: &str) -> Result<BindingRecord, ParseLineError> {
        let mut it = line.split_ascii_whitespace();
        let mut next = |field: &'static str| it.next().ok_or_else(|| bad(field, ""));
        let t = next("time")?;
        let time = parse_time(t).ok_or_else(|| bad("time", t))?;
        let s = next("public")?;
        let public = s.parse().map_err(|_| bad("public", s))?;
        let s = next("proto")?;
        let proto = parse_proto(s).ok_or_else(|| bad("proto", s))?;
        let s = next("port")?;
        let port = parse_port(s).ok_or_else(|| bad("port", s))?;
        let s = next("host")?;
        let host = parse_host(s).ok_or_else(|| bad("host", s))?;
        let s = next("private")?;
        let private = s.parse().map_err(|_| bad("private", s))?;

        let mut from = None;
        let mut resolver = None;
        let mut client_subnet = None;
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(bad("key=value", kv));
            };
            match k {
                "from" if from.is_none() => {
                    let (a, p) = match v.split_once(':') {
                        Some((a, p)) => (a, parse_decimal(p).and_then(|n| u16::try_from(n).ok())),
                        None => (v, None),
                    };
                    let a: Ipv4Addr = a.parse().map_err(|_| bad("from", v))?;
                    if v.contains(':') && p.is_none() {
                        return Err(bad("from", v));
                    }
                    from = Some((a, p));
                }
                "res" if resolver.is_none() => {
                    resolver = Some(parse_opt(v, |s| s.parse().ok()).ok_or_else(|| bad("res", v))?);
                }
                "ecs" if client_subnet.is_none() => {
                    client_subnet = Some(parse_opt(v, parse_subnet).ok_or_else(|| bad("ecs", v))?);
                }
                "from" => return Err(bad("from", kv)),
                "res" => return Err(bad("res", kv)),
                "ecs" => return Err(bad("ecs", kv)),
                _ => {}
            }
        }
        let (remote, remote_port) = from.ok_or_else(|| bad("from", ""))?;
        Ok(BindingRecord {
            time,
            public,
            proto,
            port,
            private,
            host,
            remote,
            remote_port,
            resolver: resolver.flatten(),
            client_subnet: client_subnet.flatten(),
        })
    }
}

// ---- time: RFC 3339 UTC with milliseconds, no date crate --------------------------

const MS_PER_DAY: i64 = 86_400_000;
/// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z in Unix milliseconds:
/// the range a four-digit year can show. Times outside are clamped to it.
const MIN_MS: i64 = -719_528 * MS_PER_DAY;
const MAX_MS: i64 = 2_932_897 * MS_PER_DAY - 1;

/// Milliseconds since the Unix epoch, rounded down (negative before 1970).
fn unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            let partial = d.as_nanos() % 1_000_000 != 0;
            -ms - i64::from(partial)
        }
    }
}

/// The UTC day of `t`, as days since 1970-01-01.
fn utc_day(t: SystemTime) -> i64 {
    unix_millis(t).div_euclid(MS_PER_DAY)
}

/// (year, month 1–12, day 1–31) of a count of days since 1970-01-01 in the
/// proleptic Gregorian calendar (H. Hinnant's `civil_from_days`: 400-year
/// eras of 146 097 days, years starting on 1 March so that the leap day is
/// the last day of the year).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from 1 March, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // month is 1..=12 and day 1..=31 by construction.
    (year, month as u32, day as u32)
}

/// Days since 1970-01-01 of a date (the inverse of [`civil_from_days`]);
/// the date is not validated.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn write_time(out: &mut impl fmt::Write, t: SystemTime) -> fmt::Result {
    let ms = unix_millis(t).clamp(MIN_MS, MAX_MS);
    let (y, mo, d) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    let in_day = ms.rem_euclid(MS_PER_DAY);
    write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds truncated; clamped
/// to years 0000–9999).
pub fn format_time(t: SystemTime) -> String {
    let mut s = String::with_capacity(24);
    // Writing to a String cannot fail.
    let _ = write_time(&mut s, t);
    s
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.f]Z` (UTC only, `T` and `Z` in upper case,
/// 1–9 fraction digits, no leap second). None when it is not such a time or
/// not a real date.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| parse_decimal(s.get(r)?);
    let year = i64::try_from(num(0..4)?).ok()?;
    let month = u32::try_from(num(5..7)?).ok()?;
    let day = u32::try_from(num(8..10)?).ok()?;
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
            let digits = s.get(20..b.len() - 1)?;
            let n = parse_decimal(digits)?;
            n * 10u64.pow(9 - u32::try_from(frac.len()).ok()?)
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::try_from(h * 3600 + mi * 60 + sec).ok()?;
    let nanos = u32::try_from(nanos).ok()?;
    if secs >= 0 {
        Some(UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos))
    } else {
        let back =
            Duration::from_secs(secs.unsigned_abs()) - Duration::from_nanos(u64::from(nanos));
        UNIX_EPOCH.checked_sub(back)
    }
}

// ---- the file --------------------------------------------------------------------

/// When [`BindingLog`] rotates its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a record would take the file past this many bytes;
    /// 0 = never by size.
    pub max_bytes: u64,
    /// Rotated files kept: `<path>.1` (newest) … `<path>.<keep>` (oldest).
    /// 0 = a rotation deletes the old file.
    pub keep: u32,
    /// Also rotate at the first record written on a new UTC day.
    pub daily: bool,
}

impl Default for Rotation {
    /// 256 MiB, 30 files, daily: a month of daily files while a day fits in
    /// 256 MiB, and never more than 31 × 256 MiB on disk.
    fn default() -> Self {
        Rotation {
            max_bytes: 256 * 1024 * 1024,
            keep: 30,
            daily: true,
        }
    }
}

/// An `append` flushes when the previous flush is at least this old.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// After a failed rotation the next attempt waits this long (records go on
/// into the current file meanwhile).
pub const ROTATION_RETRY: Duration = Duration::from_secs(60);
const BUFFER_BYTES: usize = 64 * 1024;

/// The binding log file: appends lines, rotates by size and by UTC day,
/// reopens on request (external logrotate).
///
/// Records are buffered (64 KiB) and written to the kernel when the buffer
/// fills, when an append finds the last flush at least [`FLUSH_INTERVAL`]
/// old, and on [`BindingLog::flush`]. The caller must call `flush` at least
/// once a second while idle (the writer of [`spawn_writer`] does), and before
/// exiting. Nothing is fsynced: a daemon crash loses nothing already
/// flushed, a power loss may lose what the page cache held.
#[derive(Debug)]
pub struct BindingLog {
    path: PathBuf,
    rotation: Rotation,
    out: Option<BufWriter<File>>,
    /// Regular file: rotation applies. Anything else (`/dev/stdout`, a
    /// character device) is only appended to.
    regular: bool,
    /// Bytes in the current file, buffered ones included.
    size: u64,
    /// UTC day of the current file's records; None while it is empty.
    day: Option<i64>,
    last_flush: Option<SystemTime>,
    /// No rotation attempt before this time (after a failure).
    rotation_retry_at: Option<SystemTime>,
    /// An error not returned by the call that met it (a failed rotation).
    deferred: Option<io::Error>,
    rotations: u64,
    line: String,
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Opens for appending; a new file is created with mode 0640 (set
/// explicitly, whatever the umask). An existing file keeps its mode.
fn open_append(path: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
    {
        Ok(f) => {
            f.set_permissions(fs::Permissions::from_mode(0o640))?;
            Ok(f)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path)
        }
        Err(e) => Err(e),
    }
}

/// `<path>.<i>`
pub fn rotated_path(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

fn remove_if_present(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(p, e)),
        _ => Ok(()),
    }
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(from, e)),
        _ => Ok(()),
    }
}

impl BindingLog {
    /// Opens (or creates, mode 0640) `path` for appending. The directory must
    /// exist. A non-empty existing file counts as written on the UTC day of
    /// its modification time, so a restart on a later day rotates it at the
    /// first record when `daily` is set.
    pub fn open(path: impl Into<PathBuf>, rotation: Rotation) -> io::Result<BindingLog> {
        let mut log = BindingLog {
            path: path.into(),
            rotation,
            out: None,
            regular: true,
            size: 0,
            day: None,
            last_flush: None,
            rotation_retry_at: None,
            deferred: None,
            rotations: 0,
            line: String::with_capacity(256),
        };
        log.open_current()?;
        Ok(log)
    }

    fn open_current(&mut self) -> io::Result<()> {
        let f = open_append(&self.path).map_err(|e| with_path(&self.path, e))?;
        let meta = f.metadata().map_err(|e| with_path(&self.path, e))?;
        self.regular = meta.file_type().is_file();
        self.size = if self.regular { meta.len() } else { 0 };
        self.day = match meta.modified() {
            Ok(m) if self.size > 0 => Some(utc_day(m)),
            _ => None,
        };
        self.out = Some(BufWriter::with_capacity(BUFFER_BYTES, f));
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the current file, including those still buffered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Rotations done since open.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Takes the last error met but not returned: a failed rotation (the
    /// records went on into the current file; retried after
    /// [`ROTATION_RETRY`]).
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.deferred.take()
    }

    /// Appends `rec` as of the system clock: see [`BindingLog::append_at`].
    pub fn append(&mut self, rec: &BindingRecord) -> io::Result<()> {
        self.append_at(rec, SystemTime::now())
    }

    /// Appends `rec`; `now` decides daily rotation and the periodic flush.
    ///
    /// Err when the record could not be buffered (an earlier buffer could
    /// not be written out: it stays buffered and is retried) or when the
    /// flush this append made failed (the record stays buffered). A failed
    /// rotation is not an error of the record: the record goes into the
    /// current file and the error is kept for [`BindingLog::take_error`].
    pub fn append_at(&mut self, rec: &BindingRecord, now: SystemTime) -> io::Result<()> {
        self.line.clear();
        // Writing to a String cannot fail.
        let _ = writeln!(self.line, "{rec}");
        let len = self.line.len() as u64;
        let today = utc_day(now);
        if self.rotation_due(len, today, now) {
            if let Err(e) = self.rotate() {
                self.rotation_retry_at = now.checked_add(ROTATION_RETRY);
                self.deferred = Some(e);
            }
        }
        if self.out.is_none() {
            self.open_current()?;
        }
        let Some(out) = self.out.as_mut() else {
            return Err(io::Error::other("binding log not open"));
        };
        out.write_all(self.line.as_bytes())
            .map_err(|e| with_path(&self.path, e))?;
        self.size += len;
        self.day.get_or_insert(today);
        let flush_due = match self.last_flush {
            None => true,
            // A clock that went back also flushes.
            Some(t) => now.duration_since(t).map_or(true, |d| d >= FLUSH_INTERVAL),
        };
        if flush_due {
            self.last_flush = Some(now);
            self.flush()?;
        }
        Ok(())
    }

    fn rotation_due(&self, len: u64, today: i64, now: SystemTime) -> bool {
        if !self.regular || self.size == 0 {
            return false;
        }
        if self.rotation_retry_at.is_some_and(|t| now < t) {
            return false;
        }
        let by_size = self.rotation.max_bytes > 0 && self.size + len > self.rotation.max_bytes;
        let by_day = self.rotation.daily && self.day.is_some_and(|d| d != today);
        by_size || by_day
    }

    /// Flushes, shifts `<path>.i` to `.i+1` (dropping `.keep`), renames the
    /// current file to `.1`, and opens a new one. On a failed flush or
    /// rename the current file stays open and in use.
    fn rotate(&mut self) -> io::Result<()> {
        self.flush()?;
        let keep = self.rotation.keep;
        if keep == 0 {
            remove_if_present(&self.path)?;
        } else {
            remove_if_present(&rotated_path(&self.path, keep))?;
            for i in (1..keep).rev() {
                rename_if_present(
                    &rotated_path(&self.path, i),
                    &rotated_path(&self.path, i + 1),
                )?;
            }
            rename_if_present(&self.path, &rotated_path(&self.path, 1))?;
        }
        self.rotations += 1;
        self.rotation_retry_at = None;
        self.out = None;
        self.size = 0;
        self.day = None;
        // If this fails the next append tries again (and returns the error).
        self.open_current()
    }

    /// Writes buffered records to the file (no fsync).
    pub fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush().map_err(|e| with_path(&self.path, e)),
            None => Ok(()),
        }
    }

    /// Closes the file and opens `path` again, creating it if it was moved
    /// away: call after an external rotation (logrotate, then SIGHUP).
    /// Buffered records are flushed into the old file first; if that fails
    /// they are dropped, the new file is opened anyway and the flush error is
    /// returned.
    pub fn reopen(&mut self) -> io::Result<()> {
        let flushed = self.flush();
        if let Some(out) = self.out.take() {
            // Without flushing again: a failed buffer is dropped here.
            let _ = out.into_parts();
        }
        self.rotation_retry_at = None;
        self.open_current()?;
        flushed
    }
}

// ---- the writer thread -----------------------------------------------------------

/// Counters shared by the senders and the writer thread (relaxed atomics).
#[derive(Debug, Default)]
pub struct WriterState {
    /// Records appended by the writer.
    pub written: AtomicU64,
    /// Records not queued: the channel was full, or the writer had stopped.
    pub dropped: AtomicU64,
    /// I/O errors met by the writer (appends, flushes, rotations, reopens).
    pub errors: AtomicU64,
    reopen: AtomicBool,
    close: AtomicBool,
}

#[derive(Debug)]
enum Msg {
    Record(BindingRecord),
    /// Look at the reopen and close flags now rather than at the next tick.
    Wake,
}

/// The claim path's end of the binding log: never blocks.
#[derive(Clone, Debug)]
pub struct BindingSender {
    tx: SyncSender<Msg>,
    state: Arc<WriterState>,
}

impl BindingSender {
    /// Queues `rec` for the writer. False (and `dropped` counted) when the
    /// queue is full or the writer has stopped. Never blocks.
    pub fn try_send(&self, rec: BindingRecord) -> bool {
        if self.state.close.load(Ordering::Relaxed) {
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(Msg::Record(rec)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.state.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records dropped so far.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// The counters, to show in metrics or status.
    pub fn state(&self) -> Arc<WriterState> {
        Arc::clone(&self.state)
    }

    /// Asks the writer to reopen the file (after logrotate moved it; call
    /// from the SIGHUP handler). Done before the next record is written when
    /// the queue has room, else within a second.
    pub fn reopen(&self) {
        self.state.reopen.store(true, Ordering::Relaxed);
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Asks the writer to write what is queued, flush and exit; join its
    /// handle afterwards. Later `try_send` calls return false. A record sent
    /// by another thread at the very moment the writer exits can be lost
    /// without being counted: stop the claim path first if that matters.
    pub fn close(&self) {
        self.state.close.store(true, Ordering::Relaxed);
        let _ = self.tx.try_send(Msg::Wake);
    }
}

/// [`spawn_writer_with`] without an error callback (errors are only counted).
pub fn spawn_writer(
    log: BindingLog,
    capacity: usize,
) -> io::Result<(BindingSender, JoinHandle<()>)> {
    spawn_writer_with(log, capacity, |_| {})
}

/// Runs `log` in a thread named `bindlog` behind a channel of `capacity`
/// records (at least 1). The thread appends records as they come, flushes
/// every second, reopens on [`BindingSender::reopen`], and exits after
/// writing and flushing what is queued on [`BindingSender::close`] or when
/// every sender is dropped. `on_error` is called from the writer thread with
/// I/O errors, at most once per 10 s (each one is counted in `errors`).
pub fn spawn_writer_with(
    log: BindingLog,
    capacity: usize,
    on_error: impl FnMut(&io::Error) + Send + 'static,
) -> io::Result<(BindingSender, JoinHandle<()>)> {
    let (tx, rx) = mpsc::sync_channel(capacity.max(1));
    let state = Arc::new(WriterState::default());
    let st = Arc::clone(&state);
    let handle = std::thread::Builder::new()
        .name("bindlog".into())
        .spawn(move || writer_loop(log, &rx, &st, on_error))?;
    Ok((BindingSender { tx, state }, handle))
}

const TICK: Duration = Duration::from_secs(1);
const ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(10);

struct ErrorReporter<F> {
    on_error: F,
    last: Option<Instant>,
}

impl<F: FnMut(&io::Error)> ErrorReporter<F> {
    fn report(&mut self, st: &WriterState, e: &io::Error) {
        st.errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= ERROR_REPORT_INTERVAL)
        {
            self.last = Some(now);
            (self.on_error)(e);
        }
    }
}

fn writer_loop(
    mut log: BindingLog,
    rx: &Receiver<Msg>,
    st: &WriterState,
    on_error: impl FnMut(&io::Error),
) {
    let mut errs = ErrorReporter {
        on_error,
        last: None,
    };
    let mut next_tick = Instant::now() + TICK;
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let disconnected = match rx.recv_timeout(wait) {
            Ok(Msg::Record(rec)) => {
                match log.append(&rec) {
                    Ok(()) => {
                        st.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errs.report(st, &e),
                }
                false
            }
            Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if let Some(e) = log.take_error() {
            errs.report(st, &e);
        }
        if st.reopen.swap(false, Ordering::Relaxed) {
            if let Err(e) = log.reopen() {
                errs.report(st, &e);
            }
        }
        if disconnected || st.close.load(Ordering::Relaxed) {
            // Senders may still hold queued records: write them, then stop.
            while let Ok(msg) = rx.try_recv() {
                if let Msg::Record(rec) = msg {
                    match log.append(&rec) {
                        Ok(()) => {
                            st.written.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errs.report(st, &e),
                    }
                }
            }
            if let Err(e) = log.flush() {
                errs.report(st, &e);
            }
            return;
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + TICK;
            if let Err(e) = log.flush() {
                errs.report(st, &e);
            }
        }
    }
}

// ---- tests -----------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: i64) -> SystemTime {
        if ms >= 0 {
            UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
        }
    }

    fn t(s: &str) -> SystemTime {
        parse_time(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bindlog-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn rec(time: SystemTime, port: u16) -> BindingRecord {
        BindingRecord {
            time,
            public: Ipv4Addr::new(198, 51, 100, 17),
            proto: 6,
            port: Some(port),
            private: Ipv4Addr::new(192, 168, 0, 101),
            host: "hosta".into(),
            remote: Ipv4Addr::new(203, 0, 113, 10),
            remote_port: Some(59522),
            resolver: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 54))),
            client_subnet: None,
        }
    }

    fn lines(p: &Path) -> Vec<String> {
        fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    // -- calendar --

    #[test]
    fn known_days() {
        for (days, ymd) in [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (20_779, (2026, 11, 22)),
            (24_855, (2038, 1, 19)),
            (49_710, (2106, 2, 7)),
            (47_540, (2100, 2, 28)),
            (47_541, (2100, 3, 1)),
            (157_113, (2400, 2, 29)),
            (-25_508, (1900, 3, 1)),
            (-25_509, (1900, 2, 28)),
            (2_932_896, (9999, 12, 31)),
            (-719_162, (1, 1, 1)),
            (-719_528, (0, 1, 1)),
        ] {
            assert_eq!(civil_from_days(days), ymd, "day {days}");
            assert_eq!(days_from_civil(ymd.0, ymd.1, ymd.2), days, "{ymd:?}");
        }
        assert_eq!(MIN_MS, days_from_civil(0, 1, 1) * MS_PER_DAY);
        assert_eq!(MAX_MS + 1, days_from_civil(10_000, 1, 1) * MS_PER_DAY);
    }

    /// Walks the calendar day by day from 1600 to 2500 and checks both
    /// conversions against a plain month-length count.
    #[test]
    fn every_day_from_1600_to_2500() {
        let mut days = days_from_civil(1600, 1, 1);
        for y in 1600..2500 {
            for m in 1..=12 {
                for d in 1..=days_in_month(y, m) {
                    assert_eq!(civil_from_days(days), (y, m, d));
                    assert_eq!(days_from_civil(y, m, d), days);
                    days += 1;
                }
            }
        }
        assert_eq!(civil_from_days(days), (2500, 1, 1));
    }

    #[test]
    fn leap_years() {
        assert!(is_leap(2000) && is_leap(2024) && is_leap(2400) && is_leap(0));
        assert!(!is_leap(1900) && !is_leap(2100) && !is_leap(2026));
    }

    // -- timestamps --

    #[test]
    fn formats_known_times() {
        for (ms, s) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_362_878_123, "2026-11-22T15:54:38.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            // 2^31 s: where a signed 32-bit time_t ends.
            (2_147_483_647_000, "2038-01-19T03:14:07.000Z"),
            (2_147_483_648_000, "2038-01-19T03:14:08.000Z"),
            // 2^32 s.
            (4_294_967_296_000, "2106-02-07T06:28:16.000Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
            (13_574_563_200_000, "2400-02-29T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (-2_203_891_200_000, "1900-03-01T00:00:00.000Z"),
            (MAX_MS, "9999-12-31T23:59:59.999Z"),
            (MIN_MS, "0000-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(format_time(at_ms(ms)), s);
            assert_eq!(parse_time(s), Some(at_ms(ms)), "{s}");
        }
    }

    #[test]
    fn sub_millisecond_is_truncated_and_range_clamped() {
        let t0 = UNIX_EPOCH + Duration::from_nanos(1_999_999);
        assert_eq!(format_time(t0), "1970-01-01T00:00:00.001Z");
        let before = UNIX_EPOCH - Duration::from_nanos(1);
        assert_eq!(format_time(before), "1969-12-31T23:59:59.999Z");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(format_time(far), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_fractions_and_rejects_bad_times() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(at_ms(1000)));
        assert_eq!(parse_time("1970-01-01T00:00:00.5Z"), Some(at_ms(500)));
        assert_eq!(
            parse_time("1970-01-01T00:00:00.000000001Z"),
            Some(UNIX_EPOCH + Duration::from_nanos(1))
        );
        assert_eq!(
            parse_time("1969-12-31T23:59:59.999999999Z"),
            Some(UNIX_EPOCH - Duration::from_nanos(1))
        );
        for s in [
            "",
            "2026-11-22T15:54:38.123",
            "2026-11-22 15:54:38.123Z",
            "2026-11-22T15:54:38.123+00:00",
            "2026-13-01T00:00:00.000Z",
            "2026-00-01T00:00:00.000Z",
            "2026-02-29T00:00:00.000Z",
            "2100-02-29T00:00:00.000Z",
            "2026-04-31T00:00:00.000Z",
            "2026-11-22T24:00:00.000Z",
            "2026-11-22T23:60:00.000Z",
            "2026-11-22T23:59:60.000Z",
            "2026-11-22T23:59:59.Z",
            "2026-11-22T23:59:59.1234567890Z",
            "2026-11-22T23:59:59,123Z",
            "+026-11-22T23:59:59.123Z",
            "2026-11-2xT23:59:59.123Z",
        ] {
            assert_eq!(parse_time(s), None, "{s:?}");
        }
        assert!(parse_time("2024-02-29T00:00:00.000Z").is_some());
    }

    // -- lines --

    #[test]
    fn line_format_is_as_documented() {
        let r = rec(t("2026-11-22T15:54:38.123Z"), 22);
        assert_eq!(
            r.to_string(),
            "2026-11-22T15:54:38.123Z 198.51.100.17 tcp 22 hosta 192.168.0.101 \
             from=203.0.113.10:59522 res=203.0.113.54 ecs=-"
        );
        let icmp = BindingRecord {
            proto: 1,
            port: None,
            remote_port: None,
            resolver: None,
            client_subnet: Some(("198.51.100.0".parse().expect("ip"), 24)),
            ..r
        };
        assert_eq!(
            icmp.to_string(),
            "2026-11-22T15:54:38.123Z 198.51.100.17 icmp - hosta 192.168.0.101 \
             from=203.0.113.10 res=- ecs=198.51.100.0/24"
        );
    }

    #[test]
    fn round_trips() {
        let base = rec(t("2026-11-22T15:54:38.123Z"), 22);
        let v6: IpAddr = "2001:db8::53".parse().expect("ip");
        let cases = vec![
            base.clone(),
            BindingRecord {
                proto: 1,
                port: None,
                remote_port: None,
                ..base.clone()
            },
            BindingRecord {
                proto: 17,
                port: Some(0),
                remote_port: Some(65535),
                resolver: Some(v6),
                client_subnet: Some(("2001:db8:1200::".parse().expect("ip"), 56)),
                ..base.clone()
            },
            BindingRecord {
                proto: 253,
                client_subnet: Some(("192.0.2.0".parse().expect("ip"), 24)),
                resolver: Some("::ffff:192.0.2.1".parse().expect("ip")),
                ..base.clone()
            },
            BindingRecord {
                proto: 132,
                time: at_ms(-1),
                ..base.clone()
            },
            BindingRecord {
                time: at_ms(4_294_967_296_789),
                ..base.clone()
            },
        ];
        let hosts = ["", "-", "a b", "50%", "x=y", "h\u{e9}", "tab\there", "--"];
        let all = cases.into_iter().chain(hosts.iter().map(|h| BindingRecord {
            host: (*h).to_string(),
            ..base.clone()
        }));
        for r in all {
            let line = format!("{r}\n");
            assert_eq!(line.matches(' ').count(), 8, "{line:?}");
            assert_eq!(BindingRecord::parse_line(&line), Ok(r.clone()), "{line:?}");
        }
    }

    #[test]
    fn parse_errors_name_the_field() {
        let good = rec(t("2026-11-22T15:54:38.123Z"), 22).to_string();
        let field_of = |line: &str| BindingRecord::parse_line(line).map_err(|e| e.field);
        assert!(field_of(&good).is_ok());
        let swap = |from: &str, to: &str| good.replacen(from, to, 1);
        assert_eq!(field_of(""), Err("time"));
        assert_eq!(field_of(&swap("2026-11-22", "2026-11-32")), Err("time"));
        assert_eq!(
            field_of(&swap("198.51.100.17", "198.51.100.256")),
            Err("public")
        );
        assert_eq!(field_of(&swap(" tcp ", " tcpx ")), Err("proto"));
        assert_eq!(field_of(&swap(" tcp ", " 256 ")), Err("proto"));
        assert_eq!(field_of(&swap(" 22 ", " 65536 ")), Err("port"));
        assert_eq!(field_of(&swap(" 22 ", " +22 ")), Err("port"));
        assert_eq!(field_of(&swap("hosta", "host%4")), Err("host"));
        assert_eq!(field_of(&swap("hosta", "host%FF")), Err("host"));
        assert_eq!(
            field_of(&swap("192.168.0.101", "192.168.0")),
            Err("private")
        );
        assert_eq!(field_of(&swap("from=", "form=")), Err("from"));
        assert_eq!(field_of(&swap(":59522", ":")), Err("from"));
        assert_eq!(field_of(&swap(":59522", ":x")), Err("from"));
        assert_eq!(field_of(&swap("res=203.0.113.54", "res=x")), Err("res"));
        assert_eq!(field_of(&swap("ecs=-", "ecs=192.0.2.0/33")), Err("ecs"));
        assert_eq!(field_of(&swap("ecs=-", "ecs=192.0.2.0")), Err("ecs"));
        assert_eq!(field_of(&format!("{good} res=-")), Err("res"));
        assert_eq!(field_of(&format!("{good} stray")), Err("key=value"));
        // Unknown fields are ignored; res and ecs may be missing; spacing is free.
        let r = BindingRecord::parse_line(&format!("{good} id=42 v=2")).expect("parses");
        assert_eq!(r, rec(t("2026-11-22T15:54:38.123Z"), 22));
        let short = good
            .replace(" res=203.0.113.54 ecs=-", "")
            .replace(' ', "  \t");
        let r = BindingRecord::parse_line(&short).expect("parses");
        assert_eq!((r.resolver, r.client_subnet), (None, None));
        let e = BindingRecord::parse_line("2026-11-22T15:54:38.123Z").expect_err("short");
        assert_eq!(e.to_string(), "binding log line: field `public` missing");
    }

    #[test]
    fn overlong_ecs_prefix_is_written_as_full_length() {
        let r = BindingRecord {
            client_subnet: Some(("192.0.2.1".parse().expect("ip"), 40)),
            ..rec(UNIX_EPOCH, 22)
        };
        assert!(r.to_string().ends_with(" ecs=192.0.2.1/32"));
    }

    // -- the file --

    #[test]
    fn rotates_by_size_and_keeps_keep_files() {
        let dir = tmpdir("size");
        let path = dir.join("bindings.log");
        let one = format!("{}\n", rec(UNIX_EPOCH, 1000)).len() as u64;
        let rot = Rotation {
            max_bytes: 3 * one,
            keep: 2,
            daily: false,
        };
        let mut log = BindingLog::open(&path, rot).expect("opens");
        let now = t("2026-11-22T12:00:00Z");
        for i in 0..10u16 {
            log.append_at(&rec(at_ms(i64::from(i)), 1000 + i), now)
                .expect("appends");
        }
        log.flush().expect("flushes");
        assert_eq!(log.rotations(), 3);
        let port = |l: &String| BindingRecord::parse_line(l).expect("parses").port;
        let ports = |p: &Path| lines(p).iter().map(port).collect::<Vec<_>>();
        // Newest in the live file, then .1, .2; the oldest (1000..=1002) is gone.
        assert_eq!(ports(&path), [Some(1009)]);
        assert_eq!(ports(&rotated_path(&path, 1)), [1006, 1007, 1008].map(Some));
        assert_eq!(ports(&rotated_path(&path, 2)), [1003, 1004, 1005].map(Some));
        assert!(!rotated_path(&path, 3).exists());
        for p in [path.clone(), rotated_path(&path, 1), rotated_path(&path, 2)] {
            assert!(fs::metadata(&p).expect("exists").len() <= rot.max_bytes);
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn keep_zero_discards_and_a_long_record_fits_an_empty_file() {
        let dir = tmpdir("keep0");
        let path = dir.join("bindings.log");
        let rot = Rotation {
            max_bytes: 10,
            keep: 0,
            daily: false,
        };
        let mut log = BindingLog::open(&path, rot).expect("opens");
        let now = t("2026-11-22T12:00:00Z");
        for i in 0..3 {
            log.append_at(&rec(UNIX_EPOCH, 7000 + i), now)
                .expect("appends");
        }
        log.flush().expect("flushes");
        assert_eq!(lines(&path).len(), 1);
        assert!(lines(&path)[0].contains(" 7002 "));
        assert!(!rotated_path(&path, 1).exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn created_files_are_0640() {
        let dir = tmpdir("mode");
        let path = dir.join("bindings.log");
        let rot = Rotation {
            max_bytes: 1,
            keep: 1,
            daily: false,
        };
        let mut log = BindingLog::open(&path, rot).expect("opens");
        let now = SystemTime::now();
        log.append_at(&rec(now, 1), now).expect("appends");
        log.append_at(&rec(now, 2), now).expect("appends");
        for p in [path.clone(), rotated_path(&path, 1)] {
            let mode = fs::metadata(&p).expect("exists").permissions().mode();
            assert_eq!(mode & 0o7777, 0o640, "{}", p.display());
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn rotates_at_utc_midnight_with_an_injected_clock() {
        let dir = tmpdir("daily");
        let path = dir.join("bindings.log");
        let rot = Rotation {
            max_bytes: 0,
            keep: 3,
            daily: true,
        };
        let mut log = BindingLog::open(&path, rot).expect("opens");
        for now in [
            "2026-11-22T00:00:00.000Z",
            "2026-11-22T23:59:59.999Z",
            "2026-11-23T00:00:00.000Z",
            "2026-11-23T13:00:00.000Z",
            // A record claimed before midnight but written after it goes by `now`.
            "2026-11-25T00:00:01.000Z",
        ] {
            log.append_at(&rec(t(now), 22), t(now)).expect("appends");
        }
        log.flush().expect("flushes");
        assert_eq!(log.rotations(), 2);
        let days = |p: &Path| {
            lines(p)
                .iter()
                .map(|l| l[..10].to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(days(&rotated_path(&path, 2)), ["2026-11-22", "2026-11-22"]);
        assert_eq!(days(&rotated_path(&path, 1)), ["2026-11-23", "2026-11-23"]);
        assert_eq!(days(&path), ["2026-11-25"]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn an_existing_file_from_yesterday_rotates_at_the_first_record() {
        let dir = tmpdir("restart");
        let path = dir.join("bindings.log");
        fs::write(&path, format!("{}\n", rec(t("2026-11-21T10:00:00Z"), 1))).expect("write");
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(t("2026-11-21T10:00:00Z")))
            .expect("set mtime");
        let rot = Rotation {
            max_bytes: 0,
            keep: 5,
            daily: true,
        };
        let mut log = BindingLog::open(&path, rot).expect("opens");
        let now = t("2026-11-22T08:00:00Z");
        log.append_at(&rec(now, 2), now).expect("appends");
        log.flush().expect("flushes");
        assert_eq!(lines(&rotated_path(&path, 1)).len(), 1);
        assert_eq!(lines(&path).len(), 1);
        // Same day: a restart appends to the file.
        drop(log);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(now))
            .expect("set mtime");
        let mut log = BindingLog::open(&path, rot).expect("opens");
        log.append_at(&rec(now, 3), now).expect("appends");
        log.flush().expect("flushes");
        assert_eq!((lines(&path).len(), log.rotations()), (2, 0));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn flushes_once_a_second_of_append_time() {
        let dir = tmpdir("flush");
        let path = dir.join("bindings.log");
        let rot = Rotation {
            max_bytes: 0,
            keep: 0,
            daily: false,
        };
        let mut log = BindingLog::open(&path, rot).expect("opens");
        let t0 = t("2026-11-22T12:00:00Z");
        log.append_at(&rec(t0, 1), t0).expect("appends");
        assert_eq!(lines(&path).len(), 1, "the first record is flushed at once");
        log.append_at(&rec(t0, 2), t0 + Duration::from_millis(500))
            .expect("appends");
        assert_eq!(lines(&path).len(), 1, "buffered");
        log.append_at(&rec(t0, 3), t0 + Duration::from_millis(1000))
            .expect("appends");
        assert_eq!(lines(&path).len(), 3, "flushed after 1 s");
        log.append_at(&rec(t0, 4), t0 + Duration::from_millis(1100))
            .expect("appends");
        log.flush().expect("flushes");
        assert_eq!(lines(&path).len(), 4);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn reopen_follows_an_external_rotation() {
        let dir = tmpdir("reopen");
        let path = dir.join("bindings.log");
        let moved = dir.join("bindings.log-20261122");
        let rot = Rotation {
            max_bytes: 0,
            keep: 0,
            daily: false,
        };
        let mut log = BindingLog::open(&path, rot).expect("opens");
        let now = t("2026-11-22T12:00:00Z");
        log.append_at(&rec(now, 1), now).expect("appends");
        fs::rename(&path, &moved).expect("logrotate moves the file");
        // Until reopen, records go to the moved file (same inode).
        log.append_at(&rec(now, 2), now).expect("appends");
        log.reopen().expect("reopens");
        log.append_at(&rec(now, 3), now).expect("appends");
        log.flush().expect("flushes");
        assert_eq!(lines(&moved).len(), 2);
        assert_eq!(lines(&path).len(), 1);
        assert_eq!(log.size(), fs::metadata(&path).expect("exists").len());
        let mode = fs::metadata(&path).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failed_rotation_keeps_the_record_and_reports_later() {
        let dir = tmpdir("rotfail");
        let path = dir.join("bindings.log");
        // `.1` is a non-empty directory: it cannot be removed or replaced.
        fs::create_dir_all(rotated_path(&path, 1).join("x")).expect("dir");
        let rot = Rotation {
            max_bytes: 1,
            keep: 1,
            daily: false,
        };
        let mut log = BindingLog::open(&path, rot).expect("opens");
        let now = t("2026-11-22T12:00:00Z");
        log.append_at(&rec(now, 1), now).expect("appends");
        assert!(log.take_error().is_none());
        log.append_at(&rec(now, 2), now)
            .expect("the record is kept");
        let e = log.take_error().expect("rotation error kept");
        assert!(e.to_string().contains("bindings.log.1"), "{e}");
        // No retry within ROTATION_RETRY, then a retry (which fails again).
        log.append_at(&rec(now, 3), now + Duration::from_secs(59))
            .expect("appends");
        assert!(log.take_error().is_none());
        log.append_at(&rec(now, 4), now + ROTATION_RETRY)
            .expect("appends");
        assert!(log.take_error().is_some());
        log.flush().expect("flushes");
        assert_eq!(lines(&path).len(), 4);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn write_errors_are_returned() {
        let dir = tmpdir("errors");
        let e = BindingLog::open(dir.join("missing/bindings.log"), Rotation::default())
            .expect_err("no directory");
        assert!(e.to_string().contains("missing/bindings.log"), "{e}");
        let _ = fs::remove_dir_all(dir);
        // /dev/full: not a regular file, so never rotated; every write fails.
        let Ok(mut log) = BindingLog::open("/dev/full", Rotation::default()) else {
            return;
        };
        let now = SystemTime::now();
        assert!(log.append_at(&rec(now, 1), now).is_err());
        assert!(log.flush().is_err());
        assert!(log.reopen().is_err());
    }

    // -- the writer thread --

    #[test]
    fn writer_writes_everything_queued_before_close() {
        let dir = tmpdir("writer");
        let path = dir.join("bindings.log");
        let log = BindingLog::open(&path, Rotation::default()).expect("opens");
        let (tx, handle) = spawn_writer(log, 100_000).expect("spawns");
        let now = SystemTime::now();
        for i in 0..1000 {
            assert!(tx.try_send(rec(now, i)));
        }
        tx.close();
        handle.join().expect("writer exits");
        assert_eq!(lines(&path).len(), 1000);
        let st = tx.state();
        assert_eq!(st.written.load(Ordering::Relaxed), 1000);
        assert!(!tx.try_send(rec(now, 1)));
        assert_eq!(tx.dropped(), 1);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let dir = tmpdir("full");
        let path = dir.join("bindings.log");
        let log = BindingLog::open(&path, Rotation::default()).expect("opens");
        let (tx, handle) = spawn_writer(log, 1).expect("spawns");
        let now = SystemTime::now();
        let sent = (0..20_000).filter(|i| tx.try_send(rec(now, *i))).count() as u64;
        let st = tx.state();
        drop(tx);
        handle
            .join()
            .expect("writer exits when every sender is gone");
        let (written, dropped) = (
            st.written.load(Ordering::Relaxed),
            st.dropped.load(Ordering::Relaxed),
        );
        assert_eq!(written, sent);
        assert_eq!(written + dropped, 20_000);
        assert_eq!(lines(&path).len() as u64, written);
        println!("capacity 1: {written} written, {dropped} dropped");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn writer_reopens_on_request_and_reports_errors() {
        let dir = tmpdir("wreopen");
        let path = dir.join("bindings.log");
        let log = BindingLog::open(&path, Rotation::default()).expect("opens");
        let seen = Arc::new(AtomicU64::new(0));
        let seen2 = Arc::clone(&seen);
        let (tx, handle) = spawn_writer_with(log, 64, move |_| {
            seen2.fetch_add(1, Ordering::Relaxed);
        })
        .expect("spawns");
        let now = SystemTime::now();
        assert!(tx.try_send(rec(now, 1)));
        let moved = dir.join("bindings.log.old");
        // Wait for the first record to reach the file before moving it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while lines(&path).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::rename(&path, &moved).expect("moves");
        tx.reopen();
        // The reopen is done before the next record is written.
        assert!(tx.try_send(rec(now, 2)));
        tx.close();
        handle.join().expect("exits");
        assert_eq!(lines(&moved).len(), 1);
        assert_eq!(lines(&path).len(), 1);
        assert_eq!(seen.load(Ordering::Relaxed), 0);
        let _ = fs::remove_dir_all(&dir);

        // Errors reach the callback (rate-limited) and the counter.
        let Ok(log) = BindingLog::open("/dev/full", Rotation::default()) else {
            return;
        };
        let seen = Arc::new(AtomicU64::new(0));
        let seen2 = Arc::clone(&seen);
        let (tx, handle) = spawn_writer_with(log, 64, move |_| {
            seen2.fetch_add(1, Ordering::Relaxed);
        })
        .expect("spawns");
        for i in 0..3 {
            assert!(tx.try_send(rec(now, i)));
        }
        tx.close();
        handle.join().expect("exits");
        // The first append's flush and the final flush fail; the records
        // in between were buffered (counted as written, never on disk).
        assert!(tx.state().errors.load(Ordering::Relaxed) >= 2);
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }

    // -- sizes and speed (printed, not asserted) --

    fn sample_records() -> Vec<(&'static str, BindingRecord)> {
        let now = t("2026-11-22T15:54:38.123Z");
        let fqdn = rec(now, 8);
        let sfqdn = rec(now, 22);
        let v4_ecs = Some(("198.51.100.0".parse().expect("ip"), 24));
        let v6_res: Option<IpAddr> = Some("2001:db8:4860::8888".parse().expect("ip"));
        let v6_ecs = Some(("2001:db8:1234:5600::".parse().expect("ip"), 56));
        vec![
            ("FQDN, tcp, no ECS", fqdn.clone()),
            (
                "FQDN, icmp (no ports), no ECS",
                BindingRecord {
                    proto: 1,
                    port: None,
                    remote_port: None,
                    ..fqdn.clone()
                },
            ),
            ("SFQDN tcp22, no ECS", sfqdn.clone()),
            (
                "SFQDN tcp22, ECS /24",
                BindingRecord {
                    client_subnet: v4_ecs,
                    ..sfqdn.clone()
                },
            ),
            (
                "SFQDN tcp22, IPv6 resolver + ECS /56",
                BindingRecord {
                    resolver: v6_res,
                    client_subnet: v6_ecs,
                    ..sfqdn.clone()
                },
            ),
            (
                "SFQDN udp5060, 15-char host, long addresses, ECS /24",
                BindingRecord {
                    proto: 17,
                    port: Some(5060),
                    host: "livingroom-nas1".into(),
                    public: "198.51.100.217".parse().expect("ip"),
                    private: "192.168.100.101".parse().expect("ip"),
                    remote: "203.0.113.210".parse().expect("ip"),
                    resolver: Some("203.0.113.254".parse().expect("ip")),
                    client_subnet: Some(("203.0.113.0".parse().expect("ip"), 24)),
                    ..sfqdn
                },
            ),
        ]
    }

    #[test]
    fn print_record_sizes() {
        for (what, r) in sample_records() {
            let line = format!("{r}\n");
            println!("{:>3} bytes  {what}: {}", line.len(), line.trim_end());
        }
    }

    #[test]
    fn print_throughput() {
        let dir = tmpdir("speed");
        let path = dir.join("bindings.log");
        let n: u32 = 200_000;
        let samples = sample_records();
        let recs: Vec<BindingRecord> = (0..n)
            .map(|i| {
                let mut r = samples[i as usize % samples.len()].1.clone();
                r.time += Duration::from_millis(u64::from(i));
                r
            })
            .collect();

        let start = Instant::now();
        let mut bytes = 0;
        let mut s = String::new();
        for r in &recs {
            s.clear();
            let _ = writeln!(s, "{r}");
            bytes += s.len();
        }
        let fmt_rate = f64::from(n) / start.elapsed().as_secs_f64();

        let mut log = BindingLog::open(&path, Rotation::default()).expect("opens");
        let start = Instant::now();
        for r in &recs {
            log.append(r).expect("appends");
        }
        log.flush().expect("flushes");
        let append_rate = f64::from(n) / start.elapsed().as_secs_f64();
        drop(log);

        let log = BindingLog::open(&path, Rotation::default()).expect("opens");
        let (tx, handle) = spawn_writer(log, 4096).expect("spawns");
        let start = Instant::now();
        let mut sent = 0u32;
        for r in &recs {
            sent += u32::from(tx.try_send(r.clone()));
        }
        let send_time = start.elapsed();
        tx.close();
        handle.join().expect("exits");
        let total = start.elapsed();

        // Sustained: the sender retries when the queue is full, so this is the
        // writer thread's own rate through the channel.
        let log = BindingLog::open(&path, Rotation::default()).expect("opens");
        let (tx2, handle) = spawn_writer(log, 4096).expect("spawns");
        let start = Instant::now();
        for r in &recs {
            while !tx2.try_send(r.clone()) {
                std::thread::yield_now();
            }
        }
        tx2.close();
        handle.join().expect("exits");
        let sustained = f64::from(n) / start.elapsed().as_secs_f64();
        println!(
            "format only: {fmt_rate:.0} records/s ({} bytes avg)",
            bytes / recs.len()
        );
        println!("BindingLog::append to a file: {append_rate:.0} records/s");
        println!(
            "try_send (cap 4096, writer running): {:.0} ns per call, {sent} of {n} queued, \
             {} dropped; all written in {:.3} s",
            send_time.as_nanos() as f64 / f64::from(n),
            tx.dropped(),
            total.as_secs_f64()
        );
        println!("writer thread, sustained through the channel: {sustained:.0} records/s");
        let _ = fs::remove_dir_all(dir);
    }
}

//! DNS sockets: a thin shell around [`rgw_dns::Responder`].
//!
//! WAN over UDP: one blocking worker thread per core, each with its own
//! SO_REUSEPORT socket and a 4 MiB receive buffer (DESIGN.md §3: the model
//! that made hickory fastest here, and Knot's and NSD's). TCP on both views
//! and the LAN view (which forwards names outside the zone) run on tokio.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rgw_dns::{Action, Outcome, Responder, Transport, View};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::gateway::{DataplaneDown, Gateway};
use crate::metrics::inc;

/// Idle time after which a DNS-over-TCP connection is closed (RFC 7766 §6.2.3 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long a forwarded query waits for the upstream resolver.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(4);

pub struct DnsServer {
    pub gw: Arc<Gateway>,
    /// RGW64: synthesis of forwarded answers (None when `[rgw64]` is off).
    pub rgw64: Option<Arc<crate::rgw64::Rgw64>>,
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    // The default 208 KiB drops a burst of queries (measured with dnsperf).
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())
        .with_context(|| format!("binding DNS UDP {addr}"))?;
    Ok(s)
}

fn tcp_listener(addr: SocketAddr) -> Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .with_context(|| format!("binding DNS TCP {addr}"))?;
    s.listen(1024)?;
    Ok(TcpListener::from_std(s.into())?)
}

impl DnsServer {
    fn count(&self, view: View, action: &Action) {
        let m = &self.gw.metrics;
        inc(match view {
            View::Public => &m.dns_queries_public,
            View::Private => &m.dns_queries_private,
        });
        match action {
            Action::Reply { outcome, .. } => m.count_outcome(*outcome),
            Action::Drop(r) => m.count_drop(*r),
            Action::Forward => inc(&m.dns_forwarded),
        }
    }

    /// Answers one query; an answer whose reservation could not be installed
    /// is replaced by the denial policy's answer.
    fn decide(&self, packet: &[u8], peer: SocketAddr, view: View, transport: Transport) -> Action {
        let snap = self.gw.snapshot();
        let ctx = self.gw.query_context(peer.ip());
        let (action, installed) = self.gw.with_allocator(|a| {
            a.set_resolver(peer.ip());
            snap.responder.handle_in(packet, view, transport, ctx, a)
        });
        let action = unless_uninstalled(
            &snap.responder,
            action,
            installed,
            packet,
            view,
            transport,
            ctx,
        );
        let action = match (&self.rgw64, view, action) {
            // RGW64: zone names answer like forwarded ones (a proxy ULA for
            // an IPv4-only host, asked over IPv6).
            (Some(r), View::Private, Action::Reply { bytes, outcome }) => {
                match crate::rgw64::dns::complete_local(
                    r,
                    &snap.responder,
                    packet,
                    &bytes,
                    peer,
                    transport,
                ) {
                    Some(bytes) => Action::Reply {
                        bytes,
                        outcome: Outcome::Static,
                    },
                    None => Action::Reply { bytes, outcome },
                }
            }
            (_, _, action) => action,
        };
        self.count(view, &action);
        action
    }

    /// Starts the WAN UDP workers (blocking threads). Returns once all are bound.
    pub fn spawn_wan_udp(self: &Arc<Self>, addr: SocketAddr, workers: usize) -> Result<()> {
        for i in 0..workers.max(1) {
            let sock: UdpSocket = udp_socket(addr, true)?.into();
            let me = Arc::clone(self);
            std::thread::Builder::new()
                .name(format!("dns-wan-{i}"))
                .spawn(move || me.wan_udp_loop(sock))
                .context("spawning a DNS worker")?;
        }
        info!(%addr, workers, "DNS (public view) on UDP");
        Ok(())
    }

    /// Receives up to `limits.dns_udp_batch` queries that are already waiting, answers them
    /// with one pool lock and one netlink batch for all their reservations,
    /// then sends the answers. With one query in flight this is one query.
    fn wan_udp_loop(&self, sock: UdpSocket) {
        if let Err(e) = sock.set_nonblocking(true) {
            warn!(error = %e, "DNS worker: cannot make the socket non-blocking");
            return;
        }
        let batch = (self.gw.snapshot().cfg.limits.dns_udp_batch as usize).max(1);
        let mut bufs = vec![[0u8; 4096]; batch];
        let mut meta: Vec<(usize, SocketAddr)> = Vec::with_capacity(batch);
        loop {
            meta.clear();
            while meta.len() < batch {
                match sock.recv_from(&mut bufs[meta.len()]) {
                    Ok(got) => meta.push(got),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if !meta.is_empty() {
                            break;
                        }
                        wait_readable(&sock);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        warn!(error = %e, "DNS UDP receive failed");
                        if !meta.is_empty() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            let snap = self.gw.snapshot();
            let (actions, installed) = self.gw.with_allocator(|a| {
                meta.iter()
                    .zip(&bufs)
                    .map(|(&(n, peer), buf)| {
                        a.set_resolver(peer.ip());
                        let ctx = self.gw.query_context(peer.ip());
                        snap.responder
                            .handle_in(&buf[..n], View::Public, Transport::Udp, ctx, a)
                    })
                    .collect::<Vec<_>>()
            });
            for ((action, &(n, peer)), buf) in actions.into_iter().zip(&meta).zip(&bufs) {
                let action = unless_uninstalled(
                    &snap.responder,
                    action,
                    installed,
                    &buf[..n],
                    View::Public,
                    Transport::Udp,
                    self.gw.query_context(peer.ip()),
                );
                self.count(View::Public, &action);
                if let Action::Reply { bytes, .. } = action {
                    if let Err(e) = sock.send_to(&bytes, peer) {
                        debug!(%peer, error = %e, "DNS UDP send failed");
                    }
                }
            }
        }
    }

    /// LAN UDP: answers zone names, forwards the rest upstream.
    pub async fn lan_udp(self: Arc<Self>, addr: SocketAddr, upstream: SocketAddr) -> Result<()> {
        let sock = udp_socket(addr, false)?;
        sock.set_nonblocking(true)?;
        let sock = Arc::new(tokio::net::UdpSocket::from_std(sock.into())?);
        info!(%addr, %upstream, "DNS (private view) on UDP");
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = match sock.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "LAN DNS UDP receive failed");
                    continue;
                }
            };
            let packet = buf[..n].to_vec();
            match self.decide(&packet, peer, View::Private, Transport::Udp) {
                Action::Reply { bytes, .. } => {
                    let _ = sock.send_to(&bytes, peer).await;
                }
                Action::Drop(_) => {}
                Action::Forward => {
                    let (me, sock) = (Arc::clone(&self), Arc::clone(&sock));
                    tokio::spawn(async move {
                        let ask = |q: Vec<u8>| async move { forward_udp(&q, upstream).await };
                        match crate::rgw64::dns::forward(me.rgw64.as_deref(), &packet, peer, ask)
                            .await
                        {
                            Ok(reply) => {
                                let _ = sock.send_to(&reply, peer).await;
                            }
                            Err(e) => {
                                inc(&me.gw.metrics.dns_forward_failed);
                                debug!(%peer, error = %e, "forwarding failed");
                            }
                        }
                    });
                }
            }
        }
    }

    /// DNS over TCP (RFC 7766) for either view.
    pub async fn tcp(
        self: Arc<Self>,
        addr: SocketAddr,
        view: View,
        upstream: Option<SocketAddr>,
    ) -> Result<()> {
        let listener = tcp_listener(addr)?;
        info!(%addr, ?view, "DNS on TCP");
        // Open connections of this listener, bounded by `limits.dns_tcp_connections`.
        let open = Arc::new(AtomicUsize::new(0));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let limit = self.gw.snapshot().cfg.limits.dns_tcp_connections as usize;
            if open.load(Ordering::Relaxed) >= limit {
                // Closed at once: a slow or idle client cannot hold more
                // than `limit` tasks and sockets (RFC 7766 §6.2.2).
                inc(&self.gw.metrics.dns_tcp_refused);
                debug!(%peer, limit, "DNS TCP connection refused: limits.dns_tcp_connections");
                drop(stream);
                continue;
            }
            let slot = OpenSlot::take(&open);
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = me.tcp_conn(stream, peer, view, upstream).await {
                    debug!(%peer, error = %e, "DNS TCP connection ended");
                }
            });
        }
    }

    async fn tcp_conn(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        view: View,
        upstream: Option<SocketAddr>,
    ) -> Result<()> {
        loop {
            let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
                Ok(Ok(l)) => usize::from(l),
                _ => return Ok(()),
            };
            let mut msg = vec![0u8; len];
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await??;
            let reply = match self.decide(&msg, peer, view, Transport::Tcp) {
                Action::Reply { bytes, .. } => bytes,
                // Denied by policy "drop" (or not a query): close without answering.
                Action::Drop(_) => return Ok(()),
                Action::Forward => match upstream {
                    Some(up) => match crate::rgw64::dns::forward(
                        self.rgw64.as_deref(),
                        &msg,
                        peer,
                        |q: Vec<u8>| async move { forward_tcp(&q, up).await },
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(e) => {
                            inc(&self.gw.metrics.dns_forward_failed);
                            return Err(e);
                        }
                    },
                    None => return Ok(()),
                },
            };
            let len = u16::try_from(reply.len()).context("reply larger than 64 KiB")?;
            stream.write_u16(len).await?;
            stream.write_all(&reply).await?;
        }
    }
}

/// One open DNS-over-TCP connection, counted until the task ends (or panics).
struct OpenSlot(Arc<AtomicUsize>);

impl OpenSlot {
    fn take(open: &Arc<AtomicUsize>) -> OpenSlot {
        open.fetch_add(1, Ordering::Relaxed);
        OpenSlot(Arc::clone(open))
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer whose reservation could not be installed is replaced by the
/// denial policy's answer.
#[allow(clippy::too_many_arguments)]
fn unless_uninstalled(
    responder: &Responder,
    action: Action,
    installed: bool,
    packet: &[u8],
    view: View,
    transport: Transport,
    ctx: rgw_dns::QueryContext,
) -> Action {
    match action {
        Action::Reply {
            outcome: Outcome::Allocated,
            ..
        } if !installed => responder.handle_in(packet, view, transport, ctx, &mut DataplaneDown),
        other => other,
    }
}

/// Blocks until the socket has a datagram (or an error) to read.
fn wait_readable(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, -1) };
}

async fn forward_udp(query: &[u8], upstream: SocketAddr) -> Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(FORWARD_TIMEOUT, sock.recv(&mut buf)).await??;
        // Only the reply to this query (same ID) goes back.
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(query: &[u8], upstream: SocketAddr) -> Result<Vec<u8>> {
    let mut s = tokio::time::timeout(FORWARD_TIMEOUT, TcpStream::connect(upstream)).await??;
    s.write_u16(u16::try_from(query.len())?).await?;
    s.write_all(query).await?;
    let len = tokio::time::timeout(FORWARD_TIMEOUT, s.read_u16()).await??;
    let mut buf = vec![0u8; usize::from(len)];
    tokio::time::timeout(FORWARD_TIMEOUT, s.read_exact(&mut buf)).await??;
    Ok(buf)
}

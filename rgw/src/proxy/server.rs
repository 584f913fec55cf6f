//! The tokio shell of the proxy: accept, read the first bytes with a
//! deadline, ask a parser for the name, route it, connect to the backend,
//! forward the bytes already read and splice both directions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout, timeout_at, Instant};
use tracing::{debug, info, warn};

use super::{http, sni, Parse, MAX_PEEK};

/// Maps a requested name (lower-case, no trailing dot, e.g.
/// "www.hosta.gwa.demo") to the backend to connect to.
pub trait Router: Send + Sync + 'static {
    fn route(&self, name: &str) -> Option<SocketAddr>;
}

impl Router for HashMap<String, SocketAddr> {
    fn route(&self, name: &str) -> Option<SocketAddr> {
        self.get(name).copied()
    }
}

impl<F> Router for F
where
    F: Fn(&str) -> Option<SocketAddr> + Send + Sync + 'static,
{
    fn route(&self, name: &str) -> Option<SocketAddr> {
        self(name)
    }
}

/// What the listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP/1.x, routed by the Host header (or an absolute-form target).
    Http,
    /// TLS, routed by the ClientHello's server_name; not terminated.
    Tls,
}

/// Counters of every connection's fate (relaxed atomics).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted (including those refused for being over the limit).
    pub accepted: AtomicU64,
    /// Connected to a backend and spliced.
    pub routed: AtomicU64,
    /// A valid request for a name the router does not know, or for no name
    /// (no SNI, HTTP/1.0 without Host).
    pub unknown_name: AtomicU64,
    /// Not a valid HTTP request head / TLS ClientHello, or over 16 KiB.
    pub invalid: AtomicU64,
    /// The backend did not accept the connection in time.
    pub backend_failed: AtomicU64,
    /// Closed at once: the concurrent connection limit was reached.
    pub over_limit: AtomicU64,
    /// The client closed, failed or timed out before sending a name.
    pub incomplete: AtomicU64,
}

impl ProxyStats {
    /// Every counter, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("accepted", c(&self.accepted)),
            ("routed", c(&self.routed)),
            ("unknown_name", c(&self.unknown_name)),
            ("invalid", c(&self.invalid)),
            ("backend_failed", c(&self.backend_failed)),
            ("over_limit", c(&self.over_limit)),
            ("incomplete", c(&self.incomplete)),
        ]
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Limits of one listener; [`serve`] uses the defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections handled at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Time a client has to send the request head / ClientHello.
    pub read_timeout: Duration,
    /// Time a backend has to accept the connection.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            read_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `listener` with the default [`Limits`] until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    mode: Mode,
    router: Arc<dyn Router>,
    stats: Arc<ProxyStats>,
) -> anyhow::Result<()> {
    serve_with(listener, mode, router, stats, Limits::default()).await
}

/// Serves `listener` until the task is dropped. Each connection runs in its
/// own task; errors of one connection are logged at debug level and never
/// end the loop. Accept errors (out of file descriptors, …) are logged and
/// retried after a short pause, so this only returns an error if the
/// listener is unusable from the start.
pub async fn serve_with(
    listener: TcpListener,
    mode: Mode,
    router: Arc<dyn Router>,
    stats: Arc<ProxyStats>,
    limits: Limits,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    info!(%local, ?mode, max_connections = limits.max_connections, "proxy: listening");
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                use std::io::ErrorKind::*;
                if !matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
                    warn!(%local, error = %e, "proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        bump(&stats.accepted);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            bump(&stats.over_limit);
            debug!(%peer, "proxy: over the connection limit, closed");
            drop(client);
            continue;
        };
        let router = Arc::clone(&router);
        let stats = Arc::clone(&stats);
        let limits = Arc::clone(&limits);
        tokio::spawn(async move {
            handle(client, peer, mode, &*router, &stats, &limits).await;
            drop(slot);
        });
    }
}

/// What the client asked for, once the parser has decided.
enum Request {
    Name(String),
    NoName,
    Invalid(&'static str),
}

async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    mode: Mode,
    router: &dyn Router,
    stats: &ProxyStats,
    limits: &Limits,
) {
    let _ = client.set_nodelay(true);

    // Read until the parser decides; never more than MAX_PEEK bytes.
    let mut buf = vec![0u8; MAX_PEEK];
    let mut filled = 0;
    let deadline = Instant::now() + limits.read_timeout;
    let request = loop {
        let seen = &buf[..filled];
        let parsed = match mode {
            Mode::Http => http::host(seen),
            Mode::Tls => sni::server_name(seen),
        };
        match parsed {
            Parse::Found(name) => break Request::Name(name),
            Parse::Absent => break Request::NoName,
            Parse::Invalid(why) => break Request::Invalid(why),
            // The parsers never say Incomplete for MAX_PEEK bytes; be safe anyway.
            Parse::Incomplete if filled == buf.len() => break Request::Invalid("too large"),
            Parse::Incomplete => {}
        }
        match timeout_at(deadline, client.read(&mut buf[filled..])).await {
            Ok(Ok(0)) => {
                bump(&stats.incomplete);
                debug!(%peer, ?mode, bytes = filled, "proxy: client closed before naming a host");
                return;
            }
            Ok(Ok(n)) => filled += n,
            Ok(Err(e)) => {
                bump(&stats.incomplete);
                debug!(%peer, ?mode, error = %e, "proxy: read from client failed");
                return;
            }
            Err(_) => {
                bump(&stats.incomplete);
                debug!(%peer, ?mode, bytes = filled, "proxy: client too slow to name a host");
                if mode == Mode::Http && filled > 0 {
                    reply_http(
                        client,
                        "408 Request Timeout",
                        "request head not received in time\n",
                    )
                    .await;
                }
                return;
            }
        }
    };
    buf.truncate(filled);

    let name = match request {
        Request::Name(name) => name,
        Request::NoName => {
            bump(&stats.unknown_name);
            debug!(%peer, ?mode, "proxy: request names no host");
            match mode {
                Mode::Http => {
                    reply_http(client, "404 Not Found", "no host name in request\n").await
                }
                Mode::Tls => tls_alert(client, ALERT_UNRECOGNIZED_NAME).await,
            }
            return;
        }
        Request::Invalid(why) => {
            bump(&stats.invalid);
            debug!(%peer, ?mode, reason = why, "proxy: invalid request");
            if mode == Mode::Http {
                reply_http(client, "400 Bad Request", &format!("bad request: {why}\n")).await;
            }
            return;
        }
    };

    let Some(backend) = router.route(&name) else {
        bump(&stats.unknown_name);
        debug!(%peer, ?mode, name = %name, "proxy: unknown name");
        match mode {
            Mode::Http => {
                let body = format!("no web site {name} here\n");
                reply_http(client, "404 Not Found", &body).await;
            }
            Mode::Tls => tls_alert(client, ALERT_UNRECOGNIZED_NAME).await,
        }
        return;
    };

    let mut server = match timeout(limits.connect_timeout, TcpStream::connect(backend)).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => {
            bump(&stats.backend_failed);
            warn!(%peer, name = %name, %backend, error = %e, "proxy: backend connect failed");
            backend_failed(client, mode).await;
            return;
        }
        Err(_) => {
            bump(&stats.backend_failed);
            warn!(%peer, name = %name, %backend, "proxy: backend connect timed out");
            backend_failed(client, mode).await;
            return;
        }
    };
    let _ = server.set_nodelay(true);
    bump(&stats.routed);
    info!(%peer, name = %name, %backend, ?mode, "proxy: routed");

    if let Err(e) = server.write_all(&buf).await {
        debug!(%peer, name = %name, %backend, error = %e, "proxy: write to backend failed");
        return;
    }
    drop(buf);
    // copy_bidirectional shuts down the write half of one side when the
    // other side's read half reaches EOF, and returns when both directions
    // are done: half-closes pass through.
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok((up, down)) => {
            debug!(%peer, name = %name, %backend, up = up + filled as u64, down, "proxy: closed");
        }
        Err(e) => debug!(%peer, name = %name, %backend, error = %e, "proxy: connection ended"),
    }
}

/// TLS alert descriptions (RFC 8446 §6).
const ALERT_UNRECOGNIZED_NAME: u8 = 112;
const ALERT_INTERNAL_ERROR: u8 = 80;

async fn backend_failed(client: TcpStream, mode: Mode) {
    match mode {
        Mode::Http => reply_http(client, "502 Bad Gateway", "web server not reachable\n").await,
        Mode::Tls => tls_alert(client, ALERT_INTERNAL_ERROR).await,
    }
}

/// Answers with a short plain-text response and closes.
async fn reply_http(client: TcpStream, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    send_and_close(client, response.as_bytes()).await;
}

/// Sends a fatal TLS alert in a plaintext record and closes.
async fn tls_alert(client: TcpStream, description: u8) {
    send_and_close(client, &[21, 3, 3, 0, 2, 2, description]).await;
}

/// Writes `bytes`, half-closes, then reads and discards what the client
/// still sends (a bounded amount, for a bounded time): closing with unread
/// data would send an RST that can destroy the reply before it is read.
async fn send_and_close(mut client: TcpStream, bytes: &[u8]) {
    let _ = timeout(Duration::from_secs(2), async {
        client.write_all(bytes).await?;
        client.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match client.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::super::vectors::{hex, CURL_HELLO, OPENSSL_FRAGMENTED, OPENSSL_HELLO};
    use super::*;

    const NAME: &str = "www.hosta.gwa.demo";

    /// A backend answering every connection "hello from backend" after the
    /// request head.
    async fn hello_backend() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    let body = "hello from backend";
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        addr
    }

    /// A backend that echoes everything and closes after the client's EOF.
    async fn echo_backend() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
    }

    /// A backend that reads until EOF and then says how many bytes it got:
    /// only works if the proxy passes the client's half-close on.
    async fn count_backend() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut all = Vec::new();
                    let _ = s.read_to_end(&mut all).await;
                    let _ = s
                        .write_all(format!("got {} bytes", all.len()).as_bytes())
                        .await;
                });
            }
        });
        addr
    }

    /// An address where nothing listens.
    async fn dead_addr() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    async fn start(
        mode: Mode,
        backend: SocketAddr,
        limits: Limits,
    ) -> (SocketAddr, Arc<ProxyStats>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let routes: HashMap<String, SocketAddr> = [(NAME.to_string(), backend)].into();
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(serve_with(
            l,
            mode,
            Arc::new(routes),
            Arc::clone(&stats),
            limits,
        ));
        (addr, stats)
    }

    /// Sends `bytes`, half-closes, returns everything received until EOF.
    async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(bytes).await.unwrap();
        c.shutdown().await.unwrap();
        let mut out = Vec::new();
        timeout(Duration::from_secs(10), c.read_to_end(&mut out))
            .await
            .expect("reply in time")
            .unwrap();
        out
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[tokio::test]
    async fn http_routes_by_host() {
        let (proxy, stats) = start(Mode::Http, hello_backend().await, Limits::default()).await;

        // Request sent without half-closing: the backend's reply and close come through.
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: www.hosta.gwa.demo\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        timeout(Duration::from_secs(10), c.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let out = text(&out);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("hello from backend"), "{out}");

        // Name case, port and absolute-form do not matter.
        let out = text(
            &exchange(
                proxy,
                b"GET http://WWW.HOSTA.gwa.demo:8080/ HTTP/1.1\r\n\r\n",
            )
            .await,
        );
        assert!(out.ends_with("hello from backend"), "{out}");

        let out =
            text(&exchange(proxy, b"GET / HTTP/1.1\r\nHost: www.other.gwa.demo\r\n\r\n").await);
        assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
        assert!(out.contains("www.other.gwa.demo"), "{out}");

        let out = text(&exchange(proxy, b"GET / HTTP/1.0\r\n\r\n").await);
        assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");

        let out = text(&exchange(proxy, b"GET / HTTP/1.1\r\n\r\n").await);
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");

        // TLS on the HTTP port: refused at once with a 400.
        let out = text(&exchange(proxy, &hex(CURL_HELLO)).await);
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");

        let s = &stats;
        assert_eq!(s.accepted.load(Ordering::Relaxed), 6);
        assert_eq!(s.routed.load(Ordering::Relaxed), 2);
        assert_eq!(s.unknown_name.load(Ordering::Relaxed), 2);
        assert_eq!(s.invalid.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn http_half_close_and_body_pass_through() {
        let (proxy, _) = start(Mode::Http, count_backend().await, Limits::default()).await;
        let req = b"POST / HTTP/1.1\r\nHost: www.hosta.gwa.demo\r\nContent-Length: 5\r\n\r\nhello";
        // All at once, then a byte at a time with pauses.
        assert_eq!(
            text(&exchange(proxy, req).await),
            format!("got {} bytes", req.len())
        );
        let mut c = TcpStream::connect(proxy).await.unwrap();
        for b in req {
            c.write_all(&[*b]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        c.shutdown().await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        assert_eq!(text(&out), format!("got {} bytes", req.len()));
    }

    #[tokio::test]
    async fn http_backend_down_is_502() {
        let (proxy, stats) = start(Mode::Http, dead_addr().await, Limits::default()).await;
        let out =
            text(&exchange(proxy, b"GET / HTTP/1.1\r\nHost: www.hosta.gwa.demo\r\n\r\n").await);
        assert!(out.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{out}");
        assert_eq!(stats.backend_failed.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn tls_forwards_the_client_hello_unchanged() {
        let (proxy, stats) = start(Mode::Tls, echo_backend().await, Limits::default()).await;
        for v in [OPENSSL_HELLO, CURL_HELLO, OPENSSL_FRAGMENTED] {
            let hello = hex(v);
            // The echo proves the backend got exactly these bytes; the EOF
            // after them proves the half-close went through both ways.
            assert_eq!(exchange(proxy, &hello).await, hello);
        }
        // The ClientHello in small pieces, then more data after it.
        let hello = hex(OPENSSL_FRAGMENTED);
        let mut c = TcpStream::connect(proxy).await.unwrap();
        for piece in hello.chunks(100) {
            c.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.write_all(b"after").await.unwrap();
        let mut back = vec![0u8; hello.len() + 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back[..hello.len()], &hello[..]);
        assert_eq!(&back[hello.len()..], b"after");
        assert_eq!(stats.routed.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn tls_unknown_or_invalid_is_closed() {
        let (proxy, stats) = start(Mode::Tls, echo_backend().await, Limits::default()).await;
        // A valid ClientHello for a name without a route: unrecognized_name alert.
        let mut hello = hex(OPENSSL_HELLO);
        let at = hello.windows(4).position(|w| w == b"www.").unwrap();
        hello[at..at + 4].copy_from_slice(b"web.");
        assert_eq!(exchange(proxy, &hello).await, [21, 3, 3, 0, 2, 2, 112]);
        // Plain HTTP on the TLS port: just closed.
        assert_eq!(exchange(proxy, b"GET / HTTP/1.1\r\n").await, b"");
        assert_eq!(stats.unknown_name.load(Ordering::Relaxed), 1);
        assert_eq!(stats.invalid.load(Ordering::Relaxed), 1);
        assert_eq!(stats.routed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn slow_clients_time_out() {
        let limits = Limits {
            read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (proxy, stats) = start(Mode::Http, hello_backend().await, limits).await;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: www.ho")
            .await
            .unwrap();
        let mut out = Vec::new();
        timeout(Duration::from_secs(5), c.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert!(text(&out).starts_with("HTTP/1.1 408 "), "{}", text(&out));
        assert_eq!(stats.incomplete.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn over_the_limit_is_closed_at_once() {
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let (proxy, stats) = start(Mode::Tls, echo_backend().await, limits).await;
        // The first connection holds the only slot while it says nothing.
        let _first = TcpStream::connect(proxy).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut second = TcpStream::connect(proxy).await.unwrap();
        let mut out = Vec::new();
        timeout(Duration::from_secs(2), second.read_to_end(&mut out))
            .await
            .expect("closed at once")
            .unwrap();
        assert!(out.is_empty());
        assert_eq!(stats.over_limit.load(Ordering::Relaxed), 1);
        // Once the first is gone, its slot is free again.
        drop(_first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let hello = hex(CURL_HELLO);
        assert_eq!(exchange(proxy, &hello).await, hello);
    }

    #[tokio::test]
    async fn closure_router() {
        let backend = echo_backend().await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = l.local_addr().unwrap();
        let router = move |name: &str| name.starts_with("www.").then_some(backend);
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(serve(l, Mode::Tls, Arc::new(router), Arc::clone(&stats)));
        let hello = hex(CURL_HELLO);
        assert_eq!(exchange(proxy, &hello).await, hello);
        assert_eq!(stats.snapshot()[1], ("routed", 1));
    }
}

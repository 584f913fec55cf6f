//! The LAN DNS forwarder's RGW64 step: forwards a query upstream and, when
//! [`rgw_dns::synth`] says so, asks the other address type and synthesises
//! the reply (proxy ULA for AAAA, proxy IPv4 bound at DNS time for A).

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Result;
use rgw_dns::synth::{Family, Step};
use tracing::info;

use super::Rgw64;

/// Forwards `query` with `ask` (UDP or TCP to the upstream) and returns the
/// reply for the client at `peer`.
pub async fn forward<F, Fut>(
    rgw64: Option<&Rgw64>,
    query: &[u8],
    peer: SocketAddr,
    ask: F,
) -> Result<Vec<u8>>
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    let first = ask(query.to_vec()).await?;
    let Some(r) = rgw64 else {
        return Ok(first);
    };
    let family = match peer.ip() {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => Family::V6,
        _ => Family::V4,
    };
    let Step::AskOther { query: q2, kind } = r.synth.after_first(query, &first, family) else {
        return Ok(first);
    };
    let second = match ask(q2).await {
        Ok(s) => s,
        // The other type's lookup failed: the client gets the real answer.
        Err(_) => return Ok(first),
    };
    match r
        .synth
        .synthesize(&first, &second, kind, &mut |v6| r.map_v6(v6))
    {
        Some(reply) => {
            info!(%peer, kind = ?kind, "RGW64: synthesised");
            Ok(reply)
        }
        None => Ok(first),
    }
}

//! SIP (RFC 3261) message rewriter (work in progress).

use crate::{Direction, FlowAddrs, MessageResult, Outcome, PortAlloc, Rewriter};

/// Rewrites SIP requests and responses (UDP datagrams or TCP stream slices).
#[derive(Debug, Clone, Default)]
pub struct SipRewriter;

impl Rewriter for SipRewriter {
    fn rewrite(
        &self,
        buf: &[u8],
        _dir: Direction,
        _flow: &FlowAddrs,
        _ports: &mut dyn PortAlloc,
    ) -> MessageResult {
        MessageResult {
            outcome: Outcome::Unchanged,
            consumed: buf.len(),
            pinholes: Vec::new(),
        }
    }
}

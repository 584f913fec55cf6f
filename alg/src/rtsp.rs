//! RTSP (RFC 2326) message rewriter (work in progress).

use crate::{Direction, FlowAddrs, MessageResult, Outcome, PortAlloc, Rewriter};

/// Rewrites RTSP messages on a TCP stream.
#[derive(Debug, Clone, Default)]
pub struct RtspRewriter;

impl Rewriter for RtspRewriter {
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

//! IPv6 → IPv4 translation (RFC 7915 §5).
use std::time::Instant;

use crate::{Drop, Translator};

impl Translator {
    pub(crate) fn translate_6to4(
        &mut self,
        _now: Instant,
        _packet: &[u8],
        _out: &mut Vec<Vec<u8>>,
    ) -> Result<(), Drop> {
        Err(Drop::BadHeader)
    }
}

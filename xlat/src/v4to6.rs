//! IPv4 → IPv6 translation (RFC 7915 §4).
use std::time::Instant;

use crate::{Drop, Translator};

impl Translator {
    pub(crate) fn translate_4to6(
        &mut self,
        _now: Instant,
        _packet: &[u8],
        _out: &mut Vec<Vec<u8>>,
    ) -> Result<(), Drop> {
        Err(Drop::BadHeader)
    }
}

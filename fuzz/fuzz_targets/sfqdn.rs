//! Fuzz target `sfqdn`: see `rgw_dns::fuzz_harness::sfqdn` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rgw_dns::fuzz_harness::sfqdn(data));

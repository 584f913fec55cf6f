//! Fuzz target `dns_message`: see `rgw_dns::fuzz_harness::dns_message` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rgw_dns::fuzz_harness::dns_message(data));

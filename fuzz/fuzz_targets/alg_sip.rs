//! Fuzz target `alg_sip`: see `rgw_alg::fuzz_harness::alg_sip` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rgw_alg::fuzz_harness::alg_sip(data));

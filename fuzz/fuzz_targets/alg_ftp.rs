//! Fuzz target `alg_ftp`: see `rgw_alg::fuzz_harness::alg_ftp` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rgw_alg::fuzz_harness::alg_ftp(data));

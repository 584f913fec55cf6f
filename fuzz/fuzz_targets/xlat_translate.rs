//! Fuzz target `xlat_translate`: see `rgw_xlat::fuzz_harness::xlat_translate` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rgw_xlat::fuzz_harness::xlat_translate(data));

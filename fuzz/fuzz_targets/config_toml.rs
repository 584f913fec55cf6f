//! Fuzz target `config_toml`: see `rgw::fuzz_harness::config_toml` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rgw::fuzz_harness::config_toml(data));

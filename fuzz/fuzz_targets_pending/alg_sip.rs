//! Fuzz target `alg_sip`: one message through the sip rewriter (see alg_common.rs).
#![no_main]

include!("alg_common.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rw = rgw_alg::sip::SipRewriter::default();
    check_rewriter(&rw, data, 5060);
});

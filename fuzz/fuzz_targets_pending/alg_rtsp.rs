//! Fuzz target `alg_rtsp`: one message through the rtsp rewriter (see alg_common.rs).
#![no_main]

include!("alg_common.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rw = rgw_alg::rtsp::RtspRewriter::default();
    check_rewriter(&rw, data, 554);
});

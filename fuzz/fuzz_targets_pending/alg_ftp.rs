//! Fuzz target `alg_ftp`: one message through the ftp rewriter (see alg_common.rs).
#![no_main]

include!("alg_common.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rw = rgw_alg::ftp::FtpRewriter;
    check_rewriter(&rw, data, 21);
});

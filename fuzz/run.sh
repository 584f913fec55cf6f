#!/bin/sh
# Fuzzes every target for SECONDS each (default 600) from the kept corpus and
# the seeds, then minimises the corpus back into corpus/<target>/.
#   fuzz/run.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz and a nightly toolchain; runs at nice 15 (shared machine).
set -eu
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-"dns_message sfqdn config_toml seqadj alg_ftp alg_sip alg_rtsp alg_engine xlat_translate"}
nice -n 15 cargo +nightly fuzz build -O
# The binaries, run directly: edits made while fuzzing do not rebuild mid-run.
bin=target/x86_64-unknown-linux-gnu/release
for t in $targets; do
    mkdir -p "corpus/$t" "seeds/$t" "work/$t" "artifacts/$t"
    echo "== $t: ${secs}s"
    nice -n 15 "$bin/$t" -artifact_prefix="artifacts/$t/" "work/$t" "corpus/$t" "seeds/$t" \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 2>&1 |
        grep -E '^(#[0-9]+ +DONE|stat::|==[0-9]+==|INFO: Running|SUMMARY|Done|thread)' || true
    # Minimise (libFuzzer merge, what `cargo fuzz cmin` does): everything
    # found (work/) and kept (corpus/) into a fresh corpus/.
    rm -rf "corpus.new/$t" && mkdir -p "corpus.new/$t"
    nice -n 15 "$bin/$t" "corpus.new/$t" "corpus/$t" "work/$t" "seeds/$t" \
        -merge=1 -max_len=4096 >/dev/null 2>&1
    rm -rf "corpus/$t" && mv "corpus.new/$t" "corpus/$t" && rmdir corpus.new 2>/dev/null || true
    echo "$t: $(ls "corpus/$t" | wc -l) inputs, $(du -sb "corpus/$t" | cut -f1) bytes"
done

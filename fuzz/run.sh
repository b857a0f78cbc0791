#!/usr/bin/env bash
# Run one fuzz target for a while with the settings of docs/fuzzing.md, from the binaries that
# `RUSTC_BOOTSTRAP=1 cargo fuzz build -O` left (so a source change elsewhere in the shared tree
# does not trigger a rebuild mid-campaign), and print one summary line.
#
# Usage: fuzz/run.sh TARGET SECONDS [extra libFuzzer flags...]
# Env:   SANITIZER=none  use the binaries of `cargo fuzz build -O -s none` (target/release/..)
#        JOBS=N           libFuzzer -fork=N (default 1: one core)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="$1"; secs="$2"; shift 2
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin="$here/target/$triple/release/$target"
if [ ! -x "$bin" ]; then
    echo "no $bin: run 'RUSTC_BOOTSTRAP=1 cargo fuzz build -O' in fuzz/ first" >&2
    exit 2
fi
mkdir -p "$here/corpus/$target" "$here/artifacts/$target" "$here/logs"
log="$here/logs/$target.log"
cd "$here"
set +e
"$bin" "corpus/$target" \
    -artifact_prefix="artifacts/$target/" \
    -max_total_time="$secs" \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -malloc_limit_mb=512 \
    -print_final_stats=1 \
    ${JOBS:+-fork=$JOBS} \
    "$@" >"$log" 2>&1
rc=$?
set -e
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
last=$(grep -E '^#[0-9]+' "$log" | tail -1)
cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | head -1)
ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | head -1)
corp=$(echo "$last" | grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' | head -1)
crashes=$(ls "artifacts/$target" 2>/dev/null | wc -l)
echo "$target: ${secs}s exit=$rc runs=${runs:-?} exec/s=${eps:-?} ${cov:-cov: ?} ${ft:-ft: ?} ${corp:-corp: ?} peak_rss=${rss:-?}MB artifacts=$crashes (log: fuzz/logs/$target.log)"
exit $rc

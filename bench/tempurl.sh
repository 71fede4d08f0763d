#!/usr/bin/env bash
# Signing rate: ironboot's TempURL engine vs python-swiftclient 4.11 generate_temp_url
# (sha256), side by side in one run, on one core and on all cores.
#
# Usage: bench/tempurl.sh [PYTHON]   (PYTHON must import swiftclient; default: the test venv)
# Env:   RUNS (5) RUN_SECONDS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${IRONBOOT_TEST_PYTHON:-/tmp/ironboot-test/venv/bin/python}}
RUNS=${RUNS:-5}
SECONDS_PER_RUN=${RUN_SECONDS:-3}
CORES=$(nproc)
"$PY" -c 'import swiftclient' 2>/dev/null || { echo "$PY cannot import swiftclient (run scripts/swift-aio.sh install, or pass a PYTHON)" >&2; exit 2; }
cargo build --release --quiet --example bench_tempurl
BIN=target/release/examples/bench_tempurl

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A results
for threads in 1 "$CORES"; do
    rs=(); ps=()
    for _ in $(seq "$RUNS"); do   # interleaved, so both see the same machine state
        rs+=("$("$BIN" "$threads" "$SECONDS_PER_RUN")")
        ps+=("$("$PY" bench/tempurl_swiftclient.py "$threads" "$SECONDS_PER_RUN")")
    done
    results[rust_$threads]=$(printf '%s\n' "${rs[@]}" | median)
    results[py_$threads]=$(printf '%s\n' "${ps[@]}" | median)
done

echo "| workers | python-swiftclient URLs/s | ironboot URLs/s | ratio |"
echo "|---|---|---|---|"
for threads in 1 "$CORES"; do
    r=${results[rust_$threads]}; p=${results[py_$threads]}
    printf '| %s | %.0f | %.0f | %.1f× |\n' "$threads" "$p" "$r" "$(awk -v r="$r" -v p="$p" 'BEGIN{print r/p}')"
done
echo
echo "($RUNS interleaved runs of ${SECONDS_PER_RUN}s each, medians; $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); python-swiftclient $("$PY" -c 'from importlib.metadata import version; print(version("python-swiftclient"))'))"

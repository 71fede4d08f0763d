#!/usr/bin/env bash
# bench/boot-modes.sh -- P6: how long a real iPXE client under QEMU takes to boot its deploy
# kernel in cache mode against swift mode, side by side in one run.
#
#   source /tmp/svc/env-all.sh   # or run under scripts/test.sh's services
#   bench/boot-modes.sh
#
# It runs scripts/e2e-ipxe.sh (all its checks included) with
#   E2E_SCENARIOS=$BENCH_SCENARIOS  E2E_REPEAT=$BENCH_REPEAT  E2E_TIMING_FILE=<tsv>
# so the scenarios take turns, round after round, against the same services, and each
# VM's times are appended to the TSV: seconds from QEMU's start until the kernel's first
# console line ("Linux version ...") and until the initrd's BOOT-MARKER-OK (polled every
# 0.25 s).  The same kernel (14 MB) and busybox initrd (1 MB) come from:
#   bios-deploy    swift mode: TempURLs in the script, plain Swift objects
#   bios-glance    swift mode: TempURLs in the script, Glance images stored in Swift as
#                  manifests of 1 MB segments
#   bios-redirect  swift mode with tempurl_redirect: a 302 from ironboot to a TempURL
#   bios-cache     cache mode: Glance (file store) -> ironboot's master cache -> ironboot's
#                  boot listener
# and it prints the medians per scenario and each one's ratio to BENCH_BASELINE.
#
# Env: BENCH_SCENARIOS (bios-deploy bios-glance bios-redirect bios-cache)
#      BENCH_REPEAT (5)   rounds
#      BENCH_BASELINE (bios-deploy)  the swift-mode scenario the ratios are against
#      IRONBOOT_BIN       binary to test (default: `cargo build --release`, then
#                         ${CARGO_TARGET_DIR:-target}/release/ironboot)
#      IRONBOOT_TEST_DIR and the service variables of scripts/e2e-ipxe.sh
# Exit: e2e-ipxe.sh's status (the numbers are printed either way; a VM that did not exit
# by itself after BOOT-MARKER-OK is left out of the medians).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT" || exit 2
SCEN=${BENCH_SCENARIOS:-bios-deploy bios-glance bios-redirect bios-cache}
REPEAT=${BENCH_REPEAT:-5}
BASE=${BENCH_BASELINE:-bios-deploy}
if [ -z "${IRONBOOT_BIN:-}" ]; then
    echo "[bench] cargo build --release --bin ironboot" >&2
    cargo build --quiet --release --bin ironboot || exit 2
    T=${CARGO_TARGET_DIR:-$ROOT/target}
    case "$T" in /*) ;; *) T=$ROOT/$T ;; esac
    IRONBOOT_BIN=$T/release/ironboot
fi
TSV=$(mktemp /tmp/ironboot-boot-modes.XXXXXX.tsv)
trap 'rm -f "$TSV"' EXIT
LABEL=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain)" ] || LABEL="$LABEL + uncommitted changes"

echo "[bench] scripts/e2e-ipxe.sh: E2E_SCENARIOS=\"$SCEN\" E2E_REPEAT=$REPEAT IRONBOOT_BIN=$IRONBOOT_BIN" >&2
IRONBOOT_BIN=$IRONBOOT_BIN E2E_SCENARIOS=$SCEN E2E_REPEAT=$REPEAT E2E_TIMING_FILE=$TSV \
    scripts/e2e-ipxe.sh >&2
rc=$?

echo
echo "ironboot $LABEL ($("$IRONBOOT_BIN" --version 2>/dev/null | awk '{print $NF}'), $(basename "$(dirname "$IRONBOOT_BIN")")), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%F), e2e rc $rc"
python3 - "$TSV" "$BASE" $SCEN <<'PYEOF'
import statistics
import sys

path, base, order = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = {s: [] for s in order}
left_out = {s: 0 for s in order}
for line in open(path):
    f = line.rstrip("\n").split("\t")
    if len(f) < 7:
        continue
    sc, _round, end, wall, tk, tm, _tag = f[:7]
    if sc not in runs:
        continue
    if end != "exited" or tk == "-" or tm == "-":
        left_out[sc] += 1
        continue
    runs[sc].append((float(tk), float(tm), float(wall)))


def med(sc, i):
    v = [r[i] for r in runs[sc]]
    return statistics.median(v) if v else None


def fmt(x):
    return "-" if x is None else f"{x:.1f}"


print("| scenario | runs | kernel start, median s | BOOT-MARKER-OK, median s | all runs (marker) | vs %s (marker) |" % base)
print("|---|---|---|---|---|---|")
bm = med(base, 1) if base in runs else None
for sc in order:
    m = med(sc, 1)
    ratio = "-" if (m is None or not bm) else f"{m / bm:.2f}×"
    allv = " ".join(f"{r[1]:.1f}" for r in runs[sc])
    extra = f" (+{left_out[sc]} left out)" if left_out[sc] else ""
    print(f"| {sc} | {len(runs[sc])}{extra} | {fmt(med(sc, 0))} | {fmt(m)} | {allv} | {ratio} |")
PYEOF
exit "$rc"

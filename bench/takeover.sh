#!/usr/bin/env bash
# Benchmark P5: takeover of the nodes of a dead conductor, on PostgreSQL, against Ironic's
# own per-node path for the same number of nodes, side by side in one run.
#
#   BENCH_PG_URL=postgres://user@host:port/db bench/takeover.sh
#
# ironboot (examples/bench_takeover.rs, release build): two conductors share a fresh
# database (created here, dropped at exit) holding NODES nodes (20000); the ring gives the
# survivor about half. The other stops heartbeating; one ring refresh takes its ~10,000
# nodes over, writing their static-mirror files with freshly signed TempURLs (swift mode).
# ROUNDS times (3). Then the same in cache mode with a warm master cache (each node
# reserved, its image linked into http_root, its snapshot rewritten), and the file-system
# floor: the same directory, file and link operations alone.
# The state (http_root) goes to BENCH_DIRS in turn (default: "/var/tmp /dev/shm", the disk
# and a tmpfs), since on this machine's disk every metadata operation costs ~0.2 ms.
#
# Ironic (bench/ironic-reference.sh, ironic from PyPI in a venv): its render_template() on
# its ipxe_config.template plus 2 SHA1 TempURLs per node, for the number of nodes ironboot
# took over, without file I/O.
#
# Env: BENCH_PG_URL (required)  NODES (20000)  ROUNDS (3)  BENCH_DIRS ("/var/tmp /dev/shm")
#      SKIP_IRONIC=1  do not run the Ironic reference (it takes ~100 s per 10,000 nodes)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BENCH_PG_URL:?BENCH_PG_URL=postgres://user@host:port/db is required}"
NODES=${NODES:-20000}
ROUNDS=${ROUNDS:-3}
BENCH_DIRS=${BENCH_DIRS:-/var/tmp /dev/shm}
command -v psql >/dev/null || { echo "psql is missing: apt-get install postgresql-client" >&2; exit 2; }
cargo build --release --quiet --example bench_takeover
BIN=target/release/examples/bench_takeover
DB=""
cleanup() { [ -z "$DB" ] || psql -q "$BENCH_PG_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1; }
trap cleanup EXIT
run() {  # mode dir
    DB=bench_takeover_$$_$RANDOM
    psql -q "$BENCH_PG_URL" -c "CREATE DATABASE $DB" >/dev/null
    BENCH_DIR=$2 "$BIN" "${BENCH_PG_URL%/*}/$DB" "$NODES" "$1" "$ROUNDS"
    psql -q "$BENCH_PG_URL" -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null
    DB=""
}
OUT=$(mktemp)
for dir in $BENCH_DIRS; do
    fs=$(df -T "$dir" | awk 'NR==2 {print $2}')
    for mode in swift cache; do
        echo "== ironboot $mode mode, state on $dir ($fs)" >&2
        run "$mode" "$dir" | sed "s|^|dir=$dir fs=$fs |" | tee -a "$OUT"
    done
done
TAKEN=$(awk '/mode=swift/ {for (i=1;i<=NF;i++) if ($i ~ /^taken_over=/) {split($i,a,"="); print a[2]; exit}}' "$OUT")
if [ "${SKIP_IRONIC:-0}" != 1 ]; then
    echo "== Ironic, $TAKEN nodes" >&2
    IRONIC=$(bench/ironic-reference.sh "$TAKEN")
    echo "$IRONIC" >&2
    IRONIC_S=$(echo "$IRONIC" | sed -n 's/.* in \([0-9.]*\) s.*/\1/p')
    echo
    echo "| state on | mode | nodes taken over | takeover (median of $ROUNDS) | file-system floor | Ironic, same nodes | ratio |"
    echo "|---|---|---|---|---|---|---|"
    for dir in $BENCH_DIRS; do
        for mode in swift cache; do
            key=takeover_pass_s; [ "$mode" = cache ] && key=adopted_all_s
            med=$(grep "dir=$dir " "$OUT" | grep "mode=$mode" | grep -o "$key=[0-9.]*" | cut -d= -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
            n=$(grep "dir=$dir " "$OUT" | grep "mode=$mode" | grep -o 'taken_over=[0-9]*' | head -1 | cut -d= -f2)
            ratio=$(awk -v i="$IRONIC_S" -v m="$med" 'BEGIN { printf "%.0f×", i / m }')
            fs=$(grep "dir=$dir " "$OUT" | head -1 | grep -o 'fs=[a-z0-9]*' | cut -d= -f2)
            floor=$(grep "dir=$dir " "$OUT" | grep -o 'file_system_floor_s=[0-9.]*' | cut -d= -f2 | sort -n | head -1)
            echo "| $dir ($fs) | $mode | $n | $med s | $floor s | $IRONIC_S s | $ratio |"
        done
    done
fi
rm -f "$OUT"

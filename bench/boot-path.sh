#!/usr/bin/env bash
# Boot-path benchmark: per-node iPXE scripts rendered by ironboot with freshly signed Swift
# TempURLs, against nginx serving the same scripts as static files (ironboot's own static
# mirror of Ironic's http_root), side by side in one run.
#
#   bench/boot-path.sh
#   BASELINE_REV=9bdbeae bench/boot-path.sh   # also the ironboot of that revision, same run
#   BENCH_PG_URL=postgres://ironboot@127.0.0.1:25433/ironboot WRITERS=3 bench/boot-path.sh
#
# Env: NODES (10000) CONNECTIONS (1000) DURATION (20 s per run) RUNS (3, interleaved)
#      BENCH_PG_URL=postgres://user@host:port/db  use a fresh database on that PostgreSQL
#                   server instead of SQLite (created here, dropped at exit). With
#                   PostgreSQL every boot request queries the database; with SQLite the
#                   store answers from its in-memory index of committed boot records.
#      BASELINE_REV=<git rev>  compare with the ironboot of that revision in the same run:
#                   its ironboot binary and bench_seed example are built in a detached git
#                   worktree under the bench's temp dir (removed at exit), and it runs
#                   beside the current one with its own state dir, ports and database
#                   (seeded by its own bench_seed; a fresh second PostgreSQL database with
#                   BENCH_PG_URL). Each round runs nginx, baseline, current; the report
#                   adds a baseline row and the current/baseline ratios.
#      BENCH_BASELINE_TARGET (/tmp/ironboot-bench-baseline-target)  the baseline's
#                   CARGO_TARGET_DIR, kept between runs so only ironboot itself rebuilds.
#      WRITERS=N (0)  needs BENCH_PG_URL. N conductors share the database: the measured
#                   one and N-1 more `ironboot serve` ([DEFAULT] host bench-w1..., their own
#                   API and boot ports, state_path and http_root), started once the
#                   measured one's mirror is complete, and waited for until each answers and the measured one
#                   counts them all alive (each keeps mirror files only for the nodes it owns).
#                   During each wrk run of ironboot (never nginx's) a writer
#                   (bench/boot-path-writers.py, python3 stdlib) sends WRITE_RATE writes/s
#                   round-robin to all N REST APIs, in pairs on a random node: PATCH
#                   /v1/nodes/<uuid> (merge patch: instance_info.kernel_append_params =
#                   bench=<counter>, and driver_info's deploy images = the Swift objects
#                   bench_seed stored), then PUT /v1/nodes/<uuid>/boot {"target":"deploy"}.
#                   That PUT re-prepares the same Swift images, HEAD-checked against a stub
#                   Swift on 127.0.0.1 ([glance] swift_internal_endpoint_url), with [pxe]
#                   kernel_append_params = bench_seed's, so every node keeps the script
#                   bench_seed gave it. nginx serves a copy of the mirror taken before any
#                   conductor but the measured one starts, so writes never change the
#                   baseline. The report adds the writes that got 2xx, the errors (by method
#                   and status), the writes sent per second and their latency. With
#                   BASELINE_REV the baseline gets the same: N-1 more conductors of its own
#                   binary on its own database, and the writer during its runs.
#      WRITE_RATE (50)  total writes per second of that writer load (PATCHes and PUTs).
# Needs: wrk and nginx (apt-get install wrk nginx-light). Nothing else: the nodes are
# written straight into a fresh SQLite database (examples/bench_seed.rs), so no Swift is
# contacted; the boot path never calls Swift anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-10000}
CONNECTIONS=${CONNECTIONS:-1000}
DURATION=${DURATION:-20}
RUNS=${RUNS:-3}
WRITERS=${WRITERS:-0}
WRITE_RATE=${WRITE_RATE:-50}
case "$WRITERS" in ''|*[!0-9]*) echo "WRITERS=$WRITERS is not a number of conductors" >&2; exit 2;; esac
awk -v r="$WRITE_RATE" 'BEGIN { exit !(r ~ /^[0-9]+(\.[0-9]+)?$/ && r > 0) }' \
    || { echo "WRITE_RATE=$WRITE_RATE is not a positive number of writes per second" >&2; exit 2; }
if [ "$WRITERS" -gt 0 ] && [ -z "${BENCH_PG_URL:-}" ]; then
    echo "WRITERS=$WRITERS needs BENCH_PG_URL: conductors share a PostgreSQL database (SQLite has one owner)" >&2
    exit 2
fi
BASELINE_REV=${BASELINE_REV:-}
BASE_TARGET=${BENCH_BASELINE_TARGET:-/tmp/ironboot-bench-baseline-target}
for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install wrk nginx-light curl" >&2; exit 2; }
done
if [ -n "$BASELINE_REV" ]; then
    BASE_COMMIT=$(git rev-parse --verify --quiet "$BASELINE_REV^{commit}") \
        || { echo "BASELINE_REV=$BASELINE_REV is not a commit of this repository" >&2; exit 2; }
    BASE_LABEL=$(git rev-parse --short "$BASE_COMMIT")
fi
CUR_LABEL=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain)" ] || CUR_LABEL="$CUR_LABEL + uncommitted changes"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

DIR=$(mktemp -d /tmp/ironboot-bench.XXXXXX)
chmod 755 "$DIR"   # nginx workers run as nobody
IB_PID=""; BASE_PID=""; NGINX_PID=""; PG_DB=""; PG_DB_BASE=""; BASE_WT=""
WRITER_PID=""; STUB_PID=""; EXTRA_PIDS=()
cleanup() {
    [ -n "$WRITER_PID" ] && kill "$WRITER_PID" 2>/dev/null && wait "$WRITER_PID" 2>/dev/null
    for pid in "${EXTRA_PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    [ -n "$STUB_PID" ] && kill "$STUB_PID" 2>/dev/null && wait "$STUB_PID" 2>/dev/null
    [ -n "$IB_PID" ] && kill "$IB_PID" 2>/dev/null && wait "$IB_PID" 2>/dev/null
    [ -n "$BASE_PID" ] && kill "$BASE_PID" 2>/dev/null && wait "$BASE_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    [ -n "$PG_DB" ] && psql -q "$BENCH_PG_URL" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1
    [ -n "$PG_DB_BASE" ] && psql -q "$BENCH_PG_URL" -c "DROP DATABASE IF EXISTS $PG_DB_BASE" >/dev/null 2>&1
    if [ -n "$BASE_WT" ]; then
        git worktree remove --force "$BASE_WT" >/dev/null 2>&1 || { rm -rf "$BASE_WT"; git worktree prune; }
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
API_PORT=$(free_port); BOOT_PORT=$(free_port); NGINX_PORT=$(free_port)

cargo build --release --quiet --bin ironboot --example bench_seed
IB_BIN=target/release/ironboot; IB_SEED=target/release/examples/bench_seed
if [ -n "$BASELINE_REV" ]; then
    BASE_WT="$DIR/baseline"
    git worktree add --quiet --detach "$BASE_WT" "$BASE_COMMIT"
    echo "building baseline $BASE_LABEL (CARGO_TARGET_DIR=$BASE_TARGET)..." >&2
    (cd "$BASE_WT" && CARGO_TARGET_DIR="$BASE_TARGET" cargo build --release --quiet --bin ironboot --example bench_seed)
    # Copied out so the cache can serve another BASELINE_REV while this run goes on.
    cp "$BASE_TARGET/release/ironboot" "$DIR/ironboot-baseline"
    cp "$BASE_TARGET/release/examples/bench_seed" "$DIR/bench_seed-baseline"
    BASE_BIN="$DIR/ironboot-baseline"; BASE_SEED="$DIR/bench_seed-baseline"
    BASE_API_PORT=$(free_port); BASE_BOOT_PORT=$(free_port)
fi
printf 'bench-temp-url-key' > "$DIR/key"
if [ "$WRITERS" -gt 0 ]; then
    # the Swift that the writers' prepares HEAD-check; the boot path never calls it
    python3 bench/boot-path-writers.py swift-stub "$DIR/swift-stub.port" 2>"$DIR/swift-stub.log" &
    STUB_PID=$!
    for _ in $(seq 100); do [ -s "$DIR/swift-stub.port" ] && break; sleep 0.1; done
    [ -s "$DIR/swift-stub.port" ] || { echo "the stub Swift did not start:" >&2; cat "$DIR/swift-stub.log" >&2; exit 1; }
    STUB_PORT=$(cat "$DIR/swift-stub.port")
fi
# Only options the baseline's config knows too (it refuses unknown ones): all of these
# predate the refactor.
write_conf() {  # file state_dir api_port boot_port [host]
    cat > "$1" <<CONF
[DEFAULT]
state_path = $2
${5:+host = $5}
[api]
port = $3
[httpboot]
port = $4
[ipxe]
use_swift = true
[glance]
swift_endpoint_url = http://10.0.2.2:28080
swift_account = AUTH_test
swift_temp_url_key_file = $DIR/key
CONF
    if [ "$WRITERS" -gt 0 ]; then
        # the writers' PUT /boot prepares what bench_seed stored: the same Swift objects,
        # checked at the stub (never at swift_endpoint_url), with the same kernel command line
        cat >> "$1" <<CONF
swift_internal_endpoint_url = http://127.0.0.1:$STUB_PORT
[pxe]
kernel_append_params = nofb vga=normal console=ttyS0
CONF
    fi
}
write_conf "$DIR/ironboot.conf" "$DIR/state" "$API_PORT" "$BOOT_PORT"
[ -z "$BASELINE_REV" ] || write_conf "$DIR/baseline.conf" "$DIR/state-baseline" "$BASE_API_PORT" "$BASE_BOOT_PORT"
DB_LABEL="SQLite"
if [ -n "${BENCH_PG_URL:-}" ]; then
    PG_DB="ironboot_bench_$$"
    psql -q "$BENCH_PG_URL" -c "CREATE DATABASE $PG_DB" >/dev/null
    printf '[database]\nconnection = %s/%s\n' "${BENCH_PG_URL%/*}" "$PG_DB" >> "$DIR/ironboot.conf"
    if [ -n "$BASELINE_REV" ]; then
        PG_DB_BASE="ironboot_bench_$$_baseline"
        psql -q "$BENCH_PG_URL" -c "CREATE DATABASE $PG_DB_BASE" >/dev/null
        printf '[database]\nconnection = %s/%s\n' "${BENCH_PG_URL%/*}" "$PG_DB_BASE" >> "$DIR/baseline.conf"
    fi
    DB_LABEL="PostgreSQL"
fi
echo "seeding $NODES nodes ($DB_LABEL)..." >&2
"$IB_SEED" "$DIR/ironboot.conf" "$NODES" "$DIR/paths.txt"
PATHS="$DIR/paths.txt"
if [ -n "$BASELINE_REV" ]; then
    echo "seeding $NODES nodes ($DB_LABEL) with the baseline's bench_seed..." >&2
    "$BASE_SEED" "$DIR/baseline.conf" "$NODES" "$DIR/paths-baseline.txt"
    if cmp -s "$DIR/paths.txt" "$DIR/paths-baseline.txt"; then
        echo "both seeders wrote the same $(wc -l <"$DIR/paths.txt") paths: one paths file for all servers" >&2
        BASE_PATHS="$DIR/paths.txt"
    else
        echo "note: the seeders wrote different paths; each server gets its own" >&2
        BASE_PATHS="$DIR/paths-baseline.txt"
    fi
fi

"$IB_BIN" --config "$DIR/ironboot.conf" --log warn serve 2>"$DIR/ironboot.log" &
IB_PID=$!
if [ -n "$BASELINE_REV" ]; then
    "$BASE_BIN" --config "$DIR/baseline.conf" --log warn serve 2>"$DIR/ironboot-baseline.log" &
    BASE_PID=$!
fi
# serve writes the static mirror (one config per node) at start; wait for all of it
wait_mirror() {  # name pid state_dir log
    local n=0
    for _ in $(seq 600); do
        kill -0 "$2" 2>/dev/null || { echo "$1 exited:" >&2; cat "$4" >&2; exit 1; }
        n=$( (find "$3/httpboot" -name config 2>/dev/null || true) | wc -l)
        [ "$n" -ge "$NODES" ] && return 0
        sleep 0.5
    done
    echo "the $1 mirror has only $n of $NODES configs" >&2; exit 1
}
wait_mirror "ironboot current" "$IB_PID" "$DIR/state" "$DIR/ironboot.log"
# an extra conductor keeps mirror files only for the nodes it owns: wait until it answers
wait_up() {  # name pid api_port log
    for _ in $(seq 600); do
        kill -0 "$2" 2>/dev/null || { echo "$1 exited:" >&2; cat "$4" >&2; exit 1; }
        curl -sf "http://127.0.0.1:$3/healthz" >/dev/null && return 0
        sleep 0.5
    done
    echo "$1 does not answer on port $3" >&2; exit 1
}
# until the conductor on api_port counts N conductors alive (the ring is complete)
wait_ring() {  # api_port n
    for _ in $(seq 600); do
        [ "$(curl -sf "http://127.0.0.1:$1/v1/conductors" | python3 -c 'import json,sys; print(sum(c["alive"] for c in json.load(sys.stdin)["conductors"]))' 2>/dev/null)" = "$2" ] && return 0
        sleep 0.5
    done
    echo "the conductor on port $1 does not see $2 live conductors" >&2; exit 1
}
[ -z "$BASELINE_REV" ] || wait_mirror "ironboot baseline" "$BASE_PID" "$DIR/state-baseline" "$DIR/ironboot-baseline.log"

# nginx serves the measured conductor's mirror; with writers, a copy of it taken before any
# write, since each write rewrites a node's files in every conductor's mirror
NGINX_ROOT="$DIR/state/httpboot"
CUR_APIS=("$API_PORT"); BASE_APIS=()
[ -z "$BASELINE_REV" ] || BASE_APIS=("$BASE_API_PORT")
if [ "$WRITERS" -gt 0 ]; then
    NGINX_ROOT="$DIR/nginx-root"
    # the configs come before their pxelinux.cfg links: wait for every path wrk asks for
    for _ in $(seq 600); do
        n=$( (find "$DIR/state/httpboot/pxelinux.cfg" -mindepth 1 2>/dev/null || true) | wc -l)
        [ "$n" -ge "$(wc -l <"$PATHS")" ] && break
        sleep 0.5
    done
    # (the conductor may be rewriting it: its temporary files are left out; renames are atomic)
    python3 -c 'import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2], symlinks=True, ignore=shutil.ignore_patterns(".*.tmp-*"))' \
        "$DIR/state/httpboot" "$NGINX_ROOT"
    while read -r path; do
        [ -e "$NGINX_ROOT$path" ] || { echo "the copy of the mirror for nginx lacks $path" >&2; exit 1; }
    done <"$PATHS"
    # N-1 more conductors on the measured one's database, each with its own host name,
    # ports, state_path and http_root (under its state_path)
    start_extras() {  # name bin conf_of_measured state_prefix host_prefix -> appends to EXTRA_PIDS, prints API ports
        local i conf state api boot
        for i in $(seq $((WRITERS - 1))); do
            conf="$DIR/$4-w$i.conf"; state="$DIR/$4-w$i"
            api=$(free_port); boot=$(free_port)
            write_conf "$conf" "$state" "$api" "$boot" "$5-w$i"
            sed -n '/^\[database\]/,$p' "$3" >> "$conf"
            "$2" --config "$conf" --log warn serve >"$state.log" 2>&1 &
            EXTRA_PIDS+=("$!")
            echo "$api $! $state"
        done
    }
    start_extras "current" "$IB_BIN" "$DIR/ironboot.conf" state bench > "$DIR/extras-current.txt"
    [ -z "$BASELINE_REV" ] || start_extras "baseline" "$BASE_BIN" "$DIR/baseline.conf" state-baseline bench-base > "$DIR/extras-baseline.txt"
    while read -r api pid state; do
        CUR_APIS+=("$api"); wait_up "ironboot current ${state##*/}" "$pid" "$api" "$state.log"
    done < "$DIR/extras-current.txt"
    wait_ring "$API_PORT" "$WRITERS"
    if [ -n "$BASELINE_REV" ]; then
        while read -r api pid state; do
            BASE_APIS+=("$api"); wait_up "ironboot baseline ${state##*/}" "$pid" "$api" "$state.log"
        done < "$DIR/extras-baseline.txt"
    fi
    python3 bench/boot-path-writers.py list "http://127.0.0.1:$API_PORT" "$DIR/uuids.txt" >/dev/null
    [ -z "$BASELINE_REV" ] || python3 bench/boot-path-writers.py list "http://127.0.0.1:$BASE_API_PORT" "$DIR/uuids-baseline.txt" >/dev/null
    echo "$WRITERS conductors per ironboot share its database; writers at $WRITE_RATE writes/s during its runs" >&2
fi

cat > "$DIR/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log;
events { worker_connections 16384; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    default_type text/plain;
    server { listen 127.0.0.1:$NGINX_PORT backlog=4096; root $NGINX_ROOT; }
}
CONF
nginx -p "$DIR" -c "$DIR/nginx.conf" &
NGINX_PID=$!
sleep 1

# All must answer every path; ironboot's answer carries a fresh TempURL.
check() {  # name port paths_file
    local sample
    sample=$(head -n1 "$3")
    curl -fsS "http://127.0.0.1:$2$sample" | grep -q 'temp_url_sig=' || { echo "$1 did not serve $sample" >&2; exit 1; }
}
check "ironboot" "$BOOT_PORT" "$PATHS"
[ -z "$BASELINE_REV" ] || check "ironboot baseline $BASE_LABEL" "$BASE_BOOT_PORT" "$BASE_PATHS"
check "nginx" "$NGINX_PORT" "$PATHS"

cat > "$DIR/paths.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA

to_ms() {  # wrk latency like 850.12us, 1.23ms, 2.01s
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
run_wrk() {  # port paths_file -> "rps p50ms p99ms errors"
    local out
    out=$(PATHS_FILE="$2" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency -s "$DIR/paths.lua" "http://127.0.0.1:$1")
    local rps p50 p99 non2xx errs
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
    errs=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out"); errs=${errs:-0}
    echo "$rps $p50 $p99 $((non2xx + errs))"
}

# The writer load (WRITERS > 0) runs beside one ironboot's wrk run: started just before it,
# stopped (SIGTERM) just after; it also stops by itself DURATION + 30 s after its start.
start_writer() {  # uuids_file api_port...
    local uuids=$1 apis=() p; shift
    for p in "$@"; do apis+=("http://127.0.0.1:$p"); done
    python3 bench/boot-path-writers.py run "$uuids" "$WRITE_RATE" $((DURATION + 30)) "${apis[@]}" \
        >"$DIR/writer.out" 2>>"$DIR/writer.log" &
    WRITER_PID=$!
}
stop_writer() {  # leaves in $DIR/writer.out: ok=N errors=M seconds=S rate=R unsent=U p50_ms=A p99_ms=B detail=...
    kill "$WRITER_PID" 2>/dev/null || true
    wait "$WRITER_PID" || { echo "the writer failed:" >&2; cat "$DIR/writer.log" >&2; exit 1; }
    WRITER_PID=""
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
declare -a IB NG BASE IB_W BASE_W
for i in $(seq "$RUNS"); do
    echo "run $i/$RUNS: nginx" >&2; NG+=("$(run_wrk "$NGINX_PORT" "$PATHS")")
    if [ -n "$BASELINE_REV" ]; then
        echo "run $i/$RUNS: ironboot baseline $BASE_LABEL" >&2
        [ "$WRITERS" -eq 0 ] || start_writer "$DIR/uuids-baseline.txt" "${BASE_APIS[@]}"
        BASE+=("$(run_wrk "$BASE_BOOT_PORT" "$BASE_PATHS")")
        [ "$WRITERS" -eq 0 ] || { stop_writer; BASE_W+=("$(cat "$DIR/writer.out")"); }
    fi
    echo "run $i/$RUNS: ironboot current $CUR_LABEL" >&2
    [ "$WRITERS" -eq 0 ] || start_writer "$DIR/uuids.txt" "${CUR_APIS[@]}"
    IB+=("$(run_wrk "$BOOT_PORT" "$PATHS")")
    [ "$WRITERS" -eq 0 ] || { stop_writer; IB_W+=("$(cat "$DIR/writer.out")"); }
done
col() { local n=$1; shift; printf '%s\n' "$@" | awk -v n="$n" '{print $n}' | median; }
ib_rps=$(col 1 "${IB[@]}"); ib_p50=$(col 2 "${IB[@]}"); ib_p99=$(col 3 "${IB[@]}"); ib_err=$(col 4 "${IB[@]}")
ng_rps=$(col 1 "${NG[@]}"); ng_p50=$(col 2 "${NG[@]}"); ng_p99=$(col 3 "${NG[@]}"); ng_err=$(col 4 "${NG[@]}")
minted() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^ironboot_tempurls_minted_total/ {print $2}'; }
minted=$(minted "$API_PORT")
if [ -n "$BASELINE_REV" ]; then
    base_rps=$(col 1 "${BASE[@]}"); base_p50=$(col 2 "${BASE[@]}"); base_p99=$(col 3 "${BASE[@]}"); base_err=$(col 4 "${BASE[@]}")
    base_minted=$(minted "$BASE_API_PORT")
fi

ratio_row() {  # label rps_a rps_b p50_a p50_b p99_a p99_b
    printf '| **%s** | **%.2f×** | %.2f× | **%.2f×** | |\n' "$1" \
        "$(awk -v a="$2" -v b="$3" 'BEGIN{print a/b}')" \
        "$(awk -v a="$4" -v b="$5" 'BEGIN{print a/b}')" \
        "$(awk -v a="$6" -v b="$7" 'BEGIN{print a/b}')"
}
echo "| server | req/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
printf '| nginx %s (static files) | %.0f | %s ms | %s ms | %s |\n' "$(nginx -v 2>&1 | sed 's/.*nginx\///')" "$ng_rps" "$ng_p50" "$ng_p99" "$ng_err"
if [ -n "$BASELINE_REV" ]; then
    printf '| ironboot baseline %s, %s (rendered, fresh TempURLs) | %.0f | %s ms | %s ms | %s |\n' "$BASE_LABEL" "$DB_LABEL" "$base_rps" "$base_p50" "$base_p99" "$base_err"
fi
printf '| ironboot current %s, %s (rendered, fresh TempURLs) | %.0f | %s ms | %s ms | %s |\n' "$CUR_LABEL" "$DB_LABEL" "$ib_rps" "$ib_p50" "$ib_p99" "$ib_err"
if [ -n "$BASELINE_REV" ]; then
    ratio_row "current / nginx" "$ib_rps" "$ng_rps" "$ib_p50" "$ng_p50" "$ib_p99" "$ng_p99"
    ratio_row "baseline / nginx" "$base_rps" "$ng_rps" "$base_p50" "$ng_p50" "$base_p99" "$ng_p99"
    ratio_row "current / baseline" "$ib_rps" "$base_rps" "$ib_p50" "$base_p50" "$ib_p99" "$base_p99"
else
    ratio_row "ironboot / nginx" "$ib_rps" "$ng_rps" "$ib_p50" "$ng_p50" "$ib_p99" "$ng_p99"
fi
echo
if [ -n "$BASELINE_REV" ]; then
    echo "($NODES nodes, $CONNECTIONS connections, wrk -t2, ${DURATION}s per run, medians of $RUNS interleaved runs (nginx, baseline, current); $(nproc) cores shared by wrk and the server under test, the other ironboot idle; ironboot current minted $minted TempURLs, baseline $base_minted)"
else
    echo "($NODES nodes, $CONNECTIONS connections, wrk -t2, ${DURATION}s per run, medians of $RUNS interleaved runs; $(nproc) cores shared by wrk and the server; ironboot minted $minted TempURLs)"
fi
if [ "$WRITERS" -gt 0 ]; then
    wfield() { printf '%s\n' "${@:2}" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
    wsum() { wfield "$@" | awk '{s += $1} END {print s + 0}'; }
    wdetail() {  # merges "PUT:500x2,PATCH:URLErrorx1" over the runs
        wfield detail "$@" | tr ',' '\n' | awk '$0 != "-" && match($0, /x[0-9]+$/) {n[substr($0, 1, RSTART - 1)] += substr($0, RSTART + 1)}
            END {s = ""; for (k in n) s = s (s == "" ? "" : ", ") k " ×" n[k]; print (s == "" ? "none" : s)}'
    }
    writer_row() {  # label writer_line...
        printf '| %s | %s | %s | %s | %s | %s ms | %s ms | %s |\n' "$1" "$(wsum ok "${@:2}")" "$(wsum errors "${@:2}")" \
            "$(wsum unsent "${@:2}")" "$(wfield rate "${@:2}" | median)" "$(wfield p50_ms "${@:2}" | median)" \
            "$(wfield p99_ms "${@:2}" | median)" "$(wdetail "${@:2}")"
    }
    echo
    echo "| writes during the runs of | 2xx | errors | unsent | writes/s | write p50 | write p99 | errors by kind |"
    echo "|---|---|---|---|---|---|---|---|"
    [ -z "$BASELINE_REV" ] || writer_row "ironboot baseline $BASE_LABEL" "${BASE_W[@]}"
    writer_row "ironboot current $CUR_LABEL" "${IB_W[@]}"
    echo
    echo "(WRITERS=$WRITERS: each ironboot runs as $WRITERS conductors on one $DB_LABEL database, the measured one and $((WRITERS - 1)) more; during each of its wrk runs, WRITE_RATE=$WRITE_RATE writes/s asked, round-robin over the $WRITERS REST APIs: PATCH /v1/nodes/<uuid> then PUT /v1/nodes/<uuid>/boot {\"target\":\"deploy\"} on random nodes, from one python3 with 16 threads; 2xx, errors and unsent are totals over $RUNS runs, writes/s and latencies medians; the other conductors, the writer and PostgreSQL share the $(nproc) cores with wrk and the measured server; nginx serves a copy of the mirror taken before any write, with no writer)"
fi

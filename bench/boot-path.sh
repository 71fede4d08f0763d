#!/usr/bin/env bash
# Boot-path benchmark: per-node iPXE scripts rendered by ironboot with freshly signed Swift
# TempURLs, against nginx serving the same scripts as static files (ironboot's own static
# mirror of Ironic's http_root), side by side in one run.
#
#   bench/boot-path.sh
#   BASELINE_REV=9bdbeae bench/boot-path.sh   # also the ironboot of that revision, same run
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
# Needs: wrk and nginx (apt-get install wrk nginx-light). Nothing else: the nodes are
# written straight into a fresh SQLite database (examples/bench_seed.rs), so no Swift is
# contacted; the boot path never calls Swift anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-10000}
CONNECTIONS=${CONNECTIONS:-1000}
DURATION=${DURATION:-20}
RUNS=${RUNS:-3}
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
cleanup() {
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
# Only options the baseline's config knows too (it refuses unknown ones): all of these
# predate the refactor.
write_conf() {  # file state_dir api_port boot_port
    cat > "$1" <<CONF
[DEFAULT]
state_path = $2
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
[ -z "$BASELINE_REV" ] || wait_mirror "ironboot baseline" "$BASE_PID" "$DIR/state-baseline" "$DIR/ironboot-baseline.log"

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
    server { listen 127.0.0.1:$NGINX_PORT backlog=4096; root $DIR/state/httpboot; }
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

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
declare -a IB NG BASE
for i in $(seq "$RUNS"); do
    echo "run $i/$RUNS: nginx" >&2; NG+=("$(run_wrk "$NGINX_PORT" "$PATHS")")
    if [ -n "$BASELINE_REV" ]; then
        echo "run $i/$RUNS: ironboot baseline $BASE_LABEL" >&2; BASE+=("$(run_wrk "$BASE_BOOT_PORT" "$BASE_PATHS")")
    fi
    echo "run $i/$RUNS: ironboot current $CUR_LABEL" >&2; IB+=("$(run_wrk "$BOOT_PORT" "$PATHS")")
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

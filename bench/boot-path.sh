#!/usr/bin/env bash
# Boot-path benchmark: per-node iPXE scripts rendered by ironboot with freshly signed Swift
# TempURLs, against nginx serving the same scripts as static files (ironboot's own static
# mirror of Ironic's http_root), side by side in one run.
#
#   bench/boot-path.sh
#
# Env: NODES (10000) CONNECTIONS (1000) DURATION (20 s per run) RUNS (3, interleaved)
#      BENCH_PG_URL=postgres://user@host:port/db  use a fresh database on that PostgreSQL
#                   server instead of SQLite (created here, dropped at exit). With
#                   PostgreSQL every boot request queries the database; with SQLite the
#                   store answers from its in-memory index of committed boot records.
# Needs: wrk and nginx (apt-get install wrk nginx-light). Nothing else: the nodes are
# written straight into a fresh SQLite database (examples/bench_seed.rs), so no Swift is
# contacted; the boot path never calls Swift anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-10000}
CONNECTIONS=${CONNECTIONS:-1000}
DURATION=${DURATION:-20}
RUNS=${RUNS:-3}
for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install wrk nginx-light curl" >&2; exit 2; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

DIR=$(mktemp -d /tmp/ironboot-bench.XXXXXX)
chmod 755 "$DIR"   # nginx workers run as nobody
IB_PID=""; NGINX_PID=""; PG_DB=""
cleanup() {
    [ -n "$IB_PID" ] && kill "$IB_PID" 2>/dev/null && wait "$IB_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    [ -n "$PG_DB" ] && psql -q "$BENCH_PG_URL" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
API_PORT=$(free_port); BOOT_PORT=$(free_port); NGINX_PORT=$(free_port)

cargo build --release --quiet --bin ironboot --example bench_seed
printf 'bench-temp-url-key' > "$DIR/key"
cat > "$DIR/ironboot.conf" <<CONF
[DEFAULT]
state_path = $DIR/state
[api]
port = $API_PORT
[httpboot]
port = $BOOT_PORT
[ipxe]
use_swift = true
[glance]
swift_endpoint_url = http://10.0.2.2:28080
swift_account = AUTH_test
swift_temp_url_key_file = $DIR/key
CONF
DB_LABEL="SQLite"
if [ -n "${BENCH_PG_URL:-}" ]; then
    PG_DB="ironboot_bench_$$"
    psql -q "$BENCH_PG_URL" -c "CREATE DATABASE $PG_DB" >/dev/null
    printf '[database]\nconnection = %s/%s\n' "${BENCH_PG_URL%/*}" "$PG_DB" >> "$DIR/ironboot.conf"
    DB_LABEL="PostgreSQL"
fi
echo "seeding $NODES nodes ($DB_LABEL)..." >&2
target/release/examples/bench_seed "$DIR/ironboot.conf" "$NODES" "$DIR/paths.txt"

target/release/ironboot --config "$DIR/ironboot.conf" --log warn serve 2>"$DIR/ironboot.log" &
IB_PID=$!
# serve writes the static mirror (one config per node) at start; wait for all of it
for _ in $(seq 600); do
    n=$( (find "$DIR/state/httpboot" -name config 2>/dev/null || true) | wc -l)
    [ "$n" -ge "$NODES" ] && break
    sleep 0.5
done
[ "$n" -ge "$NODES" ] || { echo "the mirror has only $n of $NODES configs" >&2; exit 1; }

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

# Both must answer every path; ironboot's answer carries a fresh TempURL.
sample=$(head -n1 "$DIR/paths.txt")
curl -fsS "http://127.0.0.1:$BOOT_PORT$sample" | grep -q 'temp_url_sig=' || { echo "ironboot did not serve $sample" >&2; exit 1; }
curl -fsS "http://127.0.0.1:$NGINX_PORT$sample" | grep -q 'temp_url_sig=' || { echo "nginx did not serve $sample" >&2; exit 1; }

cat > "$DIR/paths.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA

to_ms() {  # wrk latency like 850.12us, 1.23ms, 2.01s
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
run_wrk() {  # port -> "rps p50ms p99ms errors"
    local out
    out=$(PATHS_FILE="$DIR/paths.txt" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency -s "$DIR/paths.lua" "http://127.0.0.1:$1")
    local rps p50 p99 non2xx errs
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
    errs=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out"); errs=${errs:-0}
    echo "$rps $p50 $p99 $((non2xx + errs))"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
declare -a IB NG
for i in $(seq "$RUNS"); do
    echo "run $i/$RUNS: nginx" >&2; NG+=("$(run_wrk "$NGINX_PORT")")
    echo "run $i/$RUNS: ironboot" >&2; IB+=("$(run_wrk "$BOOT_PORT")")
done
col() { local n=$1; shift; printf '%s\n' "$@" | awk -v n="$n" '{print $n}' | median; }
ib_rps=$(col 1 "${IB[@]}"); ib_p50=$(col 2 "${IB[@]}"); ib_p99=$(col 3 "${IB[@]}"); ib_err=$(col 4 "${IB[@]}")
ng_rps=$(col 1 "${NG[@]}"); ng_p50=$(col 2 "${NG[@]}"); ng_p99=$(col 3 "${NG[@]}"); ng_err=$(col 4 "${NG[@]}")
minted=$(curl -s "http://127.0.0.1:$API_PORT/metrics" | awk '/^ironboot_tempurls_minted_total/ {print $2}')

echo "| server | req/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
printf '| nginx %s (static files) | %.0f | %s ms | %s ms | %s |\n' "$(nginx -v 2>&1 | sed 's/.*nginx\///')" "$ng_rps" "$ng_p50" "$ng_p99" "$ng_err"
printf '| ironboot, %s (rendered, fresh TempURLs) | %.0f | %s ms | %s ms | %s |\n' "$DB_LABEL" "$ib_rps" "$ib_p50" "$ib_p99" "$ib_err"
printf '| **ironboot / nginx** | **%.2f×** | %.2f× | **%.2f×** | |\n' \
    "$(awk -v a="$ib_rps" -v b="$ng_rps" 'BEGIN{print a/b}')" \
    "$(awk -v a="$ib_p50" -v b="$ng_p50" 'BEGIN{print a/b}')" \
    "$(awk -v a="$ib_p99" -v b="$ng_p99" 'BEGIN{print a/b}')"
echo
echo "($NODES nodes, $CONNECTIONS connections, wrk -t2, ${DURATION}s per run, medians of $RUNS interleaved runs; $(nproc) cores shared by wrk and the server; ironboot minted $minted TempURLs)"

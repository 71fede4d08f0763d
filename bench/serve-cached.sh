#!/usr/bin/env bash
# P3, serving cached images: CONNECTIONS concurrent clients fetching one SIZE_MIB MiB image
# from ironboot's boot listener (GET /<node uuid>/kernel from [deploy] http_root, as the
# image cache hardlinks it there) against nginx with `sendfile on` serving the very same
# file, side by side in one run. Also samples ironboot's VmRSS while it serves.
#
#   bench/serve-cached.sh
#
# Env: SIZE_MIB (100) CONNECTIONS (50) DURATION (20 s per run) RUNS (3, interleaved)
# Needs: wrk, nginx and curl (apt-get install wrk nginx-light curl). Everything binds
# 127.0.0.1; everything started here is stopped by PID at exit.
#
# Goal: ironboot >= 0.9x nginx's throughput. The load generator (wrk -t2) shares the
# machine's cores with the server under test; the other server is idle meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-100}
CONNECTIONS=${CONNECTIONS:-50}
DURATION=${DURATION:-20}
RUNS=${RUNS:-3}
for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install wrk nginx-light curl" >&2; exit 2; }
done
CUR_LABEL=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain)" ] || CUR_LABEL="$CUR_LABEL + uncommitted changes"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

DIR=$(mktemp -d /tmp/ironboot-serve-bench.XXXXXX)
chmod 755 "$DIR"   # nginx workers run as nobody
IB_PID=""; NGINX_PID=""; SAMPLER_PID=""
cleanup() {
    [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null && wait "$SAMPLER_PID" 2>/dev/null
    [ -n "$IB_PID" ] && kill "$IB_PID" 2>/dev/null && wait "$IB_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
API_PORT=$(free_port); BOOT_PORT=$(free_port); NGINX_PORT=$(free_port)

cargo build --release --quiet --bin ironboot
IB_BIN=target/release/ironboot

cat > "$DIR/ironboot.conf" <<CONF
[DEFAULT]
state_path = $DIR/state
[api]
port = $API_PORT
[httpboot]
port = $BOOT_PORT
CONF
"$IB_BIN" --config "$DIR/ironboot.conf" --log warn serve 2>"$DIR/ironboot.log" &
IB_PID=$!
# The static mirror's first refresh removes every http_root/<uuid> of a node it does not
# know: put the image in place after it, as the cache would for a prepared node.
for _ in $(seq 200); do
    kill -0 "$IB_PID" 2>/dev/null || { echo "ironboot exited:" >&2; cat "$DIR/ironboot.log" >&2; exit 1; }
    curl -fsS "http://127.0.0.1:$API_PORT/metrics" 2>/dev/null \
        | grep -q '^ironboot_task_runs_total{task="mirror_refresh",result="ok"} [1-9]' && break
    sleep 0.1
done
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
RSS_START=$(rss_kib "$IB_PID")

NODE=4f1c2b3a-5d6e-4a7b-8c9d-0e1f2a3b4c5d
ROOT="$DIR/state/httpboot"
mkdir -p "$ROOT/$NODE"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$ROOT/$NODE/kernel"
chmod -R a+rX "$DIR/state"
URL_PATH="/$NODE/kernel"

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
    default_type application/octet-stream;
    server { listen 127.0.0.1:$NGINX_PORT backlog=4096; root $ROOT; }
}
CONF
nginx -p "$DIR" -c "$DIR/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT$URL_PATH" 2>/dev/null && break; sleep 0.1; done

# Both serve the same bytes.
want=$(sha256sum < "$ROOT/$NODE/kernel")
for port in "$BOOT_PORT" "$NGINX_PORT"; do
    got=$(curl -fsS "http://127.0.0.1:$port$URL_PATH" | sha256sum)
    [ "$got" = "$want" ] || { echo "127.0.0.1:$port did not serve the file" >&2; exit 1; }
done

# VmRSS of ironboot every 50 ms, for the whole of the runs.
( while kill -0 "$IB_PID" 2>/dev/null; do rss_kib "$IB_PID" 2>/dev/null || true; sleep 0.05; done ) > "$DIR/rss.txt" &
SAMPLER_PID=$!

to_mib() {  # wrk's Transfer/sec such as 512.34MB or 1.20GB (1024-based) -> MiB
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /GB$/) n *= 1024; else if (v ~ /KB$/) n /= 1024; else if (v ~ /B$/ && v !~ /MB$/) n /= 1048576; printf "%.1f", n }'
}
# CPU time (user + system, clock ticks) of a process and its children's (nginx's workers).
cpu_ticks() {  # pid
    local total=0 p
    for p in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
TICKS=$(getconf CLK_TCK)
run_wrk() {  # port pid -> "MiB/s req/s errors cpu-seconds-per-GiB"
    local out before after
    before=$(cpu_ticks "$2")
    out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 60s "http://127.0.0.1:$1$URL_PATH")
    local mibs rps non2xx errs
    mibs=$(to_mib "$(awk '/^Transfer\/sec/ {print $2}' <<<"$out")")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
    errs=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out"); errs=${errs:-0}
    after=$(cpu_ticks "$2")
    local cpu_per_gib
    cpu_per_gib=$(awk -v t=$((after - before)) -v hz="$TICKS" -v m="$mibs" -v d="$DURATION" 'BEGIN { printf "%.2f", (t / hz) / (m * d / 1024) }')
    echo "$mibs $rps $((non2xx + errs)) $cpu_per_gib"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
declare -a IB NG
for i in $(seq "$RUNS"); do
    echo "run $i/$RUNS: nginx" >&2; NG+=("$(run_wrk "$NGINX_PORT" "$NGINX_PID")")
    echo "run $i/$RUNS: ironboot" >&2; IB+=("$(run_wrk "$BOOT_PORT" "$IB_PID")")
done
kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
RSS_PEAK=$(sort -n "$DIR/rss.txt" | tail -n1)
col() { local n=$1; shift; printf '%s\n' "$@" | awk -v n="$n" '{print $n}' | median; }
ib_mib=$(col 1 "${IB[@]}"); ib_rps=$(col 2 "${IB[@]}"); ib_err=$(col 3 "${IB[@]}"); ib_cpu=$(col 4 "${IB[@]}")
ng_mib=$(col 1 "${NG[@]}"); ng_rps=$(col 2 "${NG[@]}"); ng_err=$(col 3 "${NG[@]}"); ng_cpu=$(col 4 "${NG[@]}")
each() { printf '%s\n' "$@" | awk '{printf "%s%s", sep, $1; sep=", "}'; }

echo "| server | MiB/s | req/s | server CPU s per GiB | errors | runs (MiB/s) |"
echo "|---|---|---|---|---|---|"
printf '| nginx %s (sendfile on) | %.0f | %.2f | %s | %s | %s |\n' "$(nginx -v 2>&1 | sed 's/.*nginx\///')" "$ng_mib" "$ng_rps" "$ng_cpu" "$ng_err" "$(each "${NG[@]}")"
printf '| ironboot %s | %.0f | %.2f | %s | %s | %s |\n' "$CUR_LABEL" "$ib_mib" "$ib_rps" "$ib_cpu" "$ib_err" "$(each "${IB[@]}")"
printf '| **ironboot / nginx** | **%.2f×** | %.2f× | %.2f× | | |\n' \
    "$(awk -v a="$ib_mib" -v b="$ng_mib" 'BEGIN{print a/b}')" \
    "$(awk -v a="$ib_rps" -v b="$ng_rps" 'BEGIN{print a/b}')" \
    "$(awk -v a="$ib_cpu" -v b="$ng_cpu" 'BEGIN{print a/b}')"
echo
echo "ironboot VmRSS: $((RSS_START / 1024)) MiB at start (idle, before any request), $((RSS_PEAK / 1024)) MiB at the peak (sampled every 50 ms through all runs)"
echo "($SIZE_MIB MiB file, $CONNECTIONS connections, wrk -t2, ${DURATION}s per run, medians of $RUNS interleaved runs; $(nproc) cores shared by wrk and the server)"

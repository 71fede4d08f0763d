#!/usr/bin/env bash
# Cache fill benchmark (P4): filling the master image cache from an http source with
# `ironboot cache fetch`, against `curl -o` of the same URL, side by side in one run.
#
#   bench/cache-fill.sh
#   RUNS=7 SIZE_MIB=200 bench/cache-fill.sh
#
# Part 1, throughput: nginx on 127.0.0.1 serves a SIZE_MIB random file (sendfile). Each
# round, in turn, first into the temp dir's file system (disk), then (when a tmpfs can be
# mounted, i.e. as root) into a tmpfs, where fsync costs nothing:
#   curl      curl -sS -o <file> URL                            (a new file each round)
#   ironboot  ironboot cache fetch URL into an empty master directory: stream, sha256 in
#             the same pass, fsync of the file, rename, metadata, fsync of the directory
# Both write into the same file system, both include process start. Wall time and CPU
# time (user + system) of each command; medians of RUNS rounds; every copy's sha256 is
# checked against the source (not timed).
# Part 2, single flight: `ironboot serve` in cache mode, NODES nodes whose deploy kernel is
# the same missing image (served at limit_rate RATE so the prepares arrive while it is
# being downloaded), NODES concurrent PUT /v1/nodes/{uuid}/boot; counts the GETs of that
# image in nginx's access log (status 200 and 304 separately) and checks every node ready.
#
# Env: RUNS (5) SIZE_MIB (200) NODES (100) RATE (nginx limit_rate for part 2, 50m)
#      BASELINE_BIN: another ironboot binary (e.g. built from an older commit) timed in
#      the same rounds in part 1, as a row of its own
# Needs: nginx, curl, python3, cargo. Binds 127.0.0.1 only; nginx and ironboot are stopped
# by PID at exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-200}
NODES=${NODES:-100}
RATE=${RATE:-50m}
for tool in nginx curl python3 cargo; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 2; }
done
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
LABEL=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain)" ] || LABEL="$LABEL + uncommitted changes"

DIR=$(mktemp -d /tmp/ironboot-cachefill.XXXXXX)
chmod 755 "$DIR"   # nginx workers run as nobody
NGINX_PID=""; IB_PID=""; TMPFS=""
cleanup() {
    trap '' INT TERM
    [ -n "$TMPFS" ] && umount -l "$TMPFS" 2>/dev/null
    [ -n "$IB_PID" ] && kill "$IB_PID" 2>/dev/null && wait "$IB_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say() { printf '[cache-fill] %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# Runs a command; prints its wall time and CPU time (user + system) in seconds as
# wall/cpu (the timer starts after Python's own start).
timed() { python3 -c 'import resource,subprocess,sys,time
t=time.perf_counter(); r=subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
w=time.perf_counter()-t; u=resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.4f/%.4f" % (w, u.ru_utime+u.ru_stime)); sys.exit(r.returncode)' "$@"; }

say "building ironboot (release)"
cargo build --release --quiet --bin ironboot
IB="${CARGO_TARGET_DIR:-target}/release/ironboot"

mkdir -p "$DIR/www"
chmod 755 "$DIR/www"
head -c "${SIZE_MIB}M" /dev/urandom > "$DIR/www/image.bin"
head -c 4096 /dev/urandom > "$DIR/www/ramdisk.bin"
chmod 644 "$DIR/www/"*
SOURCE_SHA=$(sha256sum "$DIR/www/image.bin" | cut -d' ' -f1)
cat "$DIR/www/image.bin" > /dev/null   # in the page cache for every round

NGINX_PORT=$(free_port)
cat > "$DIR/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log;
events { worker_connections 1024; }
http {
    log_format bench '\$request_method \$uri \$status \$body_bytes_sent';
    access_log $DIR/access.log bench;
    sendfile on;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $DIR/www;
        location /slow/ { alias $DIR/www/; limit_rate $RATE; }
    }
}
CONF
nginx -p "$DIR" -c "$DIR/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT/ramdisk.bin" 2>/dev/null && break; sleep 0.1; done
URL="http://127.0.0.1:$NGINX_PORT/image.bin"

# ------------------------------------------------------------------ part 1: throughput
mkdir -p "$DIR/tmpfs"
if mount -t tmpfs -o size=$((SIZE_MIB * 3))m tmpfs "$DIR/tmpfs" 2>/dev/null; then
    TMPFS=$DIR/tmpfs
    TARGETS=("$DIR/disk" "$TMPFS")
else
    say "cannot mount a tmpfs (not root?): the tmpfs rows are left out"
    TARGETS=("$DIR/disk")
fi
KEY=$(python3 -c 'import uuid,sys; print(uuid.uuid5(uuid.NAMESPACE_URL, sys.argv[1]))' "$URL")
RESULTS=()
for target in "${TARGETS[@]}"; do
    where=disk; [ "$target" = "$TMPFS" ] && where=tmpfs
    mkdir -p "$target"
    cat > "$target.conf" <<CONF
[DEFAULT]
state_path = $DIR/state
[pxe]
tftp_master_path = $target/master
image_cache_size = $((SIZE_MIB * 4))
CONF
    CURL_T=(); IB_T=(); BASE_T=()
    for i in $(seq "$RUNS"); do
        rm -f "$target/curl.out"; sync
        CURL_T+=("$(timed curl -sS -o "$target/curl.out" "$URL")")
        [ "$(sha256sum "$target/curl.out" | cut -d' ' -f1)" = "$SOURCE_SHA" ] || { echo "curl's copy differs" >&2; exit 1; }
        rm -f "$target/curl.out"
        rm -rf "$target/master"; sync
        IB_T+=("$(timed "$IB" --config "$target.conf" cache fetch "$URL")")
        [ "$(sha256sum "$target/master/$KEY" | cut -d' ' -f1)" = "$SOURCE_SHA" ] || { echo "ironboot's master differs" >&2; exit 1; }
        rm -rf "$target/master"
        if [ -n "${BASELINE_BIN:-}" ]; then
            sync
            BASE_T+=("$(timed "$BASELINE_BIN" --config "$target.conf" cache fetch "$URL")")
            [ "$(sha256sum "$target/master/$KEY" | cut -d' ' -f1)" = "$SOURCE_SHA" ] || { echo "the baseline's master differs" >&2; exit 1; }
            rm -rf "$target/master"
        fi
        say "$where round $i/$RUNS: curl ${CURL_T[-1]} s, ironboot ${IB_T[-1]} s${BASELINE_BIN:+, baseline ${BASE_T[-1]} s} (wall/cpu)"
    done
    RESULTS+=("$where" "${CURL_T[*]}" "${IB_T[*]}" "${BASE_T[*]:-}")
done

# ------------------------------------------------------------------ part 2: single flight
API_PORT=$(free_port); BOOT_PORT=$(free_port)
cat > "$DIR/serve.conf" <<CONF
[DEFAULT]
state_path = $DIR/serve-state
[api]
port = $API_PORT
[httpboot]
port = $BOOT_PORT
[pxe]
tftp_master_path = $DIR/serve-state/master
image_cache_size = $((SIZE_MIB * 4))
http_passthrough = false
[deploy]
http_url = http://127.0.0.1:$BOOT_PORT
CONF
"$IB" --config "$DIR/serve.conf" serve 2>"$DIR/serve.log" &
IB_PID=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$API_PORT/healthz" 2>/dev/null && break; sleep 0.1; done
LOG_BEFORE=$(wc -l < "$DIR/access.log")
SF=$(python3 - "http://127.0.0.1:$API_PORT" "http://127.0.0.1:$NGINX_PORT" "$NODES" <<'PY'
import json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
api, src, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def call(method, path, body=None):
    req = urllib.request.Request(api + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, json.loads(r.read() or b"null")
uuids = []
for i in range(n):
    mac = "52:54:00:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255)
    _, node = call("POST", "/v1/nodes", {"macs": [mac], "driver_info": {
        "deploy_kernel": src + "/slow/image.bin", "deploy_ramdisk": src + "/ramdisk.bin"}})
    uuids.append(node["uuid"])
t = time.perf_counter()
with ThreadPoolExecutor(n) as ex:
    answers = list(ex.map(lambda u: call("PUT", "/v1/nodes/%s/boot" % u, {"target": "deploy"}), uuids))
put_s = time.perf_counter() - t
assert all(s == 202 for s, _ in answers), answers[:3]
while True:
    states = [call("GET", "/v1/nodes/" + u)[1]["state"] for u in uuids]
    if "preparing" not in states:
        break
    time.sleep(0.2)
print(json.dumps({"put_s": put_s, "total_s": time.perf_counter() - t,
                  "ready": states.count("ready"), "failed": states.count("failed")}))
PY
)
kill "$IB_PID"; wait "$IB_PID" 2>/dev/null || true; IB_PID=""
tail -n +"$((LOG_BEFORE + 1))" "$DIR/access.log" > "$DIR/access-part2.log"
GET_200=$(grep -c '^GET /slow/image.bin 200 ' "$DIR/access-part2.log" || true)
GET_304=$(grep -c '^GET /slow/image.bin 304 ' "$DIR/access-part2.log" || true)
GET_ALL=$(grep -c '^GET /slow/image.bin ' "$DIR/access-part2.log" || true)
SERVE_KEY=$(python3 -c 'import uuid,sys; print(uuid.uuid5(uuid.NAMESPACE_URL, sys.argv[1]))' "http://127.0.0.1:$NGINX_PORT/slow/image.bin")
[ "$(sha256sum "$DIR/serve-state/master/$SERVE_KEY" | cut -d' ' -f1)" = "$SOURCE_SHA" ] || { echo "serve's master differs" >&2; exit 1; }

# ------------------------------------------------------------------ report
python3 - "$SIZE_MIB" "$RUNS" "$LABEL ; load average at start $LOAD" "$SF" "$GET_200" "$GET_304" "$GET_ALL" "$NODES" "$RATE" "$(nproc)" "${RESULTS[@]}" <<'PY'
import json, statistics, sys
size, runs, label = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sf = json.loads(sys.argv[4])
g200, g304, gall, nodes, rate, cores = sys.argv[5:11]
rest = sys.argv[11:]
print(f"| fill {size} MiB from nginx on 127.0.0.1 | into | median wall s | MiB/s | median CPU s | ironboot / curl throughput | wall of each round (s) |")
print("|---|---|---|---|---|---|---|")
runs_of = lambda text: [tuple(float(v) for v in x.split("/")) for x in text.split()]
for j in range(0, len(rest), 4):
    where = rest[j]
    curl = runs_of(rest[j + 1])
    mc, cc = statistics.median(w for w, _ in curl), statistics.median(c for _, c in curl)
    print(f"| curl -o | {where} | {mc:.3f} | {size/mc:.0f} | {cc:.3f} | | {', '.join('%.3f' % w for w, _ in curl)} |")
    for name, text, bold in (("baseline ironboot cache fetch", rest[j + 3], ""), ("ironboot cache fetch", rest[j + 2], "**")):
        if not text.strip():
            continue
        ib = runs_of(text)
        mi, ci = statistics.median(w for w, _ in ib), statistics.median(c for _, c in ib)
        print(f"| {name} | {where} | {mi:.3f} | {size/mi:.0f} | {ci:.3f} | {bold}{mc/mi:.2f}×{bold} | {', '.join('%.3f' % w for w, _ in ib)} |")
print()
print(f"(target ≥ 0.8×; medians of {runs} interleaved rounds; {cores} cores shared by nginx, the client and whatever else runs; ironboot {label})")
print()
print(f"| {nodes} concurrent prepares of one missing {size} MiB image (limit_rate {rate}) | |")
print("|---|---|")
print(f"| GET /slow/image.bin in nginx's log: 200 | **{g200}** |")
print(f"| GET /slow/image.bin in nginx's log: 304 | {g304} |")
print(f"| GET /slow/image.bin in nginx's log: all | {gall} |")
print(f"| {nodes} PUTs answered (202) in | {sf['put_s']:.3f} s |")
print(f"| all nodes settled after | {sf['total_s']:.1f} s |")
print(f"| nodes ready / failed | {sf['ready']} / {sf['failed']} |")
PY

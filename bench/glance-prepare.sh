#!/usr/bin/env bash
# Glance prepare benchmark: NODES nodes that share one Glance deploy kernel and one deploy
# ramdisk are prepared (`PUT /v1/nodes/{uuid}/boot {"target":"deploy"}`) in swift mode
# against a real Keystone, a real Glance (seed 0, Swift store) and a real Swift, all
# started here. Reports nodes per second and the requests ironboot sent during the timed
# prepares, counted in the services' own access logs:
#   Glance   GET /v2/images/<id>      (uWSGI request log of the seed-0 Glance)
#   Keystone POST /v3/auth/tokens     (uWSGI request log of Keystone)
#   Swift    HEAD /v1/AUTH_test/glance/<id>  (the Swift proxy's access log)
# Rows, each with a fresh ironboot (fresh state dir, NODES fresh nodes created through the
# API, not timed):
#   ttl 30 s  [glance] metadata_cache_ttl at its default, CONCURRENCY prepares at a time
#   ttl 0     no metadata cache, same concurrency (concurrent prepares of one image
#             still share one in-flight request: single flight is not switchable)
#   ttl 0, concurrency 1  one prepare at a time: every prepare asks Glance for both
#             images, as Ironic does (SERIAL=0 leaves this row out)
#
#   bench/glance-prepare.sh
#   KEYSTONE_AIO_VENV=/tmp/ironboot-test/openstack-venv GLANCE_AIO_VENV=/tmp/ironboot-test/openstack-venv \
#       SWIFT_AIO_VENV=/tmp/ironboot-test/venv bench/glance-prepare.sh   # reuse the test venvs
#
# Env: NODES (1000) CONCURRENCY (32) SERIAL (1: add the concurrency-1 row)
#      KEYSTONE_AIO_VENV GLANCE_AIO_VENV (one venv for both) SWIFT_AIO_VENV: existing
#      venvs (else created in the temp dir by the scripts, several minutes)
# Needs: python3, curl, and what scripts/swift-aio.sh needs (memcached).
# Everything runs in a temp dir on free ports; every service is stopped by PID at exit,
# also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-1000}
CONCURRENCY=${CONCURRENCY:-32}
SERIAL=${SERIAL:-1}
TTL=30
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 2; }
done
LABEL=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain)" ] || LABEL="$LABEL + uncommitted changes"

DIR=$(mktemp -d /tmp/ironboot-gbench.XXXXXX)
IB_PID=""; SWIFT_UP=0; KS_UP=0; GL_UP=0
stop_ironboot() {
    if [ -n "$IB_PID" ]; then
        kill "$IB_PID" 2>/dev/null && wait "$IB_PID" 2>/dev/null
        IB_PID=""
    fi
    return 0
}
cleanup() {
    trap '' INT TERM
    stop_ironboot
    [ "$GL_UP" = 1 ] && scripts/glance-aio.sh stop "$DIR/glance" >/dev/null 2>&1
    [ "$KS_UP" = 1 ] && scripts/keystone-aio.sh stop "$DIR/keystone" >/dev/null 2>&1
    [ "$SWIFT_UP" = 1 ] && scripts/swift-aio.sh stop "$DIR/swift" >/dev/null 2>&1
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
say() { printf '[glance-prepare] %s\n' "$*" >&2; }

# ------------------------------------------------------------------ services
say "starting Swift, Keystone and Glance in $DIR (logs: $DIR/services.log)"
SWIFT_UP=1
scripts/swift-aio.sh start "$DIR/swift" >>"$DIR/services.log" 2>&1 \
    || { tail -30 "$DIR/services.log" >&2; exit 1; }
eval "$(scripts/swift-aio.sh env "$DIR/swift")"
KS_UP=1
scripts/keystone-aio.sh start "$DIR/keystone" >>"$DIR/services.log" 2>&1 \
    || { tail -30 "$DIR/services.log" >&2; exit 1; }
eval "$(scripts/keystone-aio.sh env "$DIR/keystone")"
GL_UP=1
scripts/glance-aio.sh start "$DIR/glance" >>"$DIR/services.log" 2>&1 \
    || { tail -30 "$DIR/services.log" >&2; exit 1; }
eval "$(scripts/glance-aio.sh env "$DIR/glance")"
scripts/keystone-aio.sh catalog "$DIR/keystone" image glance "$IRONBOOT_TEST_GLANCE_URL" \
    >>"$DIR/services.log" 2>&1 || { tail -30 "$DIR/services.log" >&2; exit 1; }
GLANCE_LOG=$DIR/glance/swift0/log/wsgi.log
KEYSTONE_LOG=$DIR/keystone/log/wsgi.log
SWIFT_LOG=$SWIFT_AIO_PROXY_LOG
for f in "$GLANCE_LOG" "$KEYSTONE_LOG" "$SWIFT_LOG"; do
    [ -f "$f" ] || { echo "no access log $f" >&2; exit 1; }
done

# The account's Temp-URL-Key (tempauth v1 login for the storage URL and a token)
hdrs=$(curl -fsS -D - -o /dev/null -H "X-Auth-User: $SWIFT_AIO_USER" -H "X-Auth-Key: $SWIFT_AIO_KEY" "$SWIFT_AIO_AUTH_URL")
SW_TOKEN=$(awk -F': ' 'tolower($1) == "x-auth-token" {print $2}' <<<"$hdrs" | tr -d '\r')
SW_URL=$(awk -F': ' 'tolower($1) == "x-storage-url" {print $2}' <<<"$hdrs" | tr -d '\r')
case "$SW_URL" in */AUTH_test) ;; *) echo "the Swift account is $SW_URL, not AUTH_test" >&2; exit 1 ;; esac
TEMP_URL_KEY=gbench-temp-url-key-$$
curl -fsS -X POST -H "X-Auth-Token: $SW_TOKEN" -H "X-Account-Meta-Temp-URL-Key: $TEMP_URL_KEY" "$SW_URL" >/dev/null

# Two public 1 KiB images, uploaded by the admin into Glance's Swift store
read -r KERNEL RAMDISK < <(python3 - "$IRONBOOT_TEST_KEYSTONE_URL" "$IRONBOOT_TEST_GLANCE_URL" \
    "$IRONBOOT_TEST_KEYSTONE_ADMIN_USER" "$IRONBOOT_TEST_KEYSTONE_ADMIN_PASSWORD" \
    "$IRONBOOT_TEST_KEYSTONE_ADMIN_PROJECT" <<'PY'
import json, os, sys, urllib.request
ks, glance, user, password, project = sys.argv[1:]
def req(method, url, body=None, headers=None, raw=False):
    data = body if raw else (json.dumps(body).encode() if body is not None else None)
    r = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None and not raw:
        r.add_header("content-type", "application/json")
    return urllib.request.urlopen(r, timeout=60)
auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": user, "domain": {"name": "Default"}, "password": password}}},
    "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
token = req("POST", ks + "/v3/auth/tokens", auth).headers["x-subject-token"]
ids = []
for name in ("gbench-deploy-kernel", "gbench-deploy-ramdisk"):
    img = json.load(req("POST", glance + "/v2/images", {"name": name, "disk_format": "raw",
        "container_format": "bare", "visibility": "public"}, {"x-auth-token": token}))
    req("PUT", glance + "/v2/images/%s/file" % img["id"], os.urandom(1024),
        {"x-auth-token": token, "content-type": "application/octet-stream"}, raw=True)
    shown = json.load(req("GET", glance + "/v2/images/" + img["id"], None, {"x-auth-token": token}))
    assert shown["status"] == "active", shown
    ids.append(img["id"])
print(*ids)
PY
)
[ -n "$RAMDISK" ] || { echo "could not create the images" >&2; exit 1; }
say "images: kernel $KERNEL, ramdisk $RAMDISK (1 KiB each, public, active)"

# ------------------------------------------------------------------ ironboot
cargo build --release --quiet --bin ironboot
IB_BIN=target/release/ironboot

cat > "$DIR/client.py" <<'PY'
# create API N  -> node UUIDs on stdout;  prepare API CONCURRENCY < uuids -> "seconds failures"
import json, sys, time, threading, http.client, urllib.parse
from concurrent.futures import ThreadPoolExecutor
cmd, api = sys.argv[1], urllib.parse.urlsplit(sys.argv[2])
local = threading.local()
def call(method, path, body):
    for attempt in range(2):
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = http.client.HTTPConnection(api.hostname, api.port, timeout=120)
        try:
            c.request(method, path, json.dumps(body), {"content-type": "application/json"})
            r = c.getresponse()
            return r.status, r.read()
        except (http.client.HTTPException, ConnectionError):
            c.close(); local.c = None
            if attempt:
                raise
if cmd == "create":
    kernel, ramdisk, n = sys.argv[3], sys.argv[4], int(sys.argv[5])
    for i in range(n):
        mac = "52:54:%02x:%02x:%02x:%02x" % (0xa0, (i >> 16) & 255, (i >> 8) & 255, i & 255)
        st, body = call("POST", "/v1/nodes", {"macs": [mac], "driver_info":
            {"deploy_kernel": kernel, "deploy_ramdisk": "glance://" + ramdisk}})
        if st not in (200, 201):
            sys.exit("create node %d: %s %s" % (i, st, body[:300]))
        print(json.loads(body)["uuid"])
else:
    conc = int(sys.argv[3])
    uuids = sys.stdin.read().split()
    def prepare(u):
        st, body = call("PUT", "/v1/nodes/%s/boot" % u, {"target": "deploy"})
        if st != 200:
            sys.stderr.write("prepare %s: %s %s\n" % (u, st, body[:300]))
        return st == 200
    t0 = time.monotonic()
    with ThreadPoolExecutor(conc) as pool:
        ok = list(pool.map(prepare, uuids))
    print("%.3f %d" % (time.monotonic() - t0, ok.count(False)))
PY

counts() {  # -> "glance_gets keystone_token_posts keystone_token_gets swift_heads"
    local g kp kg s
    g=$(grep -cE "\] GET /v2/images/($KERNEL|$RAMDISK) " "$GLANCE_LOG" || true)
    kp=$(grep -c '\] POST /v3/auth/tokens ' "$KEYSTONE_LOG" || true)
    kg=$(grep -c '\] GET /v3/auth/tokens ' "$KEYSTONE_LOG" || true)
    s=$(grep -cE "HEAD /v1/AUTH_test/glance/($KERNEL|$RAMDISK)" "$SWIFT_LOG" || true)
    echo "$g $kp $kg $s"
}
settle() {  # the access logs are written when a response is finished: wait until still
    local a b
    a=$(counts); sleep 1; b=$(counts)
    while [ "$a" != "$b" ]; do a=$b; sleep 1; b=$(counts); done
    echo "$b"
}

declare -a ROWS
run_row() {  # label ttl concurrency
    local label=$1 ttl=$2 conc=$3 state=$DIR/ib-$2-$3 api_port boot_port
    api_port=$(free_port); boot_port=$(free_port)
    cat > "$DIR/ironboot-$ttl-$conc.conf" <<CONF
[DEFAULT]
state_path = $state
[api]
port = $api_port
[httpboot]
port = $boot_port
[ipxe]
use_swift = true
[glance]
swift_endpoint_url = $SWIFT_AIO_PROXY_URL
swift_account = AUTH_test
swift_temp_url_key = $TEMP_URL_KEY
swift_container = $IRONBOOT_TEST_GLANCE_CONTAINER
swift_store_multiple_containers_seed = $IRONBOOT_TEST_GLANCE_SEED
auth_type = password
auth_url = $IRONBOOT_TEST_KEYSTONE_URL
username = $IRONBOOT_TEST_KEYSTONE_USER
password = $IRONBOOT_TEST_KEYSTONE_PASSWORD
project_name = $IRONBOOT_TEST_KEYSTONE_PROJECT
region_name = $IRONBOOT_TEST_KEYSTONE_REGION
metadata_cache_ttl = $ttl
CONF
    local before_start
    before_start=$(settle)
    "$IB_BIN" --config "$DIR/ironboot-$ttl-$conc.conf" --log warn serve 2>"$DIR/ironboot-$ttl-$conc.log" &
    IB_PID=$!
    local api=http://127.0.0.1:$api_port
    for _ in $(seq 300); do
        kill -0 "$IB_PID" 2>/dev/null || { echo "ironboot exited:" >&2; cat "$DIR/ironboot-$ttl-$conc.log" >&2; exit 1; }
        curl -fsS -o /dev/null "$api/healthz" 2>/dev/null && break
        sleep 0.2
    done
    say "$label: creating $NODES nodes (not timed)"
    python3 "$DIR/client.py" create "$api" "$KERNEL" "$RAMDISK" "$NODES" >"$DIR/uuids-$ttl-$conc"
    local before after out secs fails
    before=$(settle)
    say "$label: preparing $NODES nodes, $conc at a time"
    out=$(python3 "$DIR/client.py" prepare "$api" "$conc" <"$DIR/uuids-$ttl-$conc")
    after=$(settle)
    read -r secs fails <<<"$out"
    stop_ironboot
    local life
    life=$(settle)
    # deltas: timed window, and ironboot's whole life (start, node creation, prepares)
    local w l
    w=$(paste -d' ' <(tr ' ' '\n' <<<"$after") <(tr ' ' '\n' <<<"$before") | awk '{printf "%d ", $1 - $2}')
    l=$(paste -d' ' <(tr ' ' '\n' <<<"$life") <(tr ' ' '\n' <<<"$before_start") | awk '{printf "%d ", $1 - $2}')
    ROWS+=("$label|$ttl|$conc|$secs|$fails|$w|$l")
    say "$label: $secs s, $fails failed; window (glance GETs, token POSTs, token GETs, swift HEADs): $w; whole life: $l"
}

run_row "ironboot, cache on" "$TTL" "$CONCURRENCY"
run_row "ironboot, cache off" 0 "$CONCURRENCY"
[ "$SERIAL" != 1 ] || run_row "ironboot, cache off, one at a time (Ironic's pattern)" 0 1

echo
echo "| run | metadata_cache_ttl | concurrency | nodes/s | Glance GET /v2/images | Keystone POST /v3/auth/tokens | Swift HEAD | failed |"
echo "|---|---|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do
    IFS='|' read -r label ttl conc secs fails w l <<<"$r"
    read -r g kp kg s <<<"$w"
    printf '| %s | %s s | %s | %.0f | %s | %s | %s | %s |\n' "$label" "$ttl" "$conc" \
        "$(awk -v n="$NODES" -v s="$secs" 'BEGIN{print n/s}')" "$g" "$kp" "$s" "$fails"
done
echo
echo "($NODES nodes, 2 Glance images (kernel + ramdisk, 1 KiB each) shared by all; ironboot $LABEL;"
echo " counts are the requests in the services' access logs during the timed prepares;"
for r in "${ROWS[@]}"; do
    IFS='|' read -r label ttl conc secs fails w l <<<"$r"
    read -r g kp kg s <<<"$w"
    read -r lg lkp lkg ls <<<"$l"
    echo " $label: ${secs} s; Glance's token validations (GET /v3/auth/tokens) $kg;"
    echo "   ironboot's whole life (start + node creation + prepares): $lg Glance GETs, $lkp token POSTs, $ls Swift HEADs;"
done
echo " $(nproc) cores shared by the client, ironboot, Keystone, Glance and Swift)"

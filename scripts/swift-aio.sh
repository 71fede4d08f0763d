#!/usr/bin/env bash
# swift-aio.sh -- a REAL OpenStack Swift (PyPI `swift` 2.38.x) all-in-one on
# 127.0.0.1 with tempauth + tempurl, for ironboot's integration tests.
#
# Usage:
#   scripts/swift-aio.sh install  DIR  venv with swift + python-swiftclient (pinned),
#                                      apt-get install memcached if it is missing
#   scripts/swift-aio.sh start    DIR  (install if needed) fresh data, confs, rings;
#                                      start memcached + account/container/object/proxy
#                                      servers; wait for /healthcheck and a tempauth
#                                      token; print the `export` lines of `env`
#   scripts/swift-aio.sh stop     DIR  SIGTERM (SIGKILL after 10 s) to exactly the PIDs
#                                      recorded by `start` (only while /proc/PID/cmdline
#                                      still names this DIR)
#   scripts/swift-aio.sh restart  DIR  stop + start (start always wipes the data)
#   scripts/swift-aio.sh status   DIR  recorded PIDs, port and proxy health (rc 1 if down)
#   scripts/swift-aio.sh env      DIR  print `export ...` lines (see below)
#   scripts/swift-aio.sh selftest DIR  quick end-to-end tempurl check of a running instance
#   scripts/swift-aio.sh purge    DIR  stop, then delete only what this script created
#   scripts/swift-aio.sh keystone-proxy DIR
#                                      a second proxy-server on the same storage, port
#                                      proxy+6, whose auth is Keystone (authtoken +
#                                      keystoneauth, operator roles admin and member,
#                                      accounts AUTH_<project id>) instead of tempauth;
#                                      needs a running `start` and SWIFT_AIO_KEYSTONE_URL,
#                                      SWIFT_AIO_KEYSTONE_USER/_PASSWORD/_PROJECT (a user
#                                      that may validate tokens) and
#                                      SWIFT_AIO_KEYSTONE_VENV (a venv with
#                                      keystonemiddleware, e.g. Keystone's and Glance's);
#                                      stopped by `stop`; prints
#                                      export SWIFT_AIO_KEYSTONE_PROXY_URL=...
#
# DIR defaults to $SWIFT_AIO_DIR or /tmp/swift-aio.  Layout: DIR/venv (unless
# SWIFT_AIO_VENV), DIR/etc (swift.conf, rings, *-server.conf), DIR/srv/node/d1
# (the only device), DIR/run/{pids,state,env}, DIR/log/<server>.log.
# A non-empty DIR that this script did not create is refused.
#
# `env` prints: SWIFT_AIO_DIR SWIFT_AIO_VENV SWIFT_AIO_PROXY_URL SWIFT_AIO_AUTH_URL
#   SWIFT_AIO_STORAGE_URL SWIFT_AIO_USER SWIFT_AIO_KEY SWIFT_AIO_PROXY_LOG
#   ST_AUTH ST_USER ST_KEY
#
# Proxy access log: every client request is one line in $SWIFT_AIO_PROXY_LOG, e.g.
#   proxy-server: 127.0.0.1 127.0.0.1 26/Nov/2026/01/12/55 GET
#   /v1/AUTH_test/c/o%3Ftemp_url_sig%3D0123456789abcdef...%26temp_url_expires%3D1795655575
#   HTTP/1.0 200 - ...
# Path and query are percent-encoded as a whole (`?` -> %3F, `=` -> %3D, `&` -> %26),
# temp_url_sig is cut to its first 16 characters followed by `...`, and the line is
# written when the response is finished, so poll briefly before asserting on it.
#
# Environment knobs (all optional):
#   SWIFT_AIO_PROXY_PORT   proxy port; account/container/object use +1/+2/+3,
#                          memcached +4, swift's syslog datagrams go to +5 (UDP,
#                          nothing listens).  When it is set and any of those ports
#                          is taken, `start` fails.  When unset, `start` takes the
#                          first free block among 28080, 28090, ... 28470.
#   SWIFT_AIO_VENV         venv to create/use (DIR/venv)
#   SWIFT_AIO_PYTHON       interpreter that creates the venv (python3 with venv+ensurepip)
#   SWIFT_AIO_SWIFT_SPEC   ('swift==2.38.*')
#   SWIFT_AIO_CLIENT_SPEC  ('python-swiftclient==4.11.*'; tests compare against its
#                          generate_temp_url byte for byte)
#   SWIFT_AIO_DEVICES      devices root (DIR/srv/node).  ext4 holds only ~3.5 KB of
#                          xattrs per file, so objects with more than ~3 KB of
#                          X-Object-Meta-* get 507/503 there; a tmpfs such as
#                          /dev/shm/swift-aio-node (Linux >= 6.6) does not have that limit
#   SWIFT_AIO_TEMPURL_DIGESTS  tempurl allowed_digests ('' = Swift's default,
#                          "sha1 sha256 sha512" with sha1 deprecated)
#   SWIFT_AIO_TEMPURL_METHODS  tempurl methods ('' = GET HEAD PUT POST DELETE)
#   SWIFT_AIO_SKIP_APT=1   never call apt-get
#   SWIFT_AIO_START_TIMEOUT (60) seconds to wait for readiness
#   SWIFT_AIO_ERROR_SUPPRESSION_INTERVAL (0) proxy error_suppression_interval; with
#                          one device, Swift's default (60) turns one 507 into a
#                          minute of 503s for every object
#
# Tempauth users: test:tester/testing (.admin on AUTH_test), test2:tester2/testing2
# (.admin on AUTH_test2), test:tester3/testing3 (no role), keyrot:rotator/rotating
# (.admin on AUTH_keyrot, whose temp-URL keys one test rotates), admin:admin/admin
# (.reseller_admin).
set -euo pipefail

log()   { printf '[swift-aio] %s\n' "$*" >&2; }
die()   { log "ERROR: $*"; exit 1; }
now()   { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

CMD=${1:-}
[ -n "$CMD" ] || { usage >&2; exit 2; }
case "$CMD" in -h|--help|help) usage; exit 0 ;; esac
DIR=${2:-${SWIFT_AIO_DIR:-/tmp/swift-aio}}
MARKER=.swift-aio-owned

case "$CMD" in
    install|start|restart)
        if [ ! -e "$DIR" ]; then
            mkdir -p "$DIR"
            touch "$DIR/$MARKER"
        elif [ ! -e "$DIR/$MARKER" ]; then
            [ -d "$DIR" ] || die "$DIR exists and is not a directory"
            [ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty and was not created by swift-aio; refusing to use it"
            touch "$DIR/$MARKER"
        fi ;;
    stop|status|env|selftest|purge|keystone-proxy)
        if [ ! -d "$DIR" ]; then
            log "$DIR does not exist (not started)"
            [ "$CMD" = stop ] && exit 0
            exit 1
        fi ;;
    *) die "unknown command '$CMD' (install|start|stop|restart|status|env|selftest|purge|keystone-proxy)" ;;
esac
DIR=$(cd "$DIR" && pwd -P)

ETC=$DIR/etc
RUN=$DIR/run
LOGDIR=$DIR/log
PIDFILE=$RUN/pids
STATE=$RUN/state
HOST=127.0.0.1
RUN_USER=$(id -un)
START_TIMEOUT=${SWIFT_AIO_START_TIMEOUT:-60}
SWIFT_SPEC=${SWIFT_AIO_SWIFT_SPEC:-swift==2.38.*}
CLIENT_SPEC=${SWIFT_AIO_CLIENT_SPEC:-python-swiftclient==4.11.*}

# What `start` recorded (venv, port, devices) wins for every later command.
ST_VENV="" ST_PORT="" ST_DEVICES=""
if [ -f "$STATE" ]; then
    # shellcheck disable=SC1090
    . "$STATE"
fi
if [ "$CMD" = install ] || [ "$CMD" = start ] || [ "$CMD" = restart ]; then
    VENV=${SWIFT_AIO_VENV:-$DIR/venv}
    DEVICES=${SWIFT_AIO_DEVICES:-$DIR/srv/node}
else
    VENV=${ST_VENV:-${SWIFT_AIO_VENV:-$DIR/venv}}
    DEVICES=${ST_DEVICES:-${SWIFT_AIO_DEVICES:-$DIR/srv/node}}
fi
case "$VENV" in /*) ;; *) VENV=$PWD/$VENV ;; esac
case "$DEVICES" in /*) ;; *) DEVICES=$PWD/$DEVICES ;; esac
PY=$VENV/bin/python

set_ports() {  # proxy_port
    PROXY_PORT=$1
    ACCT_PORT=$((PROXY_PORT + 1))
    CONT_PORT=$((PROXY_PORT + 2))
    OBJ_PORT=$((PROXY_PORT + 3))
    MC_PORT=$((PROXY_PORT + 4))
    SYSLOG_PORT=$((PROXY_PORT + 5))
    PROXY_LOG=$LOGDIR/proxy-server.log
}
set_ports "${ST_PORT:-${SWIFT_AIO_PROXY_PORT:-28080}}"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
    else return 1; fi
}

apt_install() {  # pkg... (only the missing ones are passed in)
    [ "${SWIFT_AIO_SKIP_APT:-0}" = 1 ] && return 1
    command -v apt-get >/dev/null || return 1
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 || {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
    }
}

# ---------------------------------------------------------------- install
venv_ok() {  # the venv imports swift and swiftclient at the pinned versions
    [ -x "$PY" ] && [ -x "$VENV/bin/swift-proxy-server" ] || return 1
    "$PY" - "$SWIFT_SPEC" "$CLIENT_SPEC" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import swift.common.middleware.tempurl  # noqa: F401
import swiftclient.utils  # noqa: F401
for spec in sys.argv[1:]:
    name, _, want = spec.partition('==')
    have = version(name.strip())
    want = want.strip()
    if want.endswith('.*'):
        ok = have == want[:-2] or have.startswith(want[:-1])
    else:
        ok = not want or have == want
    if not ok:
        sys.exit(1)
EOF
}

pick_python() {  # an interpreter that can create a venv with pip
    local c
    if [ -n "${SWIFT_AIO_PYTHON:-}" ]; then echo "$SWIFT_AIO_PYTHON"; return 0; fi
    for c in python3 /usr/bin/python3; do
        if command -v "$c" >/dev/null && "$c" -c 'import venv, ensurepip' 2>/dev/null; then
            echo "$c"; return 0
        fi
    done
    return 1
}

versions() {
    "$PY" -c 'from importlib.metadata import version as v; print("swift", v("swift"), "/ python-swiftclient", v("python-swiftclient"))'
}

do_install() {
    local t0 python; t0=$(now)
    if ! command -v memcached >/dev/null; then
        log "memcached not found (tempauth keeps its tokens in memcache)"
        apt_install memcached || die "memcached is missing and apt-get install memcached failed"
    fi
    if venv_ok; then
        log "venv $VENV already has $(versions)"
        return 0
    fi
    if [ ! -x "$PY" ]; then
        if ! python=$(pick_python); then
            apt_install python3-venv || die "no python3 with venv/ensurepip and apt-get install python3-venv failed"
            python=/usr/bin/python3
        fi
        log "creating venv $VENV with $python ($("$python" -V 2>&1))"
        [ -e "$VENV" ] || { mkdir -p "$VENV"; touch "$VENV/$MARKER"; }
        "$python" -m venv "$VENV" || die "python -m venv $VENV failed"
    fi
    log "pip install '$SWIFT_SPEC' '$CLIENT_SPEC' into $VENV"
    if ! "$VENV/bin/pip" install -q --disable-pip-version-check "$SWIFT_SPEC" "$CLIENT_SPEC"; then
        # Only needed where no manylinux wheels exist: pyeclib bundles liberasurecode,
        # xattr/lxml/cryptography ship wheels for x86_64 and aarch64.
        log "pip failed; installing build dependencies with apt and retrying"
        apt_install build-essential pkg-config liberasurecode-dev libffi-dev \
            libxml2-dev libxslt1-dev zlib1g-dev libssl-dev python3-dev || true
        "$VENV/bin/pip" install -q --disable-pip-version-check "$SWIFT_SPEC" "$CLIENT_SPEC" ||
            die "pip install into $VENV failed"
    fi
    venv_ok || die "$VENV still does not provide $SWIFT_SPEC and $CLIENT_SPEC"
    log "install done in $(since "$t0")s: $(versions), $(memcached -V)"
}

# ---------------------------------------------------------------- helpers
pid_alive_ours() {  # pid name -> 0 if that pid is alive and is the process we started
    local pid=$1 name=$2 cmd
    [ -r "/proc/$pid/cmdline" ] || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    # a zombie has an empty cmdline: it counts as gone
    case "$name" in
        memcached) [[ "$cmd" == *memcached*"$RUN/memcached.pid"* ]] ;;
        *) [[ "$cmd" == *"$ETC/$name.conf"* ]] ;;
    esac
}

any_running() {
    [ -f "$PIDFILE" ] || return 1
    local pid name
    while read -r pid name; do
        [ -n "$pid" ] && pid_alive_ours "$pid" "$name" && return 0
    done <"$PIDFILE"
    return 1
}

http_ok() {  # url [header...] -> 0 if 2xx
    "$PY" - "$@" <<'EOF' 2>/dev/null
import sys, urllib.request
req = urllib.request.Request(sys.argv[1])
for h in sys.argv[2:]:
    k, v = h.split(':', 1)
    req.add_header(k.strip(), v.strip())
try:
    with urllib.request.urlopen(req, timeout=2) as r:
        sys.exit(0 if 200 <= r.status < 300 else 1)
except Exception:
    sys.exit(1)
EOF
}

ports_free() {  # proxy_port -> 0 if proxy..+4 (TCP) and +5 (UDP) can be bound on 127.0.0.1
    "$PY" - "$HOST" "$1" <<'EOF'
import socket, sys
host, base, busy = sys.argv[1], int(sys.argv[2]), []
for port, kind in [(base + i, socket.SOCK_STREAM) for i in range(5)] + [(base + 5, socket.SOCK_DGRAM)]:
    s = socket.socket(socket.AF_INET, kind)
    # the servers use SO_REUSEADDR too, so TIME_WAIT leftovers do not count
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        if kind == socket.SOCK_STREAM:
            s.listen(1)
    except OSError:
        busy.append(str(port))
    finally:
        s.close()
if busy:
    print(' '.join(busy))
    sys.exit(1)
EOF
}

choose_ports() {
    local base busy
    if [ -n "${SWIFT_AIO_PROXY_PORT:-}" ]; then
        case "$SWIFT_AIO_PROXY_PORT" in *[!0-9]*|'') die "SWIFT_AIO_PROXY_PORT must be a number" ;; esac
        busy=$(ports_free "$SWIFT_AIO_PROXY_PORT") ||
            die "port(s) in use on $HOST: $busy (SWIFT_AIO_PROXY_PORT=$SWIFT_AIO_PROXY_PORT needs it and +1..+5 free)"
        set_ports "$SWIFT_AIO_PROXY_PORT"
        return 0
    fi
    for base in $(seq 28080 10 28470); do
        if busy=$(ports_free "$base"); then
            [ "$base" = 28080 ] || log "ports 28080.. are taken; using proxy port $base"
            set_ports "$base"
            return 0
        fi
    done
    die "no free port block in 28080..28475 on $HOST; set SWIFT_AIO_PROXY_PORT"
}

# ---------------------------------------------------------------- configs
write_confs() {
    mkdir -p "$ETC" "$RUN" "$LOGDIR" "$DIR/cache"
    if [ ! -e "$DEVICES" ]; then
        mkdir -p "$DEVICES"; echo created >"$DEVICES/$MARKER"
    elif [ ! -e "$DEVICES/$MARKER" ]; then
        echo adopted >"$DEVICES/$MARKER"   # an empty dir (mount point) that we only fill
    fi
    mkdir -p "$DEVICES/d1"
    cat >"$ETC/swift.conf" <<EOF
[swift-hash]
swift_hash_path_prefix = swift-aio-prefix
swift_hash_path_suffix = swift-aio-suffix

[storage-policy:0]
name = Policy-0
default = yes
EOF
    local common
    common="bind_ip = $HOST
bind_timeout = 5
workers = 0
user = $RUN_USER
swift_dir = $ETC
log_udp_host = $HOST
log_udp_port = $SYSLOG_PORT
log_level = INFO
eventlet_debug = false"
    local be t port
    for be in account:$ACCT_PORT container:$CONT_PORT object:$OBJ_PORT; do
        t=${be%%:*}; port=${be##*:}
        cat >"$ETC/$t-server.conf" <<EOF
[DEFAULT]
$common
bind_port = $port
devices = $DEVICES
mount_check = false
disable_fallocate = true
recon_cache_path = $DIR/cache
log_name = $t-server

[pipeline:main]
pipeline = healthcheck $t-server

[app:$t-server]
use = egg:swift#$t

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
    done
    local digests="" methods=""
    [ -n "${SWIFT_AIO_TEMPURL_DIGESTS:-}" ] && digests="allowed_digests = $SWIFT_AIO_TEMPURL_DIGESTS"
    [ -n "${SWIFT_AIO_TEMPURL_METHODS:-}" ] && methods="methods = $SWIFT_AIO_TEMPURL_METHODS"
    cat >"$ETC/proxy-server.conf" <<EOF
[DEFAULT]
$common
bind_port = $PROXY_PORT
log_name = proxy-server
expose_info = true

[pipeline:main]
# The first proxy-logging writes one access line per client request (to stderr
# because of -v, i.e. to log/proxy-server.log); the second one logs subrequests.
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats tempurl tempauth copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
# Signed /info requests (swiftinfo_sig) are checked against this key.
admin_key = swift-aio-info-admin-key
error_suppression_interval = ${SWIFT_AIO_ERROR_SUPPRESSION_INTERVAL:-0}

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:cache]
use = egg:swift#memcache
memcache_servers = $HOST:$MC_PORT

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:tempurl]
use = egg:swift#tempurl
$digests
$methods

[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
user_test2_tester2 = testing2 .admin
user_test_tester3 = testing3
user_keyrot_rotator = rotating .admin

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
EOF
}

probe_xattrs() {  # warn when the devices filesystem holds only a few KB of xattrs per file
    "$PY" - "$DEVICES" <<'EOF' || log "WARNING: $DEVICES cannot hold 8 KB of user xattrs per file (ext4: ~3.5 KB): objects with more than ~3 KB of X-Object-Meta-* will fail with 503. SWIFT_AIO_DEVICES=/dev/shm/swift-aio-node avoids that."
import os, sys, tempfile, xattr
fd, path = tempfile.mkstemp(dir=sys.argv[1])
try:
    for i in range(32):
        xattr.setxattr(fd, 'user.swift-aio-probe%d' % i, b'x' * 254)
except OSError:
    sys.exit(1)
finally:
    os.close(fd)
    os.unlink(path)
EOF
}

build_rings() {
    # The swift-ring-builder entry point (same argv) called 9 times in ONE
    # interpreter: each separate swift-ring-builder process costs ~0.6 s of imports.
    "$PY" - "$ETC" "$HOST" "account:$ACCT_PORT" "container:$CONT_PORT" \
            "object:$OBJ_PORT" >/dev/null <<'EOF' || die "ring build failed"
import os, sys
from swift.cli.ringbuilder import main as ring_builder
etc, host = sys.argv[1], sys.argv[2]
for spec in sys.argv[3:]:
    kind, port = spec.split(':')
    builder = os.path.join(etc, kind + '.builder')
    for args, ok_codes in ((['create', '8', '1', '1'], (0,)),   # 2^8 parts, 1 replica
                           (['add', '--region', '1', '--zone', '1', '--ip', host,
                             '--port', port, '--device', 'd1', '--weight', '100'], (0,)),
                           (['rebalance'], (0, 1))):             # 1 = warnings
        try:
            ring_builder(['swift-ring-builder', builder] + args)
            code = 0
        except SystemExit as e:
            code = e.code or 0
        if code not in ok_codes:
            sys.exit('swift-ring-builder %s %s failed: %s' % (builder, ' '.join(args), code))
    if not os.path.getsize(os.path.join(etc, kind + '.ring.gz')):
        sys.exit(kind + '.ring.gz missing')
EOF
}

# ---------------------------------------------------------------- start/stop
start_bg() {  # name cmd...
    local name=$1 pid; shift
    nohup "$@" >>"$LOGDIR/$name.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid $name" >>"$PIDFILE"
    # $! exists before nohup has exec'd the server: wait until /proc shows the
    # real command line, so that liveness checks and `stop` recognise it.
    for _ in $(seq 1 100); do
        pid_alive_ours "$pid" "$name" && return 0
        kill -0 "$pid" 2>/dev/null || return 0   # died: wait_ready reports it
        sleep 0.05
    done
}

wait_ready() {
    local deadline=$(( $(date +%s) + START_TIMEOUT )) pid name ok port
    while :; do
        ok=1
        while read -r pid name; do
            if ! pid_alive_ours "$pid" "$name"; then
                log "$name (pid $pid) died; last log lines:"
                tail -n 30 "$LOGDIR/$name.log" >&2 || true
                return 1
            fi
        done <"$PIDFILE"
        for port in $ACCT_PORT $CONT_PORT $OBJ_PORT $PROXY_PORT; do
            http_ok "http://$HOST:$port/healthcheck" || { ok=0; break; }
        done
        if [ $ok = 1 ] && http_ok "http://$HOST:$PROXY_PORT/auth/v1.0" \
                "X-Auth-User: test:tester" "X-Auth-Key: testing"; then
            return 0
        fi
        [ "$(date +%s)" -lt "$deadline" ] || { log "not ready after ${START_TIMEOUT}s"; return 1; }
        sleep 0.2
    done
}

write_env() {
    {
        printf 'export SWIFT_AIO_DIR=%q\n' "$DIR"
        printf 'export SWIFT_AIO_VENV=%q\n' "$VENV"
        printf 'export SWIFT_AIO_PROXY_URL=%q\n' "http://$HOST:$PROXY_PORT"
        printf 'export SWIFT_AIO_AUTH_URL=%q\n' "http://$HOST:$PROXY_PORT/auth/v1.0"
        printf 'export SWIFT_AIO_STORAGE_URL=%q\n' "http://$HOST:$PROXY_PORT/v1/AUTH_test"
        printf 'export SWIFT_AIO_USER=%q\n' "test:tester"
        printf 'export SWIFT_AIO_KEY=%q\n' "testing"
        printf 'export SWIFT_AIO_PROXY_LOG=%q\n' "$PROXY_LOG"
        printf 'export SWIFT_AIO_INFO_ADMIN_KEY=%q\n' "swift-aio-info-admin-key"
        printf 'export ST_AUTH=%q\n' "http://$HOST:$PROXY_PORT/auth/v1.0"
        printf 'export ST_USER=%q\n' "test:tester"
        printf 'export ST_KEY=%q\n' "testing"
    } >"$RUN/env"
}

do_start() {
    if any_running; then
        VENV=${ST_VENV:-$VENV}; PY=$VENV/bin/python
        if http_ok "http://$HOST:$PROXY_PORT/healthcheck"; then
            log "already running on port $PROXY_PORT (pids in $PIDFILE)"
            cat "$RUN/env"
            return 0
        fi
        die "some recorded processes are alive but the proxy is not healthy; run '$0 stop $DIR' first"
    fi
    do_install
    local t0 s; t0=$(now)
    choose_ports
    # throwaway state: wipe previous confs, rings, data and logs
    if [ -d "$DEVICES" ] && [ -n "$(ls -A "$DEVICES" 2>/dev/null)" ] && [ ! -e "$DEVICES/$MARKER" ]; then
        die "$DEVICES is not empty and was not created by swift-aio; refusing to wipe it"
    fi
    rm -rf "$ETC" "$RUN" "$LOGDIR" "$DIR/cache"
    if [ -d "$DEVICES" ]; then
        find "$DEVICES" -mindepth 1 -maxdepth 1 ! -name "$MARKER" -exec rm -rf {} +
    fi
    write_confs
    probe_xattrs
    build_rings
    : >"$PIDFILE"
    printf 'ST_VENV=%q\nST_PORT=%q\nST_DEVICES=%q\n' "$VENV" "$PROXY_PORT" "$DEVICES" >"$STATE"
    start_bg memcached memcached -l "$HOST" -p "$MC_PORT" -U 0 -m 64 -c 1024 \
        -u "$RUN_USER" -P "$RUN/memcached.pid"
    for s in account-server container-server object-server proxy-server; do
        start_bg "$s" "$VENV/bin/swift-$s" "$ETC/$s.conf" -v
    done
    if ! wait_ready; then
        do_stop
        die "startup failed; logs in $LOGDIR"
    fi
    write_env
    log "started in $(since "$t0")s: proxy http://$HOST:$PROXY_PORT ($(awk '{printf "%s=%s ", $2, $1}' "$PIDFILE"))"
    cat "$RUN/env"
}

do_keystone_proxy() {
    any_running || die "not running: run '$0 start $DIR' first"
    local port=$((PROXY_PORT + 6)) v
    for v in SWIFT_AIO_KEYSTONE_URL SWIFT_AIO_KEYSTONE_USER SWIFT_AIO_KEYSTONE_PASSWORD \
             SWIFT_AIO_KEYSTONE_PROJECT SWIFT_AIO_KEYSTONE_VENV; do
        [ -n "${!v:-}" ] || die "keystone-proxy needs $v"
    done
    local site
    site=$("$SWIFT_AIO_KEYSTONE_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') ||
        die "no python in $SWIFT_AIO_KEYSTONE_VENV"
    [ -d "$site/keystonemiddleware" ] || die "no keystonemiddleware in $site"
    if grep -q ' proxy-server-keystone$' "$PIDFILE" && http_ok "http://$HOST:$port/healthcheck"; then
        log "keystone proxy already running on port $port"
    else
        sed -e "s/^bind_port = .*/bind_port = $port/" \
            -e "s/^log_name = proxy-server$/log_name = proxy-server-keystone/" \
            -e "s/ tempauth / authtoken keystoneauth /" \
            "$ETC/proxy-server.conf" >"$ETC/proxy-server-keystone.conf"
        cat >>"$ETC/proxy-server-keystone.conf" <<EOF

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = $SWIFT_AIO_KEYSTONE_URL
auth_url = $SWIFT_AIO_KEYSTONE_URL
auth_type = password
username = $SWIFT_AIO_KEYSTONE_USER
password = $SWIFT_AIO_KEYSTONE_PASSWORD
project_name = $SWIFT_AIO_KEYSTONE_PROJECT
user_domain_id = default
project_domain_id = default
delay_auth_decision = True

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
reseller_prefix = AUTH
EOF
        chmod 600 "$ETC/proxy-server-keystone.conf"
        # keystonemiddleware and its libraries come from the other venv, after Swift's own
        PYTHONPATH=$site start_bg proxy-server-keystone \
            "$VENV/bin/swift-proxy-server" "$ETC/proxy-server-keystone.conf" -v
        local deadline=$(( $(date +%s) + START_TIMEOUT )) pid name alive
        until http_ok "http://$HOST:$port/healthcheck"; do
            alive=0
            while read -r pid name; do
                [ "$name" = proxy-server-keystone ] && pid_alive_ours "$pid" "$name" && alive=1
            done <"$PIDFILE"
            if [ "$alive" = 0 ]; then
                tail -20 "$LOGDIR/proxy-server-keystone.log" >&2
                die "the keystone proxy died; log in $LOGDIR/proxy-server-keystone.log"
            fi
            [ "$(date +%s)" -lt "$deadline" ] || die "the keystone proxy is not healthy after ${START_TIMEOUT}s"
            sleep 0.2
        done
        log "keystone proxy on http://$HOST:$port"
    fi
    printf 'export SWIFT_AIO_KEYSTONE_PROXY_URL=%q\n' "http://$HOST:$port"
}

do_stop() {
    [ -f "$PIDFILE" ] || { log "nothing to stop (no $PIDFILE)"; return 0; }
    local pid name left=""
    while read -r pid name; do
        [ -n "$pid" ] || continue
        if pid_alive_ours "$pid" "$name"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done <"$PIDFILE"
    for _ in $(seq 1 50); do
        left=""
        while read -r pid name; do
            [ -n "$pid" ] && pid_alive_ours "$pid" "$name" && left="$left $pid"
        done <"$PIDFILE"
        [ -z "$left" ] && break
        sleep 0.2
    done
    for pid in $left; do
        log "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -f "$PIDFILE"
    log "stopped"
}

do_status() {
    [ -f "$PIDFILE" ] || { echo "not running"; return 1; }
    local pid name rc=0
    while read -r pid name; do
        if pid_alive_ours "$pid" "$name"; then
            echo "$name pid=$pid alive rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null)"
        else
            echo "$name pid=$pid DEAD"; rc=1
        fi
    done <"$PIDFILE"
    if http_ok "http://$HOST:$PROXY_PORT/healthcheck"; then
        echo "proxy http://$HOST:$PROXY_PORT healthcheck OK (log: $PROXY_LOG)"
    else
        echo "proxy http://$HOST:$PROXY_PORT healthcheck FAILED"; rc=1
    fi
    return $rc
}

do_env() {
    [ -f "$RUN/env" ] || die "no $RUN/env: run '$0 start $DIR' first"
    any_running || log "WARNING: the instance in $DIR is not running"
    cat "$RUN/env"
}

do_selftest() {
    [ -f "$RUN/env" ] || die "not started"
    # shellcheck disable=SC1091
    . "$RUN/env"
    "$PY" - <<'EOF'
import json, os, time, urllib.error, urllib.parse, urllib.request
from swiftclient.utils import generate_temp_url

P = os.environ['SWIFT_AIO_PROXY_URL']

def req(method, url, headers=None, data=None):
    r = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()

st, h, _ = req('GET', os.environ['SWIFT_AIO_AUTH_URL'],
               {'X-Auth-User': os.environ['SWIFT_AIO_USER'],
                'X-Auth-Key': os.environ['SWIFT_AIO_KEY']})
assert st == 200, st
tok, surl = h['X-Auth-Token'], h['X-Storage-Url']
A = {'X-Auth-Token': tok}
path = surl[len(P):]
assert req('POST', surl, dict(A, **{'X-Account-Meta-Temp-URL-Key': 'k1'}))[0] == 204
assert req('PUT', surl + '/selftest', A)[0] in (201, 202)
assert req('PUT', surl + '/selftest/hello.txt', A, b'hello tempurl')[0] == 201
ok = fail = 0
def check(name, got, want):
    global ok, fail
    if got == want:
        ok += 1
    else:
        fail += 1
        print('FAIL', name, 'got', got, 'want', want)
print('tempurl /info:', json.loads(req('GET', P + '/info')[2])['tempurl'])
for d in ('sha1', 'sha256', 'sha512'):
    u = generate_temp_url(path + '/selftest/hello.txt', 60, 'k1', 'GET', digest=d)
    st, h, body = req('GET', P + u)
    check('GET ' + d, (st, body), (200, b'hello tempurl'))
    check('HEAD ' + d, req('HEAD', P + u)[0], 200)
    check('PUT with GET sig ' + d, req('PUT', P + u, data=b'x')[0], 401)
u = generate_temp_url(path + '/selftest/hello.txt', 60, 'wrong', 'GET')
check('wrong key', req('GET', P + u)[0], 401)
u = generate_temp_url(path + '/selftest/hello.txt', int(time.time()) - 5, 'k1', 'GET', absolute=True)
check('expired', req('GET', P + u)[0], 401)
# the proxy access log records the temp URL request: path and query percent-encoded
# as a whole, temp_url_sig cut to 16 characters
u = generate_temp_url(path + '/selftest/hello.txt', 60, 'k1', 'GET')
check('logged GET', req('GET', P + u)[0], 200)
sig = urllib.parse.parse_qs(u.split('?', 1)[1])['temp_url_sig'][0]
want = 'GET ' + urllib.parse.quote(path + '/selftest/hello.txt?temp_url_sig=' + sig[:16] + '...', safe='/')
found = False
for _ in range(50):
    with open(os.environ['SWIFT_AIO_PROXY_LOG']) as f:
        found = any(want in line and ' 200 ' in line for line in f)
    if found:
        break
    time.sleep(0.1)
check('proxy log has ' + want, found, True)
print('selftest: %d passed, %d failed' % (ok, fail))
raise SystemExit(1 if fail else 0)
EOF
}

do_purge() {
    do_stop
    [ -e "$DIR/$MARKER" ] || die "$DIR was not created by swift-aio; not deleting anything"
    rm -rf "$ETC" "$RUN" "$LOGDIR" "$DIR/cache"
    if [ -e "$DEVICES/$MARKER" ]; then
        if [ "$(cat "$DEVICES/$MARKER")" = adopted ]; then
            find "$DEVICES" -mindepth 1 -delete
        else
            rm -rf "$DEVICES"
        fi
    fi
    if [ -d "$DIR/srv" ]; then rmdir "$DIR/srv" 2>/dev/null || true; fi
    if [ -e "$VENV/$MARKER" ] && [ "${VENV#"$DIR"/}" != "$VENV" ]; then
        rm -rf "$VENV"
    elif [ -d "$VENV" ]; then
        log "keeping venv $VENV (outside $DIR or not created by swift-aio)"
    fi
    rm -f "$DIR/$MARKER"
    if rmdir "$DIR" 2>/dev/null; then
        log "removed $DIR"
    else
        log "kept $DIR: it still holds files that swift-aio did not create"
    fi
}

case "$CMD" in
    install)  do_install ;;
    start)    do_start ;;
    stop)     do_stop ;;
    restart)  do_stop; do_start ;;
    status)   do_status ;;
    env)      do_env ;;
    selftest) do_selftest ;;
    purge)    do_purge ;;
    keystone-proxy) do_keystone_proxy ;;
esac

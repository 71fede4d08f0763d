#!/usr/bin/env bash
# glance-aio.sh -- three REAL OpenStack Glance image APIs (PyPI `glance` 32.0.0 with
# glance_store 4.10.0) on 127.0.0.1 for ironboot's integration tests, all
# authenticating through a real Keystone (keystonemiddleware, `auth_strategy =
# keystone`, Glance's default role-based policies), each with its own SQLite DB:
#
#   swift0  port P    store: the existing Swift (tempauth), container $GLANCE_AIO_CONTAINER
#                     (glance), swift_store_multiple_containers_seed = 0
#   swift3  port P+1  store: the same Swift account, container base $GLANCE_AIO_CONTAINER3
#                     (glance3), seed $GLANCE_AIO_SEED3 (3): objects go to
#                     glance3_<first 3 characters of the image id>
#   file    port P+2  store: a local directory (default_store = file), no Swift
#
# glance_store 4.10.0 is the last one that still speaks Swift auth v1 (tempauth);
# glance 33 needs glance_store 5, which only knows Keystone v3.  Both Swift Glances
# store images of $GLANCE_AIO_LARGE_OBJECT_MB (1) MB or more, and chunked uploads of
# unknown size, as a DLO manifest <container>/<id> (X-Object-Manifest: <container>/<id>-,
# 0 bytes in the listing) plus segments <id>-00001... of $GLANCE_AIO_CHUNK_MB (1) MB;
# glance_store's MB is 1000 * 1024 = 1,024,000 bytes.  show_image_direct_url and
# show_multiple_locations are on.
#
# Usage:
#   scripts/glance-aio.sh install DIR   venv with glance + glance_store + python-swiftclient
#                                       + pyuwsgi (pinned; reused when it has them)
#   scripts/glance-aio.sh start   DIR   (install if needed) FRESH data, one db_sync copied
#                                       to the three instances, three uWSGI servers; waits
#                                       until each answers 401 without a token and lets a
#                                       Keystone token through; smoke test (upload 1 KiB,
#                                       check the object in Swift / the file store, delete);
#                                       print `env`
#   scripts/glance-aio.sh stop    DIR   SIGTERM (SIGKILL after 10 s) to exactly the PIDs
#                                       recorded by `start` (PID + start time checked)
#   scripts/glance-aio.sh status  DIR   recorded PIDs and /healthcheck (rc 1 if down)
#   scripts/glance-aio.sh env     DIR   print the `export ...` lines (see below)
#
# Layout: DIR/venv (unless GLANCE_AIO_VENV), DIR/etc (constraints), DIR/<instance>/{etc,
# data,log,run} with log/glance-api.log and log/wsgi.log, DIR/run/env, DIR/bin/gaio.py
# (stdlib-only helper).  A non-empty DIR that this script did not create is refused.
#
# `env` prints: GLANCE_AIO_DIR IRONBOOT_TEST_GLANCE_URL IRONBOOT_TEST_GLANCE_CONTAINER
#   IRONBOOT_TEST_GLANCE_SEED IRONBOOT_TEST_GLANCE3_URL IRONBOOT_TEST_GLANCE3_CONTAINER
#   IRONBOOT_TEST_GLANCE3_SEED IRONBOOT_TEST_GLANCE_FILE_URL IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT
#   IRONBOOT_TEST_GLANCE_LARGE_OBJECT_MB IRONBOOT_TEST_GLANCE_CHUNK_MB
# (URLs without /v2.)  Only swift0 belongs in the Keystone catalog (one `image` service
# per region): `scripts/keystone-aio.sh catalog KDIR image glance $IRONBOOT_TEST_GLANCE_URL`.
#
# Environment knobs (read by start; the defaults are what keystone-aio.sh and
# swift-aio.sh export):
#   GLANCE_AIO_KEYSTONE_URL      ($IRONBOOT_TEST_KEYSTONE_URL) Keystone, no /v3
#   GLANCE_AIO_KEYSTONE_REGION   ($IRONBOOT_TEST_KEYSTONE_REGION, else RegionOne)
#   GLANCE_AIO_KEYSTONE_USER/_PASSWORD/_PROJECT  ($KEYSTONE_AIO_GLANCE_*) the
#                                keystonemiddleware user (role `service` in its project)
#   GLANCE_AIO_SMOKE_USER/_PASSWORD/_PROJECT     ($IRONBOOT_TEST_KEYSTONE_ADMIN_*) the
#                                user the smoke test uploads as
#   GLANCE_AIO_SWIFT_AUTH_URL/_USER/_KEY  ($SWIFT_AIO_AUTH_URL, $SWIFT_AIO_USER,
#                                $SWIFT_AIO_KEY) tempauth v1 credentials of the store
#   GLANCE_AIO_PORT              swift0's port; swift3 and file use +1, +2.  When set and
#                                any is taken, `start` fails; when unset, the first free
#                                block among 29300, 29310, ... 29390
#   GLANCE_AIO_CONTAINER (glance) GLANCE_AIO_CONTAINER3 (glance3) GLANCE_AIO_SEED3 (3)
#   GLANCE_AIO_LARGE_OBJECT_MB (1) GLANCE_AIO_CHUNK_MB (1)
#   GLANCE_AIO_VENV (DIR/venv)   may be shared with scripts/keystone-aio.sh
#   GLANCE_AIO_PYTHON (python3)  interpreter that creates the venv (>= 3.10)
#   GLANCE_AIO_START_TIMEOUT (120)  seconds to wait for the three APIs
#
# Each instance serves the real glance.wsgi.api application through a 10-line wrapper
# that runs one non-GET request at a time: with SQLite, concurrent writers otherwise
# fail with HTTP 500 "database is locked" (cargo test runs tests in parallel).
set -euo pipefail
set +m   # no job control: `setsid cmd &` must exec cmd in the background child

log()   { printf '[glance-aio] %s\n' "$*" >&2; }
die()   { log "ERROR: $*"; exit 1; }
now()   { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

CMD=${1:-}
[ -n "$CMD" ] || { usage >&2; exit 2; }
case "$CMD" in -h|--help|help) usage; exit 0 ;; esac
DIR=${2:-}
[ -n "$DIR" ] || die "usage: $0 $CMD DIR"
MARKER=.glance-aio-owned

case "$CMD" in
    install|start)
        if [ ! -e "$DIR" ]; then
            mkdir -p "$DIR"
            touch "$DIR/$MARKER"
        elif [ ! -e "$DIR/$MARKER" ]; then
            [ -d "$DIR" ] || die "$DIR exists and is not a directory"
            [ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty and was not created by glance-aio; refusing to use it"
            touch "$DIR/$MARKER"
        fi ;;
    stop|status|env)
        if [ ! -d "$DIR" ]; then
            log "$DIR does not exist (not started)"
            [ "$CMD" = stop ] && exit 0
            exit 1
        fi ;;
    *) die "unknown command '$CMD' (install|start|stop|status|env)" ;;
esac
DIR=$(cd "$DIR" && pwd -P)

GLANCE_VERSION=32.0.0
STORE_VERSION=4.10.0
SWIFTCLIENT_VERSION=4.11.0
VENV=${GLANCE_AIO_VENV:-$DIR/venv}
case "$VENV" in /*) ;; *) VENV=$PWD/$VENV ;; esac
PY=$VENV/bin/python
RUN=$DIR/run
HELPER=$DIR/bin/gaio.py
HOST=127.0.0.1
INSTANCES=(swift0 swift3 file)
START_TIMEOUT=${GLANCE_AIO_START_TIMEOUT:-120}
CONTAINER=${GLANCE_AIO_CONTAINER:-glance}
CONTAINER3=${GLANCE_AIO_CONTAINER3:-glance3}
SEED3=${GLANCE_AIO_SEED3:-3}
LARGE_MB=${GLANCE_AIO_LARGE_OBJECT_MB:-1}
CHUNK_MB=${GLANCE_AIO_CHUNK_MB:-1}

# ---------------------------------------------------------------- processes
proc_start() { awk '{sub(/^.*\) /,""); print $20}' "/proc/$1/stat" 2>/dev/null || true; }
alive_same() {  # PID STARTTIME -> 0 if that very process still exists (a zombie is gone)
    local p=$1 st=$2 cur
    [ -d "/proc/$p" ] || return 1
    cur=$(proc_start "$p")
    [ -n "$cur" ] && [ "$cur" = "$st" ] || return 1
    [ "$(awk '{sub(/^.*\) /,""); print $1}' "/proc/$p/stat" 2>/dev/null)" != Z ]
}
children_of() {
    local parent=$1 f pid ppid
    for f in /proc/[0-9]*/stat; do
        pid=${f#/proc/}; pid=${pid%/stat}
        ppid=$(awk '{sub(/^.*\) /,""); print $2}' "$f" 2>/dev/null) || continue
        [ "$ppid" = "$parent" ] && echo "$pid"
    done
    return 0
}
pidfile() { echo "$DIR/$1/run/pids"; }   # lines: "PID STARTTIME ROLE"
running_master() {  # instance -> prints the master PID if it is alive
    local f p st role
    f=$(pidfile "$1")
    [ -f "$f" ] || return 1
    while read -r p st role; do
        [ "$role" = master ] && alive_same "$p" "$st" && { echo "$p"; return 0; }
    done <"$f"
    return 1
}
http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" 2>/dev/null || true; }
ports_free() {  # port... -> rc 0 if all can be bound; else prints the busy ones, rc 1
    python3 - "$HOST" "$@" <<'EOF'
import socket, sys
busy = []
for p in sys.argv[2:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((sys.argv[1], int(p)))
        s.listen(1)
    except OSError:
        busy.append(p)
    finally:
        s.close()
print(" ".join(busy))
sys.exit(1 if busy else 0)
EOF
}

# ---------------------------------------------------------------- install
write_constraints() {  # `pip freeze` of the verified venv (Python 3.11, Debian 12)
    cat >"$1" <<'EOF'
glance==32.0.0
glance_store==4.10.0
python-swiftclient==4.11.0
pyuwsgi==2.0.30.post1
gunicorn==27.0.1
alembic==1.20.1
amqp==5.4.2
attrs==26.1.0
automaton==3.5.0
autopage==0.6.0
bcrypt==5.0.0
cachetools==8.0.2
castellan==5.8.0
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
cliff==4.17.0
cmd2==4.3.1
cryptography==50.0.2
cursive==0.3.1
debtcollector==3.1.0
decorator==5.3.1
defusedxml==0.7.1
dnspython==2.9.2
dogpile.cache==1.5.0
eventlet==0.41.3
fasteners==0.20
futurist==3.5.0
greenlet==3.5.6
httplib2==0.32.1
idna==3.20
importlib_metadata==10.2.0
iso8601==2.1.0
Jinja2==3.1.6
jmespath==1.1.0
jsonpatch==1.48
jsonpointer==3.12
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
kombu==5.7.0
lazy-importer==0.1.0
Mako==1.4.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
msgpack==1.2.4
netaddr==1.3.0
networkx==3.6.1
openstacksdk==4.22.0
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.limit==2.12.0
oslo.log==8.3.2
oslo.messaging==18.3.1
oslo.metrics==0.17.0
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.reports==3.9.0
oslo.serialization==5.11.0
oslo.service==4.8.0
oslo.upgradecheck==2.8.0
oslo.utils==10.2.0
osprofiler==4.4.0
packaging==26.4
Paste==3.10.1
PasteDeploy==3.1.0
pbr==7.1.3
platformdirs==4.14.8
prettytable==3.18.0
prometheus_client==0.26.0
prompt_toolkit==3.0.53
psutil==7.2.2
pycadf==4.1.0
pycparser==3.12
pydot==4.0.1
Pygments==2.21.0
PyJWT==2.15.1
pyparsing==3.3.3
pyperclip==1.11.0
python-barbicanclient==7.6.0
python-dateutil==4.0.0
python-keystoneclient==6.0.0
PyYAML==6.0.4
referencing==0.37.0
repoze-lru==0.8
requests==2.34.2
retrying==1.4.2
rfc3986==2.0.0
rich==15.0.0
rich-argparse==1.8.0
Routes==2.5.1
rpds-py==2026.9.1
simplegeneric==0.8.1
six==1.17.0
SQLAlchemy==2.1.9
statsd==4.0.1
stevedore==5.10.0
taskflow==6.5.0
tenacity==9.2.1
testresources==2.1.2
testscenarios==0.7.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
vine==5.1.0
wcwidth==0.9.4
WebOb==1.8.11
wrapt==2.5.2
WSME==0.13.0
yappi==1.7.6
zipp==4.1.2
EOF
}

venv_ok() {
    [ -x "$PY" ] && [ -x "$VENV/bin/glance-manage" ] && [ -x "$VENV/bin/uwsgi" ] || return 1
    "$PY" - "$GLANCE_VERSION" "$STORE_VERSION" "$SWIFTCLIENT_VERSION" <<'EOF' 2>/dev/null
import importlib.util, sys
from importlib.metadata import version
want = dict(zip(("glance", "glance_store", "python-swiftclient"), sys.argv[1:]))
ok = importlib.util.find_spec("glance.wsgi.api") is not None  # not imported: reads config
ok = ok and importlib.util.find_spec("swiftclient") is not None
sys.exit(0 if ok and all(version(k) == v for k, v in want.items()) else 1)
EOF
}

do_install() {
    local t0 python; t0=$(now)
    if venv_ok; then
        log "venv $VENV already has glance $GLANCE_VERSION, glance_store $STORE_VERSION"
        return 0
    fi
    python=${GLANCE_AIO_PYTHON:-python3}
    "$python" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null ||
        die "$python cannot create a venv or is older than 3.10 (install python3-venv, or set GLANCE_AIO_PYTHON)"
    if [ ! -x "$PY" ]; then
        log "creating venv $VENV with $python ($("$python" -V 2>&1))"
        "$python" -m venv "$VENV" || die "python -m venv $VENV failed"
    fi
    mkdir -p "$DIR/etc"
    write_constraints "$DIR/etc/constraints.txt"
    # python-swiftclient is glance_store's [swift] extra, not a glance dependency
    log "pip install glance==$GLANCE_VERSION glance_store==$STORE_VERSION python-swiftclient pyuwsgi (constraints: $DIR/etc/constraints.txt) into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -c "$DIR/etc/constraints.txt" \
        "glance==$GLANCE_VERSION" "glance_store==$STORE_VERSION" \
        "python-swiftclient==$SWIFTCLIENT_VERSION" pyuwsgi || die "pip install into $VENV failed"
    venv_ok || die "$VENV still does not provide glance $GLANCE_VERSION / glance_store $STORE_VERSION / python-swiftclient"
    log "install done in $(since "$t0")s"
}

# ---------------------------------------------------------------- config
write_instance() {  # instance port store(swift|file) container seed
    local name=$1 port=$2 store=$3 container=$4 seed=$5 i=$DIR/$1
    mkdir -p "$i/etc" "$i/data/images" "$i/data/staging" "$i/data/tasks" "$i/log" "$i/run" "$i/lock"
    local sample=$VENV/etc/glance/glance-api-paste.ini
    [ -f "$sample" ] || die "paste sample not found at $sample"
    # the healthcheck app reads a "disable" file path; keep it inside DIR
    sed "s#^disable_by_file_path = .*#disable_by_file_path = $i/run/healthcheck_disable#" \
        "$sample" >"$i/etc/glance-api-paste.ini"
    local backends="fs:file" default=fs
    [ "$store" = swift ] && { backends="fs:file, swift:swift"; default=swift; }
    cat >"$i/etc/glance-api.conf" <<EOF
# written by scripts/glance-aio.sh (glance $GLANCE_VERSION, glance_store $STORE_VERSION): $name, http://$HOST:$port
[DEFAULT]
log_file = $i/log/glance-api.log
use_stderr = false
enabled_backends = $backends
show_image_direct_url = true
show_multiple_locations = true

[database]
connection = sqlite:///$i/data/glance.sqlite

[paste_deploy]
# keystonemiddleware auth_token + context: auth_strategy = keystone
flavor = keystone
config_file = $i/etc/glance-api-paste.ini

[glance_store]
default_backend = $default

[fs]
filesystem_store_datadir = $i/data/images

# reserved stores, required with enabled_backends
[os_glance_staging_store]
filesystem_store_datadir = $i/data/staging

[os_glance_tasks_store]
filesystem_store_datadir = $i/data/tasks

[oslo_concurrency]
lock_path = $i/lock

[keystone_authtoken]
www_authenticate_uri = $KS_URL
auth_url = $KS_URL
auth_type = password
username = $KS_USER
password = $KS_PASSWORD
project_name = $KS_PROJECT
user_domain_name = Default
project_domain_name = Default
region_name = $KS_REGION
interface = internal
service_type = image
service_token_roles_required = true
EOF
    if [ "$store" = swift ]; then
        cat >>"$i/etc/glance-api.conf" <<EOF

[swift]
# credentials in a reference file: locations read swift+config://ref1/<container>/<id>
default_swift_reference = ref1
swift_store_config_file = $i/etc/glance-swift.conf
swift_store_container = $container
swift_store_create_container_on_put = true
swift_store_multiple_containers_seed = $seed
swift_store_large_object_size = $LARGE_MB
swift_store_large_object_chunk_size = $CHUNK_MB
EOF
        # auth_version belongs here (swift_store_auth_version is deprecated)
        (umask 077; cat >"$i/etc/glance-swift.conf" <<EOF
[ref1]
auth_version = 1
auth_address = $SW_AUTH_URL
user = $SW_USER
key = $SW_KEY
EOF
        )
    fi
    # SQLite + oslo.db: two concurrent writers deadlock and one gets "database is
    # locked" at once; one non-GET request at a time inside the single worker avoids it
    cat >"$i/etc/glance_aio_wsgi.py" <<'EOF'
"""glance-aio: the real glance WSGI app, one non-GET request at a time."""
import threading

from glance.wsgi.api import application as _glance_app

_write_lock = threading.Lock()


def application(environ, start_response):
    if environ.get("REQUEST_METHOD") in ("GET", "HEAD", "OPTIONS"):
        return _glance_app(environ, start_response)
    with _write_lock:  # glance reads the whole request inside this call
        return _glance_app(environ, start_response)
EOF
    echo "$port" >"$i/run/port"
}

# The helper: Python standard library only.
write_helper() {
    mkdir -p "$DIR/bin"
    cat >"$HELPER" <<'PYEOF'
"""glance-aio helper: account | ready TIMEOUT NAME=URL=PID=START... | smoke NAME=URL=STORE=CONTAINER=SEED..."""
import json
import os
import sys
import time
import urllib.error
import urllib.request

E = os.environ


def http(method, url, headers=None, data=None, timeout=30):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def keystone_token(prefix):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": E[prefix + "USER"], "domain": {"name": "Default"}, "password": E[prefix + "PASSWORD"]}}},
        "scope": {"project": {"name": E[prefix + "PROJECT"], "domain": {"name": "Default"}}}}}
    st, h, b = http("POST", E["KS_URL"] + "/v3/auth/tokens", {"Content-Type": "application/json"},
                    json.dumps(body).encode())
    if st != 201:
        raise RuntimeError("Keystone password auth as %s: HTTP %s %s" % (E[prefix + "USER"], st, b[:200]))
    return h["X-Subject-Token"]


def swift_login():
    st, h, _ = http("GET", E["SW_AUTH_URL"], {"X-Auth-User": E["SW_USER"], "X-Auth-Key": E["SW_KEY"]})
    if st != 200:
        raise RuntimeError("tempauth login at %s: HTTP %s" % (E["SW_AUTH_URL"], st))
    return h["X-Auth-Token"], h["X-Storage-Url"]


def alive(pid, start):
    try:
        with open("/proc/%s/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and fields[19] == start


def ready(timeout, specs):
    """Each instance must answer 401 without a token (keystonemiddleware is in front),
    then let the service user's token through (200, or 403 from the policy)."""
    deadline = time.time() + timeout
    todo = [s.split("=") for s in specs]
    token = None
    last = {}
    while todo:
        for spec in list(todo):
            name, url, pid, start = spec
            if not alive(pid, start):
                sys.exit("%s: uWSGI (pid %s) exited during start-up; see %s/log" % (name, pid, name))
            try:
                st = http("GET", url + "/v2/images", {"Accept": "application/json"}, timeout=5)[0]
                if st == 401:
                    if token is None:
                        token = keystone_token("KS_")
                    st = http("GET", url + "/v2/images", {"X-Auth-Token": token}, timeout=10)[0]
                    if st in (200, 403):
                        todo.remove(spec)
                        print("%s ready: %s (401 without a token, %s with one)" % (name, url, st))
                        continue
                    if st == 401:
                        token = None
                last[name] = st
            except (OSError, RuntimeError) as e:
                last[name] = str(e)
        if todo and time.time() > deadline:
            sys.exit("not ready after %ss: %s" % (timeout, ", ".join("%s: %s" % (s[0], last.get(s[0])) for s in todo)))
        time.sleep(0.2)


def container_for(image_id, base, seed):
    """glance_store SingleTenantStore._get_container_name (= Ironic's _get_swift_container)."""
    if seed == 0:
        return base
    image_id = image_id.lower()
    return base + "_" + image_id[:seed + image_id[:seed].count("-")]


def smoke(specs):
    token = keystone_token("SMOKE_")
    G = {"X-Auth-Token": token, "Accept": "application/json"}
    stoken, surl = swift_login()
    S = {"X-Auth-Token": stoken}
    for spec in specs:
        name, url, store, base, seed = spec.split("=")
        seed = int(seed)
        st, _, b = http("GET", url + "/v2/info/stores", G)
        want = {"id": "swift" if store == "swift" else "fs", "default": "true"}
        assert st == 200 and want in json.loads(b)["stores"], "%s: /v2/info/stores: %s %s" % (name, st, b[:300])
        st, _, b = http("POST", url + "/v2/images", dict(G, **{"Content-Type": "application/json"}), json.dumps(
            {"name": "glance-aio-smoke", "disk_format": "raw", "container_format": "bare"}).encode())
        assert st == 201, "%s: create image: %s %s" % (name, st, b[:300])
        iid = json.loads(b)["id"]
        c = container_for(iid, base, seed)
        existed = store != "swift" or http("HEAD", "%s/%s" % (surl, c), S)[0] in (200, 204)
        st, _, b = http("PUT", "%s/v2/images/%s/file" % (url, iid),
                        dict(G, **{"Content-Type": "application/octet-stream"}), b"x" * 1024)
        assert st == 204, "%s: upload: %s %s" % (name, st, b[:300])
        st, _, b = http("GET", "%s/v2/images/%s" % (url, iid), G)
        img = json.loads(b)
        assert img["status"] == "active" and img.get("stores") == want["id"], "%s: %s" % (name, img)
        obj = "%s/%s/%s" % (surl, c, iid)
        if store == "swift":
            want_url = "swift+config://ref1/%s/%s" % (c, iid)
            assert img.get("direct_url") == want_url, "%s: direct_url %s, not %s" % (name, img.get("direct_url"), want_url)
            st, h, _ = http("HEAD", obj, S)
            assert st == 200 and h["Content-Length"] == "1024", "%s: HEAD %s: %s" % (name, obj, st)
        else:
            assert img.get("direct_url", "").startswith("file://"), "%s: direct_url %s" % (name, img.get("direct_url"))
        st = http("DELETE", "%s/v2/images/%s" % (url, iid), G)[0]
        assert st == 204, "%s: delete image: %s" % (name, st)
        if store == "swift":
            assert http("HEAD", obj, S)[0] == 404, "%s: %s still there after the image was deleted" % (name, obj)
            if not existed:  # leave the account as it was
                http("DELETE", "%s/%s" % (surl, c), S)
            print("smoke %s OK: 1 KiB image -> %s/%s/<id> -> deleted" % (name, surl.rsplit("/", 1)[1], c))
        else:
            print("smoke %s OK: 1 KiB image -> %s -> deleted" % (name, img["direct_url"].rsplit("/", 1)[0]))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "account":
        print(swift_login()[1].rstrip("/").rsplit("/", 1)[1])
    elif cmd == "ready":
        ready(float(sys.argv[2]), sys.argv[3:])
    elif cmd == "smoke":
        smoke(sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
PYEOF
}

# ---------------------------------------------------------------- start/stop
choose_ports() {
    local p busy
    if [ -n "${GLANCE_AIO_PORT:-}" ]; then
        case "$GLANCE_AIO_PORT" in *[!0-9]*|'') die "GLANCE_AIO_PORT must be a number" ;; esac
        busy=$(ports_free "$GLANCE_AIO_PORT" $((GLANCE_AIO_PORT + 1)) $((GLANCE_AIO_PORT + 2))) ||
            die "port(s) in use on $HOST: $busy (GLANCE_AIO_PORT=$GLANCE_AIO_PORT needs it and +1, +2)"
        PORT=$GLANCE_AIO_PORT
        return 0
    fi
    for p in $(seq 29300 10 29390); do
        if ports_free "$p" $((p + 1)) $((p + 2)) >/dev/null; then PORT=$p; return 0; fi
    done
    die "no free port block among 29300, 29310, ... 29392 on $HOST; set GLANCE_AIO_PORT"
}

write_env() {
    {
        printf 'export GLANCE_AIO_DIR=%q\n' "$DIR"
        printf 'export IRONBOOT_TEST_GLANCE_URL=%q\n' "http://$HOST:$PORT"
        printf 'export IRONBOOT_TEST_GLANCE_CONTAINER=%q IRONBOOT_TEST_GLANCE_SEED=0\n' "$CONTAINER"
        printf 'export IRONBOOT_TEST_GLANCE3_URL=%q\n' "http://$HOST:$((PORT + 1))"
        printf 'export IRONBOOT_TEST_GLANCE3_CONTAINER=%q IRONBOOT_TEST_GLANCE3_SEED=%q\n' "$CONTAINER3" "$SEED3"
        printf 'export IRONBOOT_TEST_GLANCE_FILE_URL=%q\n' "http://$HOST:$((PORT + 2))"
        printf 'export IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT=%q\n' "$ACCOUNT"
        printf 'export IRONBOOT_TEST_GLANCE_LARGE_OBJECT_MB=%q IRONBOOT_TEST_GLANCE_CHUNK_MB=%q\n' "$LARGE_MB" "$CHUNK_MB"
    } >"$RUN/env"
}

do_start() {
    local n
    for n in "${INSTANCES[@]}"; do
        if running_master "$n" >/dev/null; then die "$n is already running (see $(pidfile "$n")); run '$0 stop $DIR' first"; fi
    done
    command -v curl >/dev/null || die "curl is needed"
    export KS_URL=${GLANCE_AIO_KEYSTONE_URL:-${IRONBOOT_TEST_KEYSTONE_URL:-}}
    export KS_REGION=${GLANCE_AIO_KEYSTONE_REGION:-${IRONBOOT_TEST_KEYSTONE_REGION:-RegionOne}}
    export KS_USER=${GLANCE_AIO_KEYSTONE_USER:-${KEYSTONE_AIO_GLANCE_USER:-}}
    export KS_PASSWORD=${GLANCE_AIO_KEYSTONE_PASSWORD:-${KEYSTONE_AIO_GLANCE_PASSWORD:-}}
    export KS_PROJECT=${GLANCE_AIO_KEYSTONE_PROJECT:-${KEYSTONE_AIO_GLANCE_PROJECT:-}}
    export SMOKE_USER=${GLANCE_AIO_SMOKE_USER:-${IRONBOOT_TEST_KEYSTONE_ADMIN_USER:-}}
    export SMOKE_PASSWORD=${GLANCE_AIO_SMOKE_PASSWORD:-${IRONBOOT_TEST_KEYSTONE_ADMIN_PASSWORD:-}}
    export SMOKE_PROJECT=${GLANCE_AIO_SMOKE_PROJECT:-${IRONBOOT_TEST_KEYSTONE_ADMIN_PROJECT:-}}
    export SW_AUTH_URL=${GLANCE_AIO_SWIFT_AUTH_URL:-${SWIFT_AIO_AUTH_URL:-}}
    export SW_USER=${GLANCE_AIO_SWIFT_USER:-${SWIFT_AIO_USER:-}}
    export SW_KEY=${GLANCE_AIO_SWIFT_KEY:-${SWIFT_AIO_KEY:-}}
    local v
    for v in KS_URL KS_USER KS_PASSWORD KS_PROJECT SMOKE_USER SMOKE_PASSWORD SMOKE_PROJECT \
             SW_AUTH_URL SW_USER SW_KEY; do
        [ -n "${!v}" ] || die "no value for $v: start scripts/keystone-aio.sh and scripts/swift-aio.sh and eval their \`env\` first (or set the GLANCE_AIO_* knobs, see --help)"
    done
    case "$SEED3" in ''|*[!0-9]*) die "GLANCE_AIO_SEED3 must be 1..32" ;; esac
    [ "$SEED3" -ge 1 ] && [ "$SEED3" -le 32 ] || die "GLANCE_AIO_SEED3 must be 1..32"
    # seed-0 objects live in $CONTAINER, seeded ones in ${CONTAINER3}_<chars of the id>
    case "$CONTAINER" in "$CONTAINER3"|"${CONTAINER3}_"*) die "GLANCE_AIO_CONTAINER=$CONTAINER can collide with ${CONTAINER3}_<id chars>" ;; esac
    local t0 t1 t2 t3 t4 PORT ACCOUNT; t0=$(now)
    choose_ports
    do_install
    t1=$(now)
    write_helper
    ACCOUNT=$("$PY" "$HELPER" account) || die "cannot log in to Swift at $SW_AUTH_URL as $SW_USER"
    mkdir -p "$RUN"
    # always fresh: the Swift of this run starts empty, old images would point nowhere
    for n in "${INSTANCES[@]}"; do rm -rf "${DIR:?}/$n"; done
    write_instance swift0 "$PORT" swift "$CONTAINER" 0
    write_instance swift3 $((PORT + 1)) swift "$CONTAINER3" "$SEED3"
    write_instance file $((PORT + 2)) file - 0
    # one db_sync (~2-4 s of imports and migrations), copied: the schema is all it writes
    "$VENV/bin/glance-manage" --config-file "$DIR/swift0/etc/glance-api.conf" db_sync \
        >"$DIR/swift0/log/db_sync.log" 2>&1 ||
        { tail -30 "$DIR/swift0/log/db_sync.log" >&2; die "glance-manage db_sync failed"; }
    cp "$DIR/swift0/data/glance.sqlite" "$DIR/swift3/data/glance.sqlite"
    cp "$DIR/swift0/data/glance.sqlite" "$DIR/file/data/glance.sqlite"
    t2=$(now)

    local specs=() port master st i
    for n in "${INSTANCES[@]}"; do
        i=$DIR/$n
        port=$(cat "$i/run/port")
        # options as for glance under uWSGI (chunked uploads need http-chunked-input).
        # "Connection: close": clients that reuse keep-alive connections otherwise get
        # ECONNRESET after an upload answered without reading its body (as devstack).
        OS_GLANCE_CONFIG_DIR=$i/etc setsid "$VENV/bin/uwsgi" --http-socket "$HOST:$port" \
            --add-header "Connection: close" --pythonpath "$i/etc" --module glance_aio_wsgi:application \
            --master --processes 1 --threads 8 --enable-threads --lazy-apps --need-app --die-on-term \
            --http-chunked-input --http-auto-chunked --http-raw-body --buffer-size 65535 \
            --logto "$i/log/wsgi.log" </dev/null >>"$i/log/wsgi.log" 2>&1 &
        master=$!
        st=$(proc_start "$master")
        echo "$master $st master" >"$(pidfile "$n")"
        specs+=("$n=http://$HOST:$port=$master=$st")
    done
    if ! "$PY" "$HELPER" ready "$START_TIMEOUT" "${specs[@]}" >"$RUN/ready.log" 2>&1; then
        cat "$RUN/ready.log" >&2
        for n in "${INSTANCES[@]}"; do
            log "---- $n: $DIR/$n/log"; tail -15 "$DIR/$n/log/wsgi.log" >&2 || true
            tail -15 "$DIR/$n/log/glance-api.log" >&2 2>/dev/null || true
        done
        do_stop || true
        die "Glance did not start"
    fi
    t3=$(now)
    local c
    for n in "${INSTANCES[@]}"; do
        read -r master st _ <"$(pidfile "$n")"
        for c in $(children_of "$master"); do
            echo "$c $(proc_start "$c") worker" >>"$(pidfile "$n")"
        done
    done
    if ! "$PY" "$HELPER" smoke "swift0=http://$HOST:$PORT=swift=$CONTAINER=0" \
            "swift3=http://$HOST:$((PORT + 1))=swift=$CONTAINER3=$SEED3" \
            "file=http://$HOST:$((PORT + 2))=file=-=0" >"$RUN/smoke.log" 2>&1; then
        cat "$RUN/smoke.log" >&2
        for n in "${INSTANCES[@]}"; do tail -15 "$DIR/$n/log/glance-api.log" >&2 2>/dev/null || true; done
        do_stop || true
        die "smoke test failed"
    fi
    t4=$(now)
    sed 's/^/[glance-aio] /' "$RUN/ready.log" "$RUN/smoke.log" >&2
    write_env
    awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" \
        'BEGIN{printf "[glance-aio] ready in %.1fs (install check %.1fs, config+db_sync %.1fs, 3 servers up %.1fs, smoke %.1fs)\n", e-a, b-a, c-b, d-c, e-d}' >&2
    for n in "${INSTANCES[@]}"; do
        log "$n PIDs: $(awk '{printf "%s(%s) ", $1, $3}' "$(pidfile "$n")")-> $(pidfile "$n")"
    done
    cat "$RUN/env"
}

do_stop() {
    local n f p st role master master_st i left any=0
    for n in "${INSTANCES[@]}"; do
        f=$(pidfile "$n")
        [ -f "$f" ] || continue
        any=1 master="" master_st=""
        while read -r p st role; do
            [ "$role" = master ] && { master=$p; master_st=$st; }
        done <"$f"
        if [ -n "$master" ] && alive_same "$master" "$master_st"; then
            # workers the master (re)spawned since start
            for p in $(children_of "$master"); do
                grep -q "^$p " "$f" || echo "$p $(proc_start "$p") worker" >>"$f"
            done
            kill -TERM "$master" 2>/dev/null || true
        fi
    done
    [ "$any" = 1 ] || { log "nothing to stop (no pid files in $DIR/*/run)"; return 0; }
    for i in $(seq 1 100); do
        left=0
        for n in "${INSTANCES[@]}"; do
            f=$(pidfile "$n"); [ -f "$f" ] || continue
            while read -r p st role; do
                alive_same "$p" "$st" || continue
                left=1
                if [ "$i" = 30 ]; then kill -TERM "$p" 2>/dev/null || true; fi
            done <"$f"
        done
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    for n in "${INSTANCES[@]}"; do
        f=$(pidfile "$n"); [ -f "$f" ] || continue
        while read -r p st role; do
            if alive_same "$p" "$st"; then log "$n PID $p ($role) ignored SIGTERM for 10 s; SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
        done <"$f"
        log "stopped $n: $(awk '{printf "%s ", $1}' "$f")"
        rm -f "$f"
    done
}

do_status() {
    local n m port code rc=0
    for n in "${INSTANCES[@]}"; do
        if ! m=$(running_master "$n"); then echo "$n: not running"; rc=1; continue; fi
        port=$(cat "$DIR/$n/run/port")
        code=$(http_code "http://$HOST:$port/healthcheck")
        echo "$n: master PID $m, http://$HOST:$port/healthcheck -> $code"
        [ "$code" = 200 ] || rc=1
    done
    return $rc
}

case "$CMD" in
    install) do_install ;;
    start)   do_start ;;
    stop)    do_stop ;;
    status)  do_status ;;
    env)     for n in "${INSTANCES[@]}"; do
                 running_master "$n" >/dev/null || log "WARNING: $n in $DIR is not running"
             done
             [ -f "$RUN/env" ] || die "no $RUN/env: run '$0 start $DIR' first"
             cat "$RUN/env" ;;
esac

#!/usr/bin/env bash
# keystone-aio.sh -- a REAL OpenStack Keystone (PyPI `keystone` 30.0.0, identity v3)
# on 127.0.0.1 for ironboot's integration tests: SQLite, fernet tokens, uWSGI.
#
# Usage:
#   scripts/keystone-aio.sh install DIR   venv with keystone + pyuwsgi (pinned; reused
#                                         when it already has them)
#   scripts/keystone-aio.sh start   DIR   (install if needed) FRESH database and keys,
#                                         bootstrap, uWSGI, then projects, users and
#                                         roles through the REST API; print `env`
#   scripts/keystone-aio.sh catalog DIR TYPE NAME URL
#                                         register service TYPE/NAME with public and
#                                         internal endpoints URL in the region (replaces
#                                         that service's endpoints in the region)
#   scripts/keystone-aio.sh stop    DIR   SIGTERM (SIGKILL after 10 s) to exactly the PIDs
#                                         recorded by `start` (PID + start time checked)
#   scripts/keystone-aio.sh status  DIR   recorded PIDs and GET /v3 (rc 1 if down)
#   scripts/keystone-aio.sh env     DIR   print the `export ...` lines (see below)
#   scripts/keystone-aio.sh token   DIR [admin|ironboot|demo|glance]
#                                         print a project-scoped token (debugging)
#
# Layout: DIR/venv (unless KEYSTONE_AIO_VENV), DIR/etc (keystone.conf, fernet-keys/,
# credential-keys/), DIR/data/keystone.sqlite, DIR/log/{keystone,wsgi,manage,provision}.log,
# DIR/run/{pids,env}, DIR/bin/ksa.py (stdlib-only REST helper).  A non-empty DIR that
# this script did not create is refused.
#
# What `start` creates (everything in domain Default, region $KEYSTONE_AIO_REGION):
#   admin    / admin-secret     project admin    role admin (bootstrap)
#   ironboot / ironboot-secret  project service  roles $KEYSTONE_AIO_SERVICE_ROLES (member):
#                               reads public images of every project and its own
#                               project's private ones, not other projects' private ones
#   demo     / demo-secret      project demo     role member (an ordinary image owner)
#   glance   / glance-secret    project service  role service (keystonemiddleware's user)
#   catalog: identity (public/internal/admin -> http://127.0.0.1:PORT/v3); other
#   services are added with `catalog`.
#
# `env` prints: KEYSTONE_AIO_DIR KEYSTONE_AIO_GLANCE_USER KEYSTONE_AIO_GLANCE_PASSWORD
#   KEYSTONE_AIO_GLANCE_PROJECT IRONBOOT_TEST_KEYSTONE_URL (bare, no /v3)
#   IRONBOOT_TEST_KEYSTONE_REGION IRONBOOT_TEST_KEYSTONE_DOMAIN
#   IRONBOOT_TEST_KEYSTONE_TOKEN_EXPIRATION IRONBOOT_TEST_KEYSTONE_{USER,PASSWORD,PROJECT,ROLES}
#   IRONBOOT_TEST_KEYSTONE_DEMO_{USER,PASSWORD,PROJECT}
#   IRONBOOT_TEST_KEYSTONE_ADMIN_{USER,PASSWORD,PROJECT}
#
# Environment knobs (read by install/start):
#   KEYSTONE_AIO_PORT              when set and taken, `start` fails; when unset, the
#                                  first free of 25357, 25367, ... 25427
#   KEYSTONE_AIO_VENV (DIR/venv)   may be shared with scripts/glance-aio.sh: the pins
#                                  of both scripts agree on every common package
#   KEYSTONE_AIO_PYTHON (python3)  interpreter that creates the venv (>= 3.10)
#   KEYSTONE_AIO_TOKEN_EXPIRATION (3600)  [token] expiration in seconds
#   KEYSTONE_AIO_SERVICE_ROLES (member)   roles of `ironboot` in project `service`
#   KEYSTONE_AIO_REGION (RegionOne)
#   KEYSTONE_AIO_START_TIMEOUT (60)       seconds to wait for the API
#
# The fixed passwords are for a loopback test service only.  bcrypt uses 4 rounds
# (Keystone's default is 12) so that each password authentication is ~0.25 s cheaper.
set -euo pipefail
set +m   # no job control: `setsid cmd &` must exec cmd in the background child

log()   { printf '[keystone-aio] %s\n' "$*" >&2; }
die()   { log "ERROR: $*"; exit 1; }
now()   { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

CMD=${1:-}
[ -n "$CMD" ] || { usage >&2; exit 2; }
case "$CMD" in -h|--help|help) usage; exit 0 ;; esac
DIR=${2:-}
[ -n "$DIR" ] || die "usage: $0 $CMD DIR"
MARKER=.keystone-aio-owned

case "$CMD" in
    install|start)
        if [ ! -e "$DIR" ]; then
            mkdir -p "$DIR"
            touch "$DIR/$MARKER"
        elif [ ! -e "$DIR/$MARKER" ]; then
            [ -d "$DIR" ] || die "$DIR exists and is not a directory"
            [ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty and was not created by keystone-aio; refusing to use it"
            touch "$DIR/$MARKER"
        fi ;;
    stop|status|env|token|catalog)
        if [ ! -d "$DIR" ]; then
            log "$DIR does not exist (not started)"
            [ "$CMD" = stop ] && exit 0
            exit 1
        fi ;;
    *) die "unknown command '$CMD' (install|start|catalog|stop|status|env|token)" ;;
esac
DIR=$(cd "$DIR" && pwd -P)

VERSION=30.0.0
ETC=$DIR/etc
DATA=$DIR/data
LOGD=$DIR/log
RUN=$DIR/run
VENV=${KEYSTONE_AIO_VENV:-$DIR/venv}
# the venv `start` used wins for every later command
if [ "$CMD" != install ] && [ "$CMD" != start ] && [ -f "$RUN/venv" ]; then VENV=$(cat "$RUN/venv"); fi
case "$VENV" in /*) ;; *) VENV=$PWD/$VENV ;; esac
PY=$VENV/bin/python
PIDFILE=$RUN/pids        # lines: "PID STARTTIME ROLE"
HELPER=$DIR/bin/ksa.py
HOST=127.0.0.1
TOKEN_EXPIRATION=${KEYSTONE_AIO_TOKEN_EXPIRATION:-3600}
SERVICE_ROLES=${KEYSTONE_AIO_SERVICE_ROLES:-member}
REGION=${KEYSTONE_AIO_REGION:-RegionOne}
START_TIMEOUT=${KEYSTONE_AIO_START_TIMEOUT:-60}

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
running_master() {
    [ -f "$PIDFILE" ] || return 1
    local p st role
    while read -r p st role; do
        [ "$role" = master ] && alive_same "$p" "$st" && { echo "$p"; return 0; }
    done <"$PIDFILE"
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
keystone==30.0.0
pyuwsgi==2.0.30.post1
alembic==1.20.1
amqp==5.4.2
aniso8601==10.0.1
attrs==26.1.0
bcrypt==5.0.0
blinker==1.9.0
cachetools==8.0.2
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
click==8.5.1
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
defusedxml==0.7.1
dnspython==2.9.2
dogpile.cache==1.5.0
elementpath==4.8.0
eventlet==0.41.3
fasteners==0.20
Flask==3.1.3
Flask-RESTful==0.3.10
futurist==3.5.0
greenlet==3.5.6
idna==3.20
iso8601==2.1.0
itsdangerous==2.2.0
Jinja2==3.1.6
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
kombu==5.7.0
Mako==1.4.3
MarkupSafe==3.0.4
msgpack==1.2.4
netaddr==1.3.0
oauthlib==4.0.1
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.messaging==18.3.1
oslo.metrics==0.17.0
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.serialization==5.11.0
oslo.service==4.8.0
oslo.upgradecheck==2.8.0
oslo.utils==10.2.0
osprofiler==4.4.0
packaging==26.4
Paste==3.10.1
PasteDeploy==3.1.0
pbr==7.1.3
prettytable==3.18.0
prometheus_client==0.26.0
psutil==7.2.2
pycadf==4.1.0
pycparser==3.12
PyJWT==2.15.1
pyOpenSSL==26.4.0
pyparsing==3.3.3
pysaml2==7.5.5
python-dateutil==4.0.0
python-keystoneclient==6.0.0
pytz==2026.6
PyYAML==6.0.4
referencing==0.37.0
repoze-lru==0.8
requests==2.34.2
rfc3986==2.0.0
Routes==2.5.1
rpds-py==2026.9.1
six==1.17.0
SQLAlchemy==2.1.9
statsd==4.0.1
stevedore==5.10.0
testresources==2.1.2
testscenarios==0.7.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
vine==5.1.0
wcwidth==0.9.4
WebOb==1.8.11
Werkzeug==3.1.9
wrapt==2.5.2
xmlschema==2.5.1
yappi==1.7.6
EOF
}

venv_ok() {
    [ -x "$PY" ] && [ -x "$VENV/bin/keystone-manage" ] && [ -x "$VENV/bin/uwsgi" ] || return 1
    "$PY" - "$VERSION" <<'EOF' 2>/dev/null
import importlib.util, sys
from importlib.metadata import version
# the WSGI entry point (keystone 30 has no keystone-wsgi-public); importing it would
# already read the configuration
ok = importlib.util.find_spec("keystone.wsgi.api") is not None
sys.exit(0 if ok and version("keystone") == sys.argv[1] else 1)
EOF
}

do_install() {
    local t0 python; t0=$(now)
    if venv_ok; then
        log "venv $VENV already has keystone $VERSION"
        return 0
    fi
    python=${KEYSTONE_AIO_PYTHON:-python3}
    "$python" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null ||
        die "$python cannot create a venv or is older than 3.10 (install python3-venv, or set KEYSTONE_AIO_PYTHON)"
    if [ ! -x "$PY" ]; then
        log "creating venv $VENV with $python ($("$python" -V 2>&1))"
        "$python" -m venv "$VENV" || die "python -m venv $VENV failed"
    fi
    mkdir -p "$ETC"
    write_constraints "$ETC/constraints.txt"
    log "pip install keystone==$VERSION pyuwsgi (constraints: $ETC/constraints.txt) into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -c "$ETC/constraints.txt" \
        "keystone==$VERSION" pyuwsgi || die "pip install into $VENV failed"
    venv_ok || die "$VENV still does not provide keystone $VERSION"
    log "install done in $(since "$t0")s"
}

# ---------------------------------------------------------------- config
write_config() {  # port
    mkdir -p "$ETC" "$DATA" "$LOGD" "$RUN" "$DIR/bin" "$DIR/lock"
    cat >"$ETC/keystone.conf" <<EOF
# written by scripts/keystone-aio.sh (keystone $VERSION), http://$HOST:$1
[DEFAULT]
log_file = $LOGD/keystone.log
use_stderr = false

[database]
connection = sqlite:///$DATA/keystone.sqlite

[token]
provider = fernet
expiration = $TOKEN_EXPIRATION

[fernet_tokens]
key_repository = $ETC/fernet-keys

[fernet_receipts]
key_repository = $ETC/fernet-keys

[credential]
key_repository = $ETC/credential-keys

[identity]
password_hash_algorithm = bcrypt
password_hash_rounds = 4

[oslo_concurrency]
lock_path = $DIR/lock
EOF
}

write_env() {  # port
    local url="http://$HOST:$1"
    {
        printf 'export KEYSTONE_AIO_DIR=%q\n' "$DIR"
        printf 'export KEYSTONE_AIO_GLANCE_USER=glance KEYSTONE_AIO_GLANCE_PASSWORD=glance-secret KEYSTONE_AIO_GLANCE_PROJECT=service\n'
        printf 'export IRONBOOT_TEST_KEYSTONE_URL=%q\n' "$url"
        printf 'export IRONBOOT_TEST_KEYSTONE_REGION=%q\n' "$REGION"
        printf 'export IRONBOOT_TEST_KEYSTONE_DOMAIN=Default\n'
        printf 'export IRONBOOT_TEST_KEYSTONE_TOKEN_EXPIRATION=%q\n' "$TOKEN_EXPIRATION"
        printf 'export IRONBOOT_TEST_KEYSTONE_USER=ironboot IRONBOOT_TEST_KEYSTONE_PASSWORD=ironboot-secret IRONBOOT_TEST_KEYSTONE_PROJECT=service\n'
        printf 'export IRONBOOT_TEST_KEYSTONE_ROLES=%q\n' "$SERVICE_ROLES"
        printf 'export IRONBOOT_TEST_KEYSTONE_DEMO_USER=demo IRONBOOT_TEST_KEYSTONE_DEMO_PASSWORD=demo-secret IRONBOOT_TEST_KEYSTONE_DEMO_PROJECT=demo\n'
        printf 'export IRONBOOT_TEST_KEYSTONE_ADMIN_USER=admin IRONBOOT_TEST_KEYSTONE_ADMIN_PASSWORD=admin-secret IRONBOOT_TEST_KEYSTONE_ADMIN_PROJECT=admin\n'
    } >"$RUN/env"
}

# The REST helper: Python standard library only, so it shows the raw HTTP a client sends.
write_helper() {
    cat >"$HELPER" <<'PYEOF'
"""keystone-aio helper: provision | token WHO | catalog TYPE NAME URL.  Config: DIR/run/env."""
import json
import os
import sys
import urllib.error
import urllib.request

E = os.environ
V3 = E["IRONBOOT_TEST_KEYSTONE_URL"] + "/v3"
REGION = E["IRONBOOT_TEST_KEYSTONE_REGION"]
WHO = {
    "admin": ("IRONBOOT_TEST_KEYSTONE_ADMIN_USER", "IRONBOOT_TEST_KEYSTONE_ADMIN_PASSWORD", "IRONBOOT_TEST_KEYSTONE_ADMIN_PROJECT"),
    "ironboot": ("IRONBOOT_TEST_KEYSTONE_USER", "IRONBOOT_TEST_KEYSTONE_PASSWORD", "IRONBOOT_TEST_KEYSTONE_PROJECT"),
    "demo": ("IRONBOOT_TEST_KEYSTONE_DEMO_USER", "IRONBOOT_TEST_KEYSTONE_DEMO_PASSWORD", "IRONBOOT_TEST_KEYSTONE_DEMO_PROJECT"),
    "glance": ("KEYSTONE_AIO_GLANCE_USER", "KEYSTONE_AIO_GLANCE_PASSWORD", "KEYSTONE_AIO_GLANCE_PROJECT"),
}


def http(method, url, headers=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    hd = {"Accept": "application/json"}
    if data is not None:
        hd["Content-Type"] = "application/json"
    hd.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hd)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            b = r.read()
            return r.status, r.headers, json.loads(b) if b else None
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()[:300]


def token(who):
    user, password, project = (E[v] for v in WHO[who])
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    st, h, b = http("POST", V3 + "/auth/tokens", body=body)
    if st != 201:
        sys.exit("password auth as %s@%s: HTTP %s %s" % (user, project, st, b))
    return h["X-Subject-Token"]


def admin_api():
    H = {"X-Auth-Token": token("admin")}

    def get(coll, **q):
        qs = "&".join("%s=%s" % kv for kv in q.items())
        st, _, b = http("GET", "%s/%s?%s" % (V3, coll, qs), H)
        assert st == 200, (coll, st, b)
        return b[coll.split("/")[-1]]

    def create(coll, key, obj):
        st, _, b = http("POST", "%s/%s" % (V3, coll), H, {key: obj})
        assert st == 201, (coll, st, b)
        return b[key]

    def call(method, path):
        st, _, b = http(method, V3 + path, H)
        assert st in (200, 204), (method, path, st, b)

    return get, create, call


def provision():
    get, create, call = admin_api()
    roles = {r["name"]: r["id"] for r in get("roles")}
    projects = {}
    for name in ("service", E["IRONBOOT_TEST_KEYSTONE_DEMO_PROJECT"]):
        found = get("projects", name=name, domain_id="default")
        projects[name] = found[0] if found else create(
            "projects", "project", {"name": name, "domain_id": "default"})
    made = []
    users = (
        ("ironboot", E["IRONBOOT_TEST_KEYSTONE_ROLES"].split()),
        ("glance", ["service"]),
        ("demo", ["member"]),
    )
    for who, want in users:
        name, password, project = (E[v] for v in WHO[who])
        found = get("users", name=name, domain_id="default")
        user = found[0] if found else create("users", "user", {
            "name": name, "password": password, "domain_id": "default",
            "default_project_id": projects[project]["id"]})
        for role in want:
            if role not in roles:
                roles[role] = create("roles", "role", {"name": role})["id"]
            call("PUT", "/projects/%s/users/%s/roles/%s" % (projects[project]["id"], user["id"], roles[role]))
        made.append("%s@%s[%s]" % (name, project, ",".join(want)))
    print("provisioned: " + " ".join(made))


def catalog(stype, name, url):
    get, create, call = admin_api()
    found = get("services", type=stype)
    svc = found[0] if found else create("services", "service", {"type": stype, "name": name})
    for ep in get("endpoints", service_id=svc["id"]):
        if ep["region_id"] == REGION:
            call("DELETE", "/endpoints/" + ep["id"])
    for iface in ("public", "internal"):
        create("endpoints", "endpoint", {"service_id": svc["id"], "interface": iface,
                                         "region_id": REGION, "url": url})
    print("catalog: %s (%s) public+internal -> %s in %s" % (stype, name, url, REGION))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "provision":
        provision()
    elif cmd == "token":
        print(token(sys.argv[2] if len(sys.argv) > 2 else "ironboot"))
    elif cmd == "catalog" and len(sys.argv) == 5:
        catalog(*sys.argv[2:])
    else:
        sys.exit("usage: ksa.py provision | token [admin|ironboot|demo|glance] | catalog TYPE NAME URL")


if __name__ == "__main__":
    main()
PYEOF
}

helper() {  # args... : run the helper with DIR/run/env
    [ -f "$RUN/env" ] || die "not started ($RUN/env missing)"
    ( set -a; . "$RUN/env"; set +a; "$PY" "$HELPER" "$@" )
}

# ---------------------------------------------------------------- start/stop
choose_port() {
    local p busy
    if [ -n "${KEYSTONE_AIO_PORT:-}" ]; then
        case "$KEYSTONE_AIO_PORT" in *[!0-9]*|'') die "KEYSTONE_AIO_PORT must be a number" ;; esac
        busy=$(ports_free "$KEYSTONE_AIO_PORT") || die "port $busy is in use on $HOST (KEYSTONE_AIO_PORT)"
        PORT=$KEYSTONE_AIO_PORT
        return 0
    fi
    for p in $(seq 25357 10 25427); do
        if ports_free "$p" >/dev/null; then PORT=$p; return 0; fi
    done
    die "no free port among 25357, 25367, ... 25427 on $HOST; set KEYSTONE_AIO_PORT"
}

do_start() {
    if running_master >/dev/null; then die "already running (see $PIDFILE); run '$0 stop $DIR' first"; fi
    command -v curl >/dev/null || die "curl is needed"
    case "$TOKEN_EXPIRATION" in ''|*[!0-9]*) die "KEYSTONE_AIO_TOKEN_EXPIRATION must be seconds" ;; esac
    local t0 t1 t2 t3 PORT; t0=$(now)
    choose_port
    do_install
    t1=$(now)
    # always fresh: new DB, new keys (tokens of an earlier run are invalid)
    rm -rf "$DATA" "$ETC/fernet-keys" "$ETC/credential-keys" "$LOGD" "$RUN"
    write_config "$PORT"
    write_env "$PORT"
    echo "$VENV" >"$RUN/venv"
    write_helper
    local km=("$VENV/bin/keystone-manage" --config-file "$ETC/keystone.conf")
    local me grp p1 p2 p3 url="http://$HOST:$PORT"
    me=$(id -un); grp=$(id -gn)
    # independent of each other: side by side (each is ~2 s of imports)
    "${km[@]}" db_sync >>"$LOGD/manage.log" 2>&1 & p1=$!
    "${km[@]}" fernet_setup --keystone-user "$me" --keystone-group "$grp" >>"$LOGD/manage.log" 2>&1 & p2=$!
    "${km[@]}" credential_setup --keystone-user "$me" --keystone-group "$grp" >>"$LOGD/manage.log" 2>&1 & p3=$!
    local ok=1
    wait "$p1" || ok=0
    wait "$p2" || ok=0
    wait "$p3" || ok=0
    [ "$ok" = 1 ] || { tail -30 "$LOGD/manage.log" >&2; die "keystone-manage db_sync/fernet_setup/credential_setup failed"; }
    "${km[@]}" bootstrap --bootstrap-password admin-secret \
        --bootstrap-username admin --bootstrap-project-name admin --bootstrap-role-name admin \
        --bootstrap-service-name keystone --bootstrap-region-id "$REGION" \
        --bootstrap-admin-url "$url/v3" --bootstrap-public-url "$url/v3" --bootstrap-internal-url "$url/v3" \
        >>"$LOGD/manage.log" 2>&1 ||
        { tail -30 "$LOGD/manage.log" >&2; die "keystone-manage bootstrap failed"; }
    t2=$(now)

    # "Connection: close": no keep-alive surprises for clients that pool connections
    OS_KEYSTONE_CONFIG_DIR=$ETC setsid "$VENV/bin/uwsgi" --http-socket "$HOST:$PORT" \
        --add-header "Connection: close" --module keystone.wsgi.api:application \
        --master --processes 1 --threads 4 \
        --enable-threads --lazy-apps --need-app --die-on-term --buffer-size 65535 \
        --logto "$LOGD/wsgi.log" </dev/null >>"$LOGD/wsgi.log" 2>&1 &
    local master=$! st
    st=$(proc_start "$master")
    echo "$master $st master" >"$PIDFILE"

    local deadline code=""
    deadline=$(( $(date +%s) + START_TIMEOUT ))
    while :; do
        code=$(http_code "$url/v3")
        [ "$code" = 200 ] && break
        if ! alive_same "$master" "$st"; then
            tail -40 "$LOGD/wsgi.log" >&2; tail -40 "$LOGD/keystone.log" >&2 2>/dev/null || true
            rm -f "$PIDFILE"; die "uWSGI exited during start-up"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            tail -40 "$LOGD/wsgi.log" >&2; tail -40 "$LOGD/keystone.log" >&2 2>/dev/null || true
            do_stop || true
            die "no HTTP 200 from $url/v3 within ${START_TIMEOUT}s (last code: ${code:-none})"
        fi
        sleep 0.1
    done
    local c
    for c in $(children_of "$master"); do
        echo "$c $(proc_start "$c") worker" >>"$PIDFILE"
    done
    if ! helper provision >"$LOGD/provision.log" 2>&1; then
        cat "$LOGD/provision.log" >&2; do_stop || true; die "provisioning failed"
    fi
    t3=$(now)
    log "$(tail -1 "$LOGD/provision.log")"
    awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v u="$url" -v x="$TOKEN_EXPIRATION" \
        'BEGIN{printf "[keystone-aio] keystone answering on %s/v3, tokens live %ss; ready in %.1fs (install check %.1fs, db+keys+bootstrap %.1fs, server+provision %.1fs)\n", u, x, d-a, b-a, c-b, d-c}' >&2
    log "PIDs: $(awk '{printf "%s(%s) ", $1, $3}' "$PIDFILE")-> $PIDFILE; logs in $LOGD"
    cat "$RUN/env"
}

do_stop() {
    [ -f "$PIDFILE" ] || { log "nothing to stop (no $PIDFILE)"; return 0; }
    local p st role master="" master_st="" i left
    while read -r p st role; do
        [ "$role" = master ] && { master=$p; master_st=$st; }
    done <"$PIDFILE"
    if [ -n "$master" ] && alive_same "$master" "$master_st"; then
        # workers the master (re)spawned since start
        for p in $(children_of "$master"); do
            grep -q "^$p " "$PIDFILE" || echo "$p $(proc_start "$p") worker" >>"$PIDFILE"
        done
        kill -TERM "$master" 2>/dev/null || true
    fi
    for i in $(seq 1 100); do
        left=0
        while read -r p st role; do alive_same "$p" "$st" && left=1; done <"$PIDFILE"
        [ "$left" = 0 ] && break
        if [ "$i" = 30 ]; then
            while read -r p st role; do
                if alive_same "$p" "$st"; then kill -TERM "$p" 2>/dev/null || true; fi
            done <"$PIDFILE"
        fi
        sleep 0.1
    done
    while read -r p st role; do
        if alive_same "$p" "$st"; then log "PID $p ($role) ignored SIGTERM for 10 s; SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
    done <"$PIDFILE"
    log "stopped: $(awk '{printf "%s ", $1}' "$PIDFILE")"
    rm -f "$PIDFILE"
}

do_status() {
    local m url code
    m=$(running_master) || { echo "not running"; return 1; }
    url=$(. "$RUN/env"; echo "$IRONBOOT_TEST_KEYSTONE_URL")
    code=$(http_code "$url/v3")
    echo "running: master PID $m, $url/v3 -> $code"
    [ "$code" = 200 ]
}

case "$CMD" in
    install) do_install ;;
    start)   do_start ;;
    stop)    do_stop ;;
    status)  do_status ;;
    env)     running_master >/dev/null || log "WARNING: the instance in $DIR is not running"
             [ -f "$RUN/env" ] || die "no $RUN/env: run '$0 start $DIR' first"
             cat "$RUN/env" ;;
    token)   running_master >/dev/null || die "not running"; helper token "${3:-ironboot}" ;;
    catalog) running_master >/dev/null || die "not running"
             [ $# = 5 ] || die "usage: $0 catalog DIR TYPE NAME URL"
             helper catalog "$3" "$4" "$5" ;;
esac

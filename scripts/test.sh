#!/usr/bin/env bash
# scripts/test.sh -- THE test command of ironboot (CI runs it through .ci/run).
#
#   scripts/test.sh
#
# Phases, in order; each one's output also goes to $IRONBOOT_TEST_DIR/logs/<phase>.log:
#   apt            apt-get install the missing ones of: memcached postgresql
#                  qemu-system-x86 ipxe-qemu ovmf cpio gzip ca-certificates curl
#                  python3-venv (apt-get update only when something is missing)
#   swift-install  venv with swift 2.38.* + python-swiftclient 4.11.* (skipped when
#                  it already has them)                      scripts/swift-aio.sh install
#   swift-start    real Swift all-in-one on 127.0.0.1            scripts/swift-aio.sh start
#   pg-start       throwaway PostgreSQL on 127.0.0.1          scripts/postgres-aio.sh start
#   glance-install one venv with keystone 30.0.0 and glance 32.0.0 + glance_store 4.10.0,
#                  pinned (reused when it has them)    scripts/keystone-aio.sh install,
#                                                      scripts/glance-aio.sh install
#   glance-start   real Keystone (v3, SQLite, tokens live KEYSTONE_AIO_TOKEN_EXPIRATION
#                  seconds) and three real Glances with auth_strategy = keystone:
#                  two store in the Swift of swift-start (seed 0 -> container glance,
#                  seed 3 -> glance3_<3 chars of the id>; from 1 MB = 1,024,000 bytes
#                  on, a manifest plus 1 MB segments), one in a local directory; the
#                  seed-0 one is the catalog's image endpoint
#                          scripts/keystone-aio.sh start, scripts/glance-aio.sh start,
#                          scripts/keystone-aio.sh catalog; and a second Swift proxy
#                  on the same storage whose auth is Keystone, the catalog's
#                  object-store endpoint       scripts/swift-aio.sh keystone-proxy
#   fmt            cargo fmt --all -- --check
#   clippy         cargo clippy --all-targets -- -D warnings
#   test           cargo test --all-targets        (needs swift-start and pg-start; runs
#                  when glance-start failed, whose tests then fail)
#   e2e            scripts/e2e-ipxe.sh           (needs swift-start and pg-start; its
#                  *-glance and *-cache scenarios need glance-start and fail without it);
#                  missing or not executable: NOT RUN, a failure
# Every service it started is stopped again, by PID, on exit, failure, Ctrl-C or
# SIGTERM.  Exit status: 0 only when every phase passed or was skipped on request
# (IRONBOOT_TEST_SKIP_APT=1, IRONBOOT_TEST_SKIP_E2E=1); the summary names each skip.
#
# Exported to cargo test and e2e (integration tests in tests/it read them):
#   SWIFT_AIO_DIR SWIFT_AIO_VENV SWIFT_AIO_PROXY_URL SWIFT_AIO_AUTH_URL
#   SWIFT_AIO_STORAGE_URL SWIFT_AIO_USER SWIFT_AIO_KEY SWIFT_AIO_PROXY_LOG
#   SWIFT_AIO_INFO_ADMIN_KEY
#   ST_AUTH ST_USER ST_KEY PGAIO_DIR IRONBOOT_TEST_PG_URL IRONBOOT_TEST_PYTHON
#   IRONBOOT_TEST_DIR
#   KEYSTONE_AIO_DIR GLANCE_AIO_DIR (logs in */log)
#   IRONBOOT_TEST_KEYSTONE_URL (no /v3) _REGION _DOMAIN _TOKEN_EXPIRATION
#   IRONBOOT_TEST_KEYSTONE_USER _PASSWORD _PROJECT _ROLES    (ironboot@service, member)
#   IRONBOOT_TEST_KEYSTONE_DEMO_USER _DEMO_PASSWORD _DEMO_PROJECT      (demo@demo, member)
#   IRONBOOT_TEST_KEYSTONE_ADMIN_USER _ADMIN_PASSWORD _ADMIN_PROJECT  (admin@admin, admin)
#   IRONBOOT_TEST_GLANCE_URL IRONBOOT_TEST_GLANCE_CONTAINER IRONBOOT_TEST_GLANCE_SEED (0)
#   IRONBOOT_TEST_GLANCE3_URL IRONBOOT_TEST_GLANCE3_CONTAINER IRONBOOT_TEST_GLANCE3_SEED (3)
#   IRONBOOT_TEST_GLANCE_FILE_URL IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT
#   SWIFT_AIO_KEYSTONE_PROXY_URL (Swift with Keystone auth; accounts AUTH_<project id>)
#   IRONBOOT_TEST_GLANCE_LARGE_OBJECT_MB IRONBOOT_TEST_GLANCE_CHUNK_MB
#   (and KEYSTONE_AIO_GLANCE_USER/_PASSWORD/_PROJECT: Glance's own service user)
#
# Knobs:
#   IRONBOOT_TEST_DIR (/tmp/ironboot-test)  venv/, swift/, pg/, openstack-venv/,
#                              keystone/, glance/, logs/ live here
#   IRONBOOT_TEST_SKIP_APT=1   never call apt-get (also passed on to the service scripts)
#   IRONBOOT_TEST_SKIP_E2E=1   do not run scripts/e2e-ipxe.sh (the only way to skip it)
#   IRONBOOT_TEST_TIMEOUT (1380)  overall budget in seconds; a phase still running
#                              then is killed and counts as failed
#   SWIFT_AIO_VENV             use this venv instead of $IRONBOOT_TEST_DIR/venv
#   SWIFT_AIO_PROXY_PORT, PGAIO_PORT  fixed ports (default: first free from 28080 / 25432)
#   KEYSTONE_AIO_PORT, GLANCE_AIO_PORT fixed ports (default: first free from 25357 /
#                              29300; the Glances use GLANCE_AIO_PORT..+2)
#   KEYSTONE_AIO_TOKEN_EXPIRATION (60)  Keystone token lifetime in seconds
#   KEYSTONE_AIO_VENV, GLANCE_AIO_VENV  use these venvs instead of
#                              $IRONBOOT_TEST_DIR/openstack-venv (one venv for both)
set -uo pipefail

case "${1:-}" in
    '') ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "usage: scripts/test.sh (no arguments; see --help)" >&2; exit 2 ;;
esac

T_START=$(date +%s.%N)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT" || exit 1

TD=${IRONBOOT_TEST_DIR:-/tmp/ironboot-test}
mkdir -p "$TD" || { echo "[test] cannot create $TD" >&2; exit 1; }
TD=$(cd "$TD" && pwd -P)
export IRONBOOT_TEST_DIR=$TD
VENV=${SWIFT_AIO_VENV:-$TD/venv}
SWIFT_DIR=$TD/swift
PG_DIR=$TD/pg
KEYSTONE_DIR=$TD/keystone
GLANCE_DIR=$TD/glance
export KEYSTONE_AIO_VENV=${KEYSTONE_AIO_VENV:-$TD/openstack-venv}
export GLANCE_AIO_VENV=${GLANCE_AIO_VENV:-$TD/openstack-venv}
export KEYSTONE_AIO_TOKEN_EXPIRATION=${KEYSTONE_AIO_TOKEN_EXPIRATION:-60}
LOGS=$TD/logs
# One run per IRONBOOT_TEST_DIR at a time (a second one would wipe the first one's
# services).  Children never inherit fd 9 (run_cmd closes it), so services cannot
# keep the lock alive.
exec 9>"$TD/.lock"
if ! flock -n 9; then
    echo "[test] another scripts/test.sh is running with IRONBOOT_TEST_DIR=$TD; use another IRONBOOT_TEST_DIR" >&2
    exit 1
fi
mkdir -p "$LOGS" && rm -f "$LOGS"/*.log   # no stale results from an earlier run
DEADLINE=$(( ${T_START%.*} + ${IRONBOOT_TEST_TIMEOUT:-1380} ))
APT_PACKAGES=(memcached postgresql qemu-system-x86 ipxe-qemu ovmf cpio gzip ca-certificates curl python3-venv)
if [ "${IRONBOOT_TEST_SKIP_APT:-0}" = 1 ]; then
    export SWIFT_AIO_SKIP_APT=1 PGAIO_SKIP_APT=1
fi
if [ -t 1 ] && [ -z "${CARGO_TERM_COLOR:-}" ]; then
    export CARGO_TERM_COLOR=always   # cargo's output goes through tee
fi

say() { printf '[test] %s\n' "$*"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }

# ---------------------------------------------------------------- phases
PH_NAMES=() PH_STATUS=() PH_SECS=()
FAILED=()
record() {  # name status seconds
    PH_NAMES+=("$1"); PH_STATUS+=("$2"); PH_SECS+=("$3")
    case "$2" in ok|skipped*) ;; *) FAILED+=("$1") ;; esac
}

STEP_PID="" CURRENT_PHASE="" CURRENT_T0="" TEST_DONE=0
run_cmd() {  # logfile cmd... : run in its own process group (timeout makes one),
             # output to the terminal and the log, killed at the overall deadline
    local logf=$1 rem rc; shift
    rem=$(( DEADLINE - $(date +%s) ))
    if [ "$rem" -le 0 ]; then
        say "time budget exhausted (IRONBOOT_TEST_TIMEOUT=${IRONBOOT_TEST_TIMEOUT:-1380}s)" | tee -a "$logf"
        return 124
    fi
    # Started in the background and waited for, so that INT/TERM traps run at once.
    # shellcheck disable=SC2016  # $1/$@ belong to the inner bash
    timeout -k 15 "$rem" bash -c 'set -o pipefail; l=$1; shift; "$@" 2>&1 | tee -a "$l"' \
        run_cmd "$logf" "$@" 9>&- &
    STEP_PID=$!
    wait "$STEP_PID"; rc=$?
    STEP_PID=""
    if { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && [ "$(date +%s)" -ge "$DEADLINE" ]; then
        say "timed out: $* (IRONBOOT_TEST_TIMEOUT=${IRONBOOT_TEST_TIMEOUT:-1380}s)" | tee -a "$logf"
    fi
    return "$rc"
}

phase() {  # name cmd... : run cmd (a command or a function of this script) as a phase
    local name=$1 t0 rc; shift
    : >"$LOGS/$name.log"
    printf '\n[test] ==== %s ====\n' "$name"
    t0=$(now)
    CURRENT_PHASE=$name CURRENT_T0=$t0
    "$@"; rc=$?
    CURRENT_PHASE=""
    if [ "$rc" = 0 ]; then
        record "$name" ok "$(secs "$t0" "$(now)")"
    else
        record "$name" "FAILED (rc=$rc)" "$(secs "$t0" "$(now)")"
        say "$name FAILED (rc=$rc); log: $LOGS/$name.log"
    fi
    return "$rc"
}

skip() {  # name reason
    printf '\n[test] ==== %s ====\n' "$1"
    say "skipped: $2"
    record "$1" "skipped: $2" -
}

not_run() {  # name reason: a phase that should have run but could not (a failure)
    printf '\n[test] ==== %s ====\n' "$1"
    say "NOT RUN: $2"
    record "$1" "NOT RUN: $2" -
}

# ---------------------------------------------------------------- apt
SUDO=()
if [ "$(id -u)" != 0 ]; then SUDO=(sudo -n); fi

apt_missing() {
    local p
    for p in "${APT_PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || echo "$p"
    done
}

apt_phase() {
    local missing log=$LOGS/apt.log
    command -v dpkg-query >/dev/null || { say "no dpkg-query: not a Debian system; install ${APT_PACKAGES[*]} yourself and set IRONBOOT_TEST_SKIP_APT=1" | tee -a "$log"; return 1; }
    mapfile -t missing < <(apt_missing)
    if [ "${#missing[@]}" = 0 ]; then
        say "all present: ${APT_PACKAGES[*]}" | tee -a "$log"
        return 0
    fi
    say "missing: ${missing[*]}" | tee -a "$log"
    if [ "${#SUDO[@]}" != 0 ] && ! sudo -n true 2>/dev/null; then
        say "not root and no passwordless sudo: install them or set IRONBOOT_TEST_SKIP_APT=1" | tee -a "$log"
        return 1
    fi
    run_cmd "$log" "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -o DPkg::Lock::Timeout=120 update || return 1
    run_cmd "$log" "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=120 "${missing[@]}" || return 1
    mapfile -t missing < <(apt_missing)
    [ "${#missing[@]}" = 0 ] || { say "still missing after apt-get install: ${missing[*]}" | tee -a "$log"; return 1; }
}

# ---------------------------------------------------------------- services
SERVICE_VARS=(SWIFT_AIO_DIR SWIFT_AIO_VENV SWIFT_AIO_PROXY_URL SWIFT_AIO_AUTH_URL
    SWIFT_AIO_STORAGE_URL SWIFT_AIO_USER SWIFT_AIO_KEY SWIFT_AIO_PROXY_LOG
    ST_AUTH ST_USER ST_KEY PGAIO_DIR IRONBOOT_TEST_PG_URL IRONBOOT_TEST_PYTHON
    IRONBOOT_TEST_DIR)
GLANCE_VARS=(KEYSTONE_AIO_DIR GLANCE_AIO_DIR SWIFT_AIO_KEYSTONE_PROXY_URL
    IRONBOOT_TEST_KEYSTONE_URL IRONBOOT_TEST_KEYSTONE_REGION IRONBOOT_TEST_KEYSTONE_DOMAIN
    IRONBOOT_TEST_KEYSTONE_TOKEN_EXPIRATION
    IRONBOOT_TEST_KEYSTONE_USER IRONBOOT_TEST_KEYSTONE_PASSWORD IRONBOOT_TEST_KEYSTONE_PROJECT
    IRONBOOT_TEST_KEYSTONE_ROLES
    IRONBOOT_TEST_KEYSTONE_DEMO_USER IRONBOOT_TEST_KEYSTONE_DEMO_PASSWORD
    IRONBOOT_TEST_KEYSTONE_DEMO_PROJECT
    IRONBOOT_TEST_KEYSTONE_ADMIN_USER IRONBOOT_TEST_KEYSTONE_ADMIN_PASSWORD
    IRONBOOT_TEST_KEYSTONE_ADMIN_PROJECT
    IRONBOOT_TEST_GLANCE_URL IRONBOOT_TEST_GLANCE_CONTAINER IRONBOOT_TEST_GLANCE_SEED
    IRONBOOT_TEST_GLANCE3_URL IRONBOOT_TEST_GLANCE3_CONTAINER IRONBOOT_TEST_GLANCE3_SEED
    IRONBOOT_TEST_GLANCE_FILE_URL IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT
    IRONBOOT_TEST_GLANCE_LARGE_OBJECT_MB IRONBOOT_TEST_GLANCE_CHUNK_MB)

SWIFT_STARTED=0 PG_STARTED=0 GLANCE_STARTED=0

swift_start_phase() {
    local log=$LOGS/swift-start.log
    SWIFT_STARTED=1   # from here on cleanup stops whatever start records
    # a previous run that was killed hard may have left its instance running
    run_cmd "$log" scripts/swift-aio.sh stop "$SWIFT_DIR" || return 1
    run_cmd "$log" env SWIFT_AIO_VENV="$VENV" scripts/swift-aio.sh start "$SWIFT_DIR" || return 1
    local envtxt
    envtxt=$(scripts/swift-aio.sh env "$SWIFT_DIR") || return 1
    eval "$envtxt" || return 1
    export IRONBOOT_TEST_PYTHON=$SWIFT_AIO_VENV/bin/python
    "$IRONBOOT_TEST_PYTHON" -c 'import swiftclient.utils' 2>&1 | tee -a "$log" || return 1
    local v
    for v in SWIFT_AIO_DIR SWIFT_AIO_VENV SWIFT_AIO_PROXY_URL SWIFT_AIO_AUTH_URL \
             SWIFT_AIO_STORAGE_URL SWIFT_AIO_USER SWIFT_AIO_KEY SWIFT_AIO_PROXY_LOG \
             ST_AUTH ST_USER ST_KEY; do
        [ -n "${!v:-}" ] || { say "$v is not set after swift start" | tee -a "$log"; return 1; }
    done
}

pg_start_phase() {
    local log=$LOGS/pg-start.log envtxt
    PG_STARTED=1
    run_cmd "$log" scripts/postgres-aio.sh stop "$PG_DIR" || return 1
    run_cmd "$log" scripts/postgres-aio.sh start "$PG_DIR" || return 1
    envtxt=$(scripts/postgres-aio.sh env "$PG_DIR") || return 1
    eval "$envtxt" || return 1
    [ -n "${IRONBOOT_TEST_PG_URL:-}" ] || { say "IRONBOOT_TEST_PG_URL is not set after pg start" | tee -a "$log"; return 1; }
}

glance_install_phase() {
    local log=$LOGS/glance-install.log
    run_cmd "$log" scripts/keystone-aio.sh install "$KEYSTONE_DIR" || return 1
    run_cmd "$log" scripts/glance-aio.sh install "$GLANCE_DIR" || return 1
}

glance_start_phase() {
    local log=$LOGS/glance-start.log envtxt v
    GLANCE_STARTED=1   # from here on cleanup stops whatever start records
    # a previous run that was killed hard may have left its instances running
    run_cmd "$log" scripts/glance-aio.sh stop "$GLANCE_DIR" || return 1
    run_cmd "$log" scripts/keystone-aio.sh stop "$KEYSTONE_DIR" || return 1
    run_cmd "$log" scripts/keystone-aio.sh start "$KEYSTONE_DIR" || return 1
    envtxt=$(scripts/keystone-aio.sh env "$KEYSTONE_DIR") || return 1
    eval "$envtxt" || return 1
    # the Glances store in the Swift of swift-start (SWIFT_AIO_AUTH_URL/_USER/_KEY)
    run_cmd "$log" scripts/glance-aio.sh start "$GLANCE_DIR" || return 1
    envtxt=$(scripts/glance-aio.sh env "$GLANCE_DIR") || return 1
    eval "$envtxt" || return 1
    # one `image` service per region: the seed-0 Glance; the others are reached directly
    run_cmd "$log" scripts/keystone-aio.sh catalog "$KEYSTONE_DIR" image glance \
        "$IRONBOOT_TEST_GLANCE_URL" || return 1
    # a second Swift proxy on the same storage that takes Keystone tokens ([swift]
    # auth_type = password), with keystonemiddleware from the OpenStack venv; the
    # catalog's object-store endpoint
    envtxt=$(SWIFT_AIO_KEYSTONE_URL=$IRONBOOT_TEST_KEYSTONE_URL \
        SWIFT_AIO_KEYSTONE_USER=$KEYSTONE_AIO_GLANCE_USER \
        SWIFT_AIO_KEYSTONE_PASSWORD=$KEYSTONE_AIO_GLANCE_PASSWORD \
        SWIFT_AIO_KEYSTONE_PROJECT=$KEYSTONE_AIO_GLANCE_PROJECT \
        SWIFT_AIO_KEYSTONE_VENV=$KEYSTONE_AIO_VENV \
        scripts/swift-aio.sh keystone-proxy "$SWIFT_DIR" 2>>"$log") || return 1
    eval "$envtxt" || return 1
    run_cmd "$log" scripts/keystone-aio.sh catalog "$KEYSTONE_DIR" object-store swift \
        "$SWIFT_AIO_KEYSTONE_PROXY_URL/v1/AUTH_\$(project_id)s" || return 1
    for v in "${GLANCE_VARS[@]}"; do
        [ -n "${!v:-}" ] || { say "$v is not set after glance start" | tee -a "$log"; return 1; }
    done
}

stop_services() {
    if [ "$GLANCE_STARTED" = 1 ]; then
        scripts/glance-aio.sh stop "$GLANCE_DIR" || say "WARNING: stopping Glance failed"
        scripts/keystone-aio.sh stop "$KEYSTONE_DIR" || say "WARNING: stopping Keystone failed"
        GLANCE_STARTED=0
    fi
    if [ "$PG_STARTED" = 1 ]; then
        scripts/postgres-aio.sh stop "$PG_DIR" || say "WARNING: stopping PostgreSQL failed"
        PG_STARTED=0
    fi
    if [ "$SWIFT_STARTED" = 1 ]; then
        scripts/swift-aio.sh stop "$SWIFT_DIR" || say "WARNING: stopping Swift failed"
        SWIFT_STARTED=0
    fi
}

# ---------------------------------------------------------------- exit
INTERRUPTED=""
on_signal() {  # signame code
    INTERRUPTED=$1
    printf '\n' >&2
    say "interrupted by SIG$1" >&2
    exit "$2"   # runs the EXIT trap
}

test_counts() {  # from cargo test's "test result:" lines
    [ -f "$LOGS/test.log" ] || return 0
    sed 's/\x1b\[[0-9;]*m//g' "$LOGS/test.log" | awk '
        /^test result: / {
            n++
            for (i = 1; i <= NF; i++) {
                if ($(i+1) ~ /^passed/) p += $i
                if ($(i+1) ~ /^failed/) f += $i
                if ($(i+1) ~ /^ignored/) s += $i
            }
        }
        END { if (n) printf "tests: %d passed, %d failed%s\n", p, f, (s ? sprintf(", %d skipped", s) : "") }'
}

cleanup() {
    local rc=$? i
    trap '' INT TERM
    if [ -n "$STEP_PID" ]; then
        say "stopping the running phase (pid $STEP_PID and its process group)"
        kill -TERM "$STEP_PID" 2>/dev/null || true
        wait "$STEP_PID" 2>/dev/null || true
        STEP_PID=""
    fi
    if [ -n "$CURRENT_PHASE" ]; then
        record "$CURRENT_PHASE" "INTERRUPTED" "$(secs "$CURRENT_T0" "$(now)")"
    fi
    stop_services
    [ "$rc" = 0 ] && [ "${#FAILED[@]}" != 0 ] && rc=1
    printf '\n[test] ==== summary (logs in %s) ====\n' "$LOGS"
    for i in "${!PH_NAMES[@]}"; do
        if [ "${PH_SECS[$i]}" = - ]; then
            printf '  %-14s %8s   %s\n' "${PH_NAMES[$i]}" "" "${PH_STATUS[$i]}"
        else
            printf '  %-14s %7ss   %s\n' "${PH_NAMES[$i]}" "${PH_SECS[$i]}" "${PH_STATUS[$i]}"
        fi
    done
    printf '  %-14s %7ss\n' total "$(secs "$T_START" "$(now)")"
    if [ -n "$INTERRUPTED" ]; then
        say "RESULT: INTERRUPTED (SIG$INTERRUPTED)"
    elif [ "$rc" = 0 ]; then
        local skipped=()
        for i in "${!PH_NAMES[@]}"; do
            case "${PH_STATUS[$i]}" in skipped*) skipped+=("${PH_NAMES[$i]}") ;; esac
        done
        if [ "${#skipped[@]}" != 0 ]; then
            say "RESULT: OK, but skipped on request: ${skipped[*]}"
        else
            say "RESULT: OK"
        fi
    else
        say "RESULT: FAILED (${FAILED[*]:-exit status $rc})"
    fi
    [ "$TEST_DONE" = 1 ] && test_counts
    exit "$rc"
}
trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP

# ---------------------------------------------------------------- run
say "repo $ROOT, IRONBOOT_TEST_DIR=$TD, venv $VENV"
if [ "${IRONBOOT_TEST_SKIP_APT:-0}" = 1 ]; then
    skip apt "ON REQUEST (IRONBOOT_TEST_SKIP_APT=1): packages not checked"
else
    phase apt apt_phase
fi
SERVICES_OK=0
if ! phase swift-install run_cmd "$LOGS/swift-install.log" \
        env SWIFT_AIO_VENV="$VENV" scripts/swift-aio.sh install "$SWIFT_DIR"; then
    not_run swift-start "swift-install failed"
    not_run pg-start "swift-install failed"
elif ! phase swift-start swift_start_phase; then
    not_run pg-start "swift-start failed"
elif phase pg-start pg_start_phase; then
    SERVICES_OK=1
    say "exported for the tests:"
    for v in "${SERVICE_VARS[@]}"; do
        printf '  %s=%s\n' "$v" "${!v}"
    done
fi
# Keystone and Glance: real phases; a failure fails the run (the Glance tests then fail
# too), it is never a skip.
if [ "$SERVICES_OK" != 1 ]; then
    not_run glance-install "Swift or PostgreSQL did not start"
    not_run glance-start "Swift or PostgreSQL did not start"
elif ! phase glance-install glance_install_phase; then
    not_run glance-start "glance-install failed"
elif phase glance-start glance_start_phase; then
    say "exported for the tests:"
    for v in "${GLANCE_VARS[@]}"; do
        printf '  %s=%s\n' "$v" "${!v}"
    done
fi

phase fmt run_cmd "$LOGS/fmt.log" cargo fmt --all -- --check
phase clippy run_cmd "$LOGS/clippy.log" cargo clippy --all-targets -- -D warnings

if [ "$SERVICES_OK" = 1 ]; then
    phase test run_cmd "$LOGS/test.log" cargo test --all-targets
    TEST_DONE=1
else
    not_run test "Swift or PostgreSQL did not start"
fi

E2E=scripts/e2e-ipxe.sh
# Only an explicit request skips the end-to-end test; a missing or non-executable
# script is a failure, never a silent pass.
if [ "${IRONBOOT_TEST_SKIP_E2E:-0}" = 1 ]; then
    skip e2e "ON REQUEST (IRONBOOT_TEST_SKIP_E2E=1): the iPXE end-to-end test did not run"
elif [ ! -e "$E2E" ]; then
    not_run e2e "$E2E is missing"
elif [ ! -x "$E2E" ]; then
    not_run e2e "$E2E is not executable (chmod +x $E2E)"
elif [ "$SERVICES_OK" != 1 ]; then
    not_run e2e "Swift or PostgreSQL did not start"
else
    phase e2e run_cmd "$LOGS/e2e.log" "$E2E"
fi
# the EXIT trap stops the services and prints the summary

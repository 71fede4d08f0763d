#!/usr/bin/env bash
# postgres-aio.sh -- a throwaway PostgreSQL server on 127.0.0.1 for ironboot's tests.
#
# Usage:
#   scripts/postgres-aio.sh start  DIR   fresh cluster in DIR/data (initdb), start it,
#                                        create role + database `ironboot`, print `env`
#   scripts/postgres-aio.sh stop   DIR   pg_ctl stop -m fast, then make sure the recorded
#                                        postmaster PID is gone (SIGTERM/SIGKILL, only
#                                        while /proc/PID/cmdline still names DIR/data)
#   scripts/postgres-aio.sh status DIR   postmaster PID and pg_isready (rc 1 if down)
#   scripts/postgres-aio.sh env    DIR   print `export PGAIO_DIR=...` and
#                                        `export IRONBOOT_TEST_PG_URL=postgres://ironboot@127.0.0.1:PORT/ironboot`
#   scripts/postgres-aio.sh purge  DIR   stop, then delete only what this script created
#
# DIR defaults to $PGAIO_DIR or /tmp/postgres-aio.  Layout: DIR/data (PGDATA),
# DIR/sock (unix socket), DIR/log/postgres.log, DIR/run/{state,env}.
# A non-empty DIR that this script did not create is refused.
#
# The server uses the newest Debian build in /usr/lib/postgresql/*/bin (PGAIO_BIN
# overrides); if there is none, `apt-get install postgresql` is run (as root or with
# passwordless sudo; PGAIO_SKIP_APT=1 disables that).  PostgreSQL refuses to run as
# root, so as root initdb/pg_ctl run as the `postgres` system user (created by the
# Debian package), which then owns DIR/data, DIR/sock and DIR/log; DIR must be
# reachable by that user (e.g. somewhere under /tmp).
#
# It listens on 127.0.0.1 only, port PGAIO_PORT: when set and taken, `start` fails;
# when unset, the first free port of 25432..25531 is used.  Unix socket in DIR/sock,
# trust authentication for local and 127.0.0.1 connections, fsync=off,
# synchronous_commit=off, full_page_writes=off, timezone UTC.  Superuser `postgres`;
# role `ironboot` (LOGIN CREATEDB) owns database `ironboot`.
set -euo pipefail

log()   { printf '[postgres-aio] %s\n' "$*" >&2; }
die()   { log "ERROR: $*"; exit 1; }
now()   { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

CMD=${1:-}
[ -n "$CMD" ] || { usage >&2; exit 2; }
case "$CMD" in -h|--help|help) usage; exit 0 ;; esac
DIR=${2:-${PGAIO_DIR:-/tmp/postgres-aio}}
MARKER=.postgres-aio-owned

case "$CMD" in
    start)
        if [ ! -e "$DIR" ]; then
            mkdir -p "$DIR"
            touch "$DIR/$MARKER"
        elif [ ! -e "$DIR/$MARKER" ]; then
            [ -d "$DIR" ] || die "$DIR exists and is not a directory"
            [ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty and was not created by postgres-aio; refusing to use it"
            touch "$DIR/$MARKER"
        fi ;;
    stop|status|env|purge)
        if [ ! -d "$DIR" ]; then
            log "$DIR does not exist (not started)"
            [ "$CMD" = stop ] && exit 0
            exit 1
        fi ;;
    *) die "unknown command '$CMD' (start|stop|status|env|purge)" ;;
esac
DIR=$(cd "$DIR" && pwd -P)

DATA=$DIR/data
SOCK=$DIR/sock
LOGDIR=$DIR/log
RUN=$DIR/run
STATE=$RUN/state
PGLOG=$LOGDIR/postgres.log
HOST=127.0.0.1
DB=ironboot
ROLE=ironboot

# What `start` recorded wins for every later command.
ST_BIN="" ST_PORT="" ST_PID=""
if [ -f "$STATE" ]; then
    # shellcheck disable=SC1090
    . "$STATE"
fi

if [ "$(id -u)" = 0 ]; then
    RUN_AS=postgres
else
    RUN_AS=$(id -un)
fi

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
    else return 1; fi
}

as_pg() {  # run a command as the user that owns the cluster, from inside DIR
    if [ "$(id -u)" = 0 ]; then
        (cd "$DIR" && runuser -u "$RUN_AS" -- "$@")
    else
        (cd "$DIR" && "$@")
    fi
}

find_bin() {
    local d
    if [ -n "${PGAIO_BIN:-}" ]; then echo "$PGAIO_BIN"; return 0; fi
    d=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
        sort -V | tail -n 1)
    [ -n "$d" ] || return 1
    dirname "$d"
}

ensure_bin() {
    if BIN=$(find_bin) && [ -x "$BIN/pg_ctl" ]; then return 0; fi
    [ "${PGAIO_SKIP_APT:-0}" != 1 ] || die "no /usr/lib/postgresql/*/bin/initdb and PGAIO_SKIP_APT=1"
    command -v apt-get >/dev/null || die "no /usr/lib/postgresql/*/bin/initdb and no apt-get"
    log "PostgreSQL server binaries not found; apt-get install postgresql"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 || {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null ||
            die "apt-get install postgresql failed (needs root or passwordless sudo)"
    }
    if ! BIN=$(find_bin) || [ ! -x "$BIN/pg_ctl" ]; then
        die "postgresql installed but no /usr/lib/postgresql/*/bin/pg_ctl"
    fi
}

port_free() {  # port -> 0 if 127.0.0.1:port can be bound (SO_REUSEADDR, as postgres does)
    perl -MSocket -e '
        socket(my $s, PF_INET, SOCK_STREAM, 0) or exit 2;
        setsockopt($s, SOL_SOCKET, SO_REUSEADDR, 1) or exit 2;
        bind($s, sockaddr_in($ARGV[0], inet_aton("127.0.0.1"))) or exit 1;
        listen($s, 1) or exit 1;
        exit 0' "$1"
}

choose_port() {
    local p
    if [ -n "${PGAIO_PORT:-}" ]; then
        case "$PGAIO_PORT" in *[!0-9]*|'') die "PGAIO_PORT must be a number" ;; esac
        port_free "$PGAIO_PORT" || die "port $HOST:$PGAIO_PORT is in use (PGAIO_PORT)"
        PORT=$PGAIO_PORT
        return 0
    fi
    for p in $(seq 25432 25531); do
        if port_free "$p"; then
            [ "$p" = 25432 ] || log "port 25432 is taken; using $p"
            PORT=$p
            return 0
        fi
    done
    die "no free port in 25432..25531 on $HOST; set PGAIO_PORT"
}

postmaster_pid() {  # the PID in DATA/postmaster.pid, if any
    if [ -r "$DATA/postmaster.pid" ]; then head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true; fi
}

pid_ours() {  # pid -> 0 if alive and its command line still names our data dir
    local pid=$1 cmd
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmd" == *postgres*" $DATA"* ]]   # empty for a zombie: counts as gone
}

running() {
    local pid
    for pid in "$ST_PID" "$(postmaster_pid)"; do
        pid_ours "$pid" && return 0
    done
    return 1
}

write_env() {
    {
        printf 'export PGAIO_DIR=%q\n' "$DIR"
        printf 'export IRONBOOT_TEST_PG_URL=%q\n' "postgres://$ROLE@$HOST:$PORT/$DB"
    } >"$RUN/env"
}

do_start() {
    local t0 pid; t0=$(now)
    if running; then
        log "already running on port $ST_PORT (pid ${ST_PID:-$(postmaster_pid)})"
        cat "$RUN/env"
        return 0
    fi
    ensure_bin
    if [ "$RUN_AS" = postgres ] && ! id postgres >/dev/null 2>&1; then
        die "running as root but there is no 'postgres' system user (it comes with Debian's postgresql-common)"
    fi
    choose_port
    # throwaway cluster: wipe what a previous start left
    rm -rf "$DATA" "$SOCK" "$LOGDIR" "$RUN"
    mkdir -p "$DATA" "$SOCK" "$LOGDIR" "$RUN"
    chmod 700 "$DATA"
    if [ "$(id -u)" = 0 ]; then
        chown "$RUN_AS": "$DATA" "$SOCK" "$LOGDIR"
        as_pg test -x "$DIR" -a -w "$DATA" ||
            die "user $RUN_AS cannot reach $DIR (a parent directory is not searchable): choose a DIR under /tmp"
    fi
    printf 'ST_BIN=%q\nST_PORT=%q\nST_PID=\n' "$BIN" "$PORT" >"$STATE"

    as_pg "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$LOGDIR/initdb.log" 2>&1 || { tail -n 20 "$LOGDIR/initdb.log" >&2; die "initdb failed"; }
    cat >>"$DATA/postgresql.conf" <<EOF

# ---- postgres-aio: throwaway test server on loopback
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
timezone = 'UTC'
log_timezone = 'UTC'
lc_messages = 'C'
logging_collector = off
EOF
    cat >"$DATA/pg_hba.conf" <<EOF
# postgres-aio: trust on the unix socket and on 127.0.0.1 only
local all all              trust
host  all all 127.0.0.1/32 trust
EOF
    if ! as_pg "$BIN/pg_ctl" -D "$DATA" -l "$PGLOG" -w -t 60 start >/dev/null; then
        tail -n 30 "$PGLOG" >&2 || true
        do_stop
        die "pg_ctl start failed; log: $PGLOG"
    fi
    pid=$(postmaster_pid)
    pid_ours "$pid" || { tail -n 30 "$PGLOG" >&2 || true; do_stop; die "postmaster is not running after pg_ctl start"; }
    printf 'ST_BIN=%q\nST_PORT=%q\nST_PID=%q\n' "$BIN" "$PORT" "$pid" >"$STATE"
    ST_PID=$pid
    if ! "$BIN/psql" -X -q -v ON_ERROR_STOP=1 "postgres://postgres@$HOST:$PORT/postgres" \
            -c "CREATE ROLE $ROLE LOGIN CREATEDB" \
            -c "CREATE DATABASE $DB OWNER $ROLE" >/dev/null; then
        do_stop
        die "could not create role/database $DB"
    fi
    write_env
    log "started in $(since "$t0")s: PostgreSQL $("$BIN/postgres" -V | awk '{print $3}') on $HOST:$PORT (pid $pid, data $DATA, log $PGLOG)"
    cat "$RUN/env"
}

LEFT=""
wait_gone() {  # "pids" seconds -> 0 once none of them is ours any more; LEFT = the rest
    local pid
    for _ in $(seq 1 $(( $2 * 5 ))); do
        LEFT=""
        for pid in $1; do pid_ours "$pid" && LEFT="$LEFT $pid"; done
        [ -z "$LEFT" ] && return 0
        sleep 0.2
    done
    return 1
}

signal_ours() {  # SIG "pids": signal each pid that is still our postmaster
    local pid
    for pid in $2; do
        if pid_ours "$pid"; then kill "-$1" "$pid" 2>/dev/null || true; fi
    done
}

do_stop() {
    local bin=${ST_BIN:-${BIN:-}} pid pids=""
    [ -n "$bin" ] || bin=$(find_bin 2>/dev/null) || true
    for pid in "$ST_PID" "$(postmaster_pid)"; do
        if pid_ours "$pid" && [[ " $pids " != *" $pid "* ]]; then pids="$pids $pid"; fi
    done
    if [ -z "$pids" ]; then
        log "not running"
        return 0
    fi
    if [ -n "$bin" ] && [ -x "$bin/pg_ctl" ]; then
        as_pg "$bin/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            log "pg_ctl stop failed; signalling pid(s)$pids"
    fi
    if ! wait_gone "$pids" 2; then
        log "postmaster$LEFT still alive after pg_ctl stop; sending SIGTERM"
        signal_ours TERM "$LEFT"
        if ! wait_gone "$LEFT" 10; then
            log "postmaster$LEFT ignored SIGTERM; sending SIGKILL"
            signal_ours KILL "$LEFT"
            wait_gone "$LEFT" 5 || die "postmaster$LEFT still alive"
        fi
    fi
    if [ -f "$STATE" ]; then sed -i 's/^ST_PID=.*/ST_PID=/' "$STATE"; fi
    log "stopped"
}

do_status() {
    local pid bin=${ST_BIN:-}
    pid=${ST_PID:-$(postmaster_pid)}
    if ! running; then echo "not running"; return 1; fi
    echo "postmaster pid=$pid port=$ST_PORT data=$DATA log=$PGLOG"
    if [ -n "$bin" ] && "$bin/pg_isready" -q -h "$HOST" -p "$ST_PORT"; then
        echo "pg_isready OK"
    else
        echo "pg_isready FAILED"; return 1
    fi
}

do_env() {
    [ -f "$RUN/env" ] || die "no $RUN/env: run '$0 start $DIR' first"
    running || log "WARNING: the server in $DIR is not running"
    cat "$RUN/env"
}

do_purge() {
    do_stop
    [ -e "$DIR/$MARKER" ] || die "$DIR was not created by postgres-aio; not deleting anything"
    rm -rf "$DATA" "$SOCK" "$LOGDIR" "$RUN"
    rm -f "$DIR/$MARKER"
    if rmdir "$DIR" 2>/dev/null; then
        log "removed $DIR"
    else
        log "kept $DIR: it still holds files that postgres-aio did not create"
    fi
}

case "$CMD" in
    start)  do_start ;;
    stop)   do_stop ;;
    status) do_status ;;
    env)    do_env ;;
    purge)  do_purge ;;
esac

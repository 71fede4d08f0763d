#!/usr/bin/env bash
# scripts/e2e-ipxe.sh -- end-to-end boot test with a REAL iPXE client.
#
#   scripts/e2e-ipxe.sh            (scripts/test.sh runs it after `cargo test`)
#
# QEMU (TCG, user-mode/slirp networking only) boots a VM whose NIC option ROM is
# Debian's iPXE.  slirp's DHCP hands out http://10.0.2.2:<boot port>/boot.ipxe, which
# `ironboot serve` (bound to 127.0.0.1) answers; the per-MAC script then fetches a Debian
# cloud kernel and a busybox initrd from a REAL Swift through TempURLs (swift mode), or
# through a 302 from ironboot to a TempURL (*-redirect), or from ironboot's own boot
# listener, which took them from a REAL Glance into its master cache (*-cache).  Each
# mode is its own `ironboot serve` (config, state dir, ports, log), started only when a
# scenario needs it: $OUT/ironboot.conf (swift), ironboot-redirect.conf, ironboot-cache.conf;
# bios-takeover* start their two conductors themselves (ironboot-takeover-a.conf, ...).
# The initrd's /init prints IRONBOOT-E2E-ROLE=<deploy|instance>, BOOT-MARKER-OK and
# "CMDLINE: $(cat /proc/cmdline)", then powers off (-no-reboot makes QEMU exit).
# The guest reaches the host's loopback as 10.0.2.2; nothing listens beyond 127.0.0.1.
#
# Scenarios (E2E_SCENARIOS, in this order by default):
#   bios-deploy    node vm1 target deploy: ROLE=deploy; cmdline has [pxe]
#                  kernel_append_params (ironboot_e2e=<nonce>), BOOTIF=01-<mac> and
#                  initrd=deploy_ramdisk; Swift's proxy log shows iPXE's TempURL GETs
#                  (temp_url_sig in the query) of deploy/vmlinuz and deploy/initrd.img
#   uefi-deploy    the same after `node update vm1 --boot-mode uefi` (OVMF)
#   bios-fallback  unknown MAC 52:54:00:65:43:21: 404 on its pxelinux.cfg script, then
#   uefi-fallback  [ipxe] fallback_script (fallback.ipxe) prints its marker and reboots
#   bios-instance  target instance: ROLE=instance, the node's own kernel_append_params
#                  (role=instance ...) instead of the config's, initrd=ramdisk;
#                  GETs of instance/vmlinuz and instance/initrd.img
#   bios-local     target local: "boots from its local disk", sanboot fails, iPXE exits
#                  to SeaBIOS ("No bootable device"; QEMU is killed then); no Swift GET
#   uefi-local     the same under OVMF: no sanboot; iPXE exits and OVMF moves on to its
#                  next boot option ("BdsDxe: failed to load Boot0001 ..."; QEMU is killed)
#   bios-glance    node vm-glance (mac 52:54:00:12:34:57) whose driver_info holds ONLY
#                  the deploy kernel and initrd as Glance images: deploy_kernel=<uuid>,
#                  deploy_ramdisk=glance://<uuid>, uploaded into the REAL Glance of
#                  scripts/test.sh, whose store is this Swift (container glance, seed 0;
#                  from 1,024,000 bytes on, a manifest plus 1 MB segments: checked).
#                  ROLE=deploy, cmdline as bios-deploy; Swift's proxy log shows iPXE's
#                  TempURL GETs of glance/<kernel uuid> and glance/<initrd uuid> with all
#                  their bytes (and the segments read for them); the node's script points
#                  at Swift only, and ironboot's boot listener answered nothing but
#                  /boot.ipxe and /pxelinux.cfg/{mac} (ironboot_http_requests_total), so
#                  no image byte went through ironboot
#   uefi-glance    the same after `node update vm-glance --boot-mode uefi` (OVMF)
#   bios-redirect  swift mode with [ipxe] tempurl_redirect = true and [deploy] http_url =
#                  http://10.0.2.2:<boot port> (the "redirect" instance), node vm1 target
#                  deploy: the script's kernel/initrd URLs are http_url/<uuid>/deploy_kernel
#                  and /deploy_ramdisk, no temp_url_sig, no Swift URL; a GET of each (curl,
#                  before the boot) is a 302, Cache-Control no-store, to a TempURL of
#                  deploy/vmlinuz and deploy/initrd.img expiring 1200 s after the request;
#                  during the boot the boot listener answered /{node}/{label} with 302
#                  exactly twice and nothing but that and the scripts
#                  (ironboot_http_requests_total{listener="boot"}), ironboot signed exactly
#                  2 TempURLs (ironboot_tempurls_minted_total), and Swift's proxy log shows
#                  iPXE's (User-Agent) TempURL GETs of both objects, signed no earlier than
#                  the curl's; ROLE=deploy, cmdline as bios-deploy
#   uefi-redirect  the same under OVMF
#   bios-cache     cache mode ([ipxe] use_swift = false; the "cache" instance): node vm-cache
#                  (mac 52:54:00:12:34:58) whose driver_info is deploy_kernel=<uuid>,
#                  deploy_ramdisk=glance://<uuid>, images of the REAL Glance whose store is
#                  a local directory (IRONBOOT_TEST_GLANCE_FILE_URL; [glance] auth_type =
#                  password, endpoint_override).  The prepare: PUT /v1/nodes/<uuid>/boot
#                  answers 202 with state preparing and GET /v1/nodes/<uuid> is polled until
#                  ready (or `ironboot node boot --wait` exits 0, when the binary has it);
#                  the file-store Glance's request log ($GLANCE_AIO_DIR/file/log/wsgi.log,
#                  when there is one) shows one GET /v2/images/<id>/file of each image;
#                  then master_images/<glance id> holds each image byte for byte (and
#                  `ironboot cache list --json` lists them, each linked by one node, when the
#                  binary has it), http_root/<uuid>/deploy_kernel|deploy_ramdisk are
#                  hardlinks of the master files (same inode, `stat -c %h` 2), and the script
#                  points at http://10.0.2.2:<boot port>/<uuid>/deploy_kernel|deploy_ramdisk
#                  with no temp_url_sig.  The boot: ROLE=deploy, cmdline as bios-deploy, the
#                  serial port shows iPXE fetching those URLs, the boot listener served
#                  /{node}/{label} with 200 exactly twice and nothing but that and the
#                  scripts, and Swift's proxy log names neither image and has no iPXE GET of
#                  this run's container
#   uefi-cache     the same after `node update vm-cache --boot-mode uefi` (a new prepare;
#                  the images are already in the master cache, so Glance serves neither
#                  again: no GET /v2/images/<id>/file in its request log)
#   bios-takeover  two swift-mode conductors e2e-a and e2e-b (instances takeover-a and
#                  takeover-b: each its own config, state dir, ports and log) on one fresh
#                  PostgreSQL database (created on IRONBOOT_TEST_PG_URL's server, dropped
#                  at the end; [conductor] heartbeat_interval = 1, heartbeat_timeout = 3).
#                  Once each lists both alive, node vm-takeover (mac 52:54:00:12:34:59, the
#                  swift:// deploy kernel and initrd of bios-deploy) is created and prepared
#                  (target deploy) through e2e-a's API; both agree on its owner
#                  (`conductor`), which is killed with SIGKILL.  Polled, within 15 s: the
#                  survivor's GET /v1/conductors shows the dead one alive: false and its GET
#                  /v1/nodes/<uuid> names the survivor as the owner.  The VM's DHCP boot file
#                  is the SURVIVOR's /boot.ipxe: ROLE=deploy, cmdline as bios-deploy, Swift's
#                  proxy log shows iPXE's TempURL GETs of deploy/vmlinuz and
#                  deploy/initrd.img, the survivor's /metrics counts the node script it
#                  rendered; the dead one's PID is gone (reaped: killed by SIGKILL) and its
#                  boot listener refuses connections; the survivor exits 0 on SIGTERM
#   bios-takeover-cache  the same in cache mode (instances takeover-cache-a and -b:
#                  [ipxe] use_swift = false, [pxe] http_passthrough = false, each one's
#                  [deploy] http_url = http://10.0.2.2:<its boot port>), node
#                  vm-takeover-cache (mac 52:54:00:12:34:5a) whose deploy kernel and initrd
#                  are the file-store Glance images of bios-cache.  PUT .../boot answers 202
#                  and GET is polled until ready; the survivor's script then names the
#                  owner's http_url.  After the kill, polled: the survivor owns the node
#                  (within 15 s) and its script (curl of its pxelinux.cfg/<mac>) names
#                  http://10.0.2.2:<survivor boot port>/<uuid>/deploy_kernel, i.e. it adopted
#                  the images (within 60 s of the kill); its master cache holds both, byte
#                  for byte.  The boot through the survivor: ROLE=deploy, iPXE fetched the
#                  survivor's URLs, its boot listener served /{node}/{label} with 200 exactly
#                  twice and nothing but that and the scripts; the dead one is gone, as above.
#                  The survivor's clean stop exits 0 within 10 s: as the last conductor it
#                  has nobody to hand its images to, so it does not wait for a takeover
#   (bios-takeover*: how long the takeover took -- kill to alive: false, to the new owner,
#   to adoption -- goes to checks.txt and the summary.  IRONBOOT_TEST_PG_URL and psql are
#   REQUIRED: without them these scenarios FAIL, never skip)
#   (bios-deploy, uefi-deploy, bios-instance, *-glance and *-redirect first check that
#   `ironboot node boot` HEAD-checked the two objects through TempURLs: HEAD lines in
#   Swift's proxy log)
# Each run also checks ironboot's /metrics (ironboot_script_renders_total deltas), so
# /boot.ipxe and /pxelinux.cfg/<mac> were really answered by ironboot.
#
# Environment (all optional):
#   IRONBOOT_TEST_DIR (/tmp/ironboot-test)  cache/ (kernel, busybox), e2e-last/ (logs of
#                     the last run: *.serial.log, ironboot.log, checks), swift/ when this
#                     script has to start Swift itself
#   SWIFT_AIO_PROXY_URL SWIFT_AIO_AUTH_URL SWIFT_AIO_USER SWIFT_AIO_KEY
#   SWIFT_AIO_PROXY_LOG   a running Swift (exported by scripts/test.sh or
#                     `eval "$(scripts/swift-aio.sh env DIR)"`).  When SWIFT_AIO_PROXY_URL
#                     is unset, this script runs `scripts/swift-aio.sh start
#                     $IRONBOOT_TEST_DIR/swift` (venv: $SWIFT_AIO_VENV, else
#                     $IRONBOOT_TEST_DIR/venv) and stops it again at the end.
#   SWIFT_AIO_DIR     used to find the proxy log when SWIFT_AIO_PROXY_LOG is unset
#   IRONBOOT_BIN      ironboot binary to test (default: `cargo build --bin ironboot`,
#                     then ${CARGO_TARGET_DIR:-target}/debug/ironboot)
#   IRONBOOT_E2E_LOG  ironboot's log filter (info,ironboot=debug)
#   E2E_SCENARIOS     subset/order of the scenarios above (all of them)
#   E2E_REPEAT        run the scenario list this many times, round after round (1); the
#                     logs of round N > 1 are named <scenario>.rN.*
#   E2E_TIMING_FILE   append one tab-separated line per VM: scenario, round, how it ended,
#                     seconds of QEMU, seconds until the kernel's first console line ("Linux
#                     version") and until BOOT-MARKER-OK ('-' when never), tag
#                     (bench/boot-modes.sh reads it)
#   E2E_VM_TIMEOUT    seconds before a VM that did not finish is killed (120)
#   E2E_LOCAL_GRACE   *-local: seconds to wait after ironboot's local-boot line when the
#                     firmware's line does not show up (15)
#   E2E_MEM           guest RAM in MiB (256; OVMF needs 256)
#   E2E_NIC           QEMU NIC model (e1000)
#   E2E_ACCEL         QEMU accelerator (tcg; the PVM flavour of KVM on our CI hosts
#                     cannot run iPXE's real-mode code)
#   IRONBOOT_TEST_KEYSTONE_URL (no /v3) IRONBOOT_TEST_KEYSTONE_USER _PASSWORD _PROJECT
#   IRONBOOT_TEST_KEYSTONE_DOMAIN (Default) IRONBOOT_TEST_KEYSTONE_REGION (optional)
#   IRONBOOT_TEST_GLANCE_URL IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT (must be the account of
#                     SWIFT_AIO_USER) IRONBOOT_TEST_GLANCE_CONTAINER (glance)
#   IRONBOOT_TEST_GLANCE_SEED (must be 0)
#                     Keystone and the seed-0 Glance (exported by scripts/test.sh) for
#                     *-glance: the images are uploaded as that user, ironboot reads them
#                     as that user ([glance] auth_type = password).  REQUIRED when a
#                     *-glance scenario runs: missing ones make it FAIL, never skip.
#   IRONBOOT_TEST_PG_URL  a PostgreSQL database URL (exported by scripts/test.sh) whose
#                     user may CREATE DATABASE: bios-takeover* create a fresh database
#                     ironboot_e2e_<nonce>_<n> on its server (with psql) and drop it at the
#                     end.  REQUIRED when such a scenario runs: missing, it FAILs.
#   IRONBOOT_TEST_GLANCE_FILE_URL  the Glance whose store is a local directory (exported
#                     by scripts/test.sh), for *-cache and bios-takeover-cache, with the
#                     Keystone variables above
#                     (not the Swift ones): REQUIRED when a *-cache scenario runs; missing
#                     ones make it FAIL, never skip.
#                     Swift has to accept ironboot's one temp-URL key for container glance
#                     too: the script puts it there as X-Container-Meta-Temp-URL-Key (not on
#                     the account, whose keys the Rust tests set), or reuses the key an
#                     earlier run put there, so that concurrent runs agree; it stays.
#   E2E_KEEP_SWIFT=1  do not delete the test container and the Glance images (both
#                     Glances) at the end
#   IRONBOOT_TEST_SKIP_APT=1  never call apt-get (missing packages are then an error;
#                     note that fetching the kernel/busybox .debs into an empty cache
#                     still needs `apt-get download`)
#
# Needs: qemu-system-x86 ipxe-qemu ovmf cpio gzip curl python3, and psql
# (postgresql-client) for bios-takeover* (apt-get installs the missing ones when root or
# passwordless sudo).  Exit: 0 all checks passed, 1 a check failed, 2 setup error.
# Everything started here (each ironboot, QEMU, Swift when started here) is stopped by PID
# on exit, failure, Ctrl-C or SIGTERM, and the databases created here are dropped.

# shellcheck disable=SC2317  # functions run through check/trap look unreachable
set -uo pipefail

case "${1:-}" in
    '') ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "usage: scripts/e2e-ipxe.sh (no arguments; see --help)" >&2; exit 2 ;;
esac

T_START=$(date +%s.%N)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT" || exit 2

TD=${IRONBOOT_TEST_DIR:-/tmp/ironboot-test}
mkdir -p "$TD" || { echo "[e2e] cannot create $TD" >&2; exit 2; }
TD=$(cd "$TD" && pwd -P)
CACHE=$TD/cache
OUT=$TD/e2e-last
SCENARIOS=${E2E_SCENARIOS:-bios-deploy uefi-deploy bios-fallback uefi-fallback bios-instance bios-local uefi-local bios-glance uefi-glance bios-redirect uefi-redirect bios-cache uefi-cache bios-takeover bios-takeover-cache}
VM_TIMEOUT=${E2E_VM_TIMEOUT:-120}
LOCAL_GRACE=${E2E_LOCAL_GRACE:-15}
MEM=${E2E_MEM:-256}
NIC=${E2E_NIC:-e1000}
ACCEL=${E2E_ACCEL:-tcg}
IB_LOG_FILTER=${IRONBOOT_E2E_LOG:-info,ironboot=debug}
MAC=52:54:00:12:34:56
MAC_UNKNOWN=52:54:00:65:43:21
MAC_GLANCE=52:54:00:12:34:57
MAC_CACHE=52:54:00:12:34:58
MAC_TAKEOVER=52:54:00:12:34:59
MAC_TAKEOVER_CACHE=52:54:00:12:34:5a
QEMU=qemu-system-x86_64
OVMF=/usr/share/ovmf/OVMF.fd
PKGS=(qemu-system-x86 ipxe-qemu ovmf cpio gzip curl)

say()  { printf '[e2e %(%H:%M:%S)T] %s\n' -1 "$*"; }
die()  { say "SETUP ERROR: $*" >&2; exit 2; }
now()  { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
hexhyp() { echo "$1" | tr ':' '-'; }

instance_of() {  # scenario -> the `ironboot serve` instance it boots from (1: unknown)
    case "$1" in
        bios-deploy|uefi-deploy|bios-fallback|uefi-fallback|bios-instance|uefi-instance|\
        bios-local|uefi-local|bios-glance|uefi-glance) echo swift ;;
        bios-redirect|uefi-redirect) echo redirect ;;
        bios-cache|uefi-cache) echo cache ;;
        bios-takeover) echo takeover ;;            # started by the scenario itself
        bios-takeover-cache) echo takeover-cache ;;
        *) return 1 ;;
    esac
}
declare -A NEED   # instance -> 1 when a scenario of this run boots from it
for sc in $SCENARIOS; do
    inst=$(instance_of "$sc") || die "unknown scenario '$sc' in E2E_SCENARIOS"
    NEED[$inst]=1
done

# ---------------------------------------------------------------- state + cleanup
WAIT_RC="" QEMU_PID="" SWIFT_STARTED=0 SWIFT_DIR_OWN="" SWIFT_TOKEN="" CONT=""
# the `ironboot serve` instances (swift, redirect, cache; the conductors of bios-takeover*),
# by name: pid, ports, files; [DEFAULT] host and the bios-takeover* ones (INST_SCOPED: the
# scenario checks and stops them, the totals do not)
declare -A INST_PID INST_API INST_BOOT INST_CONF INST_LOG INST_STATE INST_HOST INST_SCOPED
IB_NAMES=()        # the instances started, in order
PG_DBS=()          # the PostgreSQL databases this run created (dropped at the end)
PSQL=""            # psql, found when a bios-takeover* scenario runs
GLANCE_IMAGES=()   # URLs (<glance>/v2/images/<id>) of the Glance images this run created
NPASS=0 NFAIL=0 FAILED_CHECKS=() TIMINGS=()
INTERRUPTED=""

kill_pid() {  # pid name [grace seconds]: TERM, wait, KILL; only our own children
    local pid=$1 name=$2 grace=${3:-10} i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; WAIT_RC=$?; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM for ${grace}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    WAIT_RC=$?
    return 0
}

swift_cleanup_container() {
    [ -n "$SWIFT_TOKEN" ] && [ -n "$CONT" ] || return 0
    [ "${E2E_KEEP_SWIFT:-0}" = 1 ] && { say "keeping Swift container $CONT"; return 0; }
    local o
    for o in deploy/vmlinuz deploy/initrd.img instance/vmlinuz instance/initrd.img; do
        curl -s -o /dev/null -m 10 -X DELETE -H "X-Auth-Token: $SWIFT_TOKEN" "$SWIFT_STORAGE/$CONT/$o" || true
    done
    curl -s -o /dev/null -m 10 -X DELETE -H "X-Auth-Token: $SWIFT_TOKEN" "$SWIFT_STORAGE/$CONT" || true
}

# A project-scoped token of the Keystone user of the *-glance scenarios, on stdout.  The
# password goes to curl on stdin, not on a command line.
keystone_token() {
    local hdrs
    hdrs=$(python3 -c 'import json, os
e = os.environ
d = {"name": e.get("IRONBOOT_TEST_KEYSTONE_DOMAIN") or "Default"}
print(json.dumps({"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": e["IRONBOOT_TEST_KEYSTONE_USER"], "domain": d,
        "password": e["IRONBOOT_TEST_KEYSTONE_PASSWORD"]}}},
    "scope": {"project": {"name": e["IRONBOOT_TEST_KEYSTONE_PROJECT"], "domain": d}}}}))' \
        | curl -s -m 20 -D - -o /dev/null -H 'Content-Type: application/json' --data-binary @- \
            "${IRONBOOT_TEST_KEYSTONE_URL%/}/v3/auth/tokens" | tr -d '\r') || return 1
    awk -F': ' 'tolower($1) == "x-subject-token" {print $2}' <<<"$hdrs" | grep .
}

glance_cleanup() {  # deletes this run's Glance images (Glance deletes their stored data)
    [ "${#GLANCE_IMAGES[@]}" != 0 ] || return 0
    [ "${E2E_KEEP_SWIFT:-0}" = 1 ] && { say "keeping Glance images ${GLANCE_IMAGES[*]}"; return 0; }
    local tok url st
    # a fresh token: the one of the setup may have expired (test.sh's live 60 s)
    tok=$(keystone_token) || { say "WARNING: no Keystone token: Glance images ${GLANCE_IMAGES[*]} are left"; return 0; }
    for url in "${GLANCE_IMAGES[@]}"; do
        st=$(curl -s -o /dev/null -m 30 -w '%{http_code}' -X DELETE -H "X-Auth-Token: $tok" "$url")
        case "$st" in 204|404) ;; *) say "WARNING: deleting Glance image $url -> $st" ;; esac
    done
    GLANCE_IMAGES=()
}

pg_url_of() {  # database -> IRONBOOT_TEST_PG_URL with that database instead of its own
    local base=${IRONBOOT_TEST_PG_URL%%\?*}
    printf '%s/%s%s\n' "${base%/*}" "$1" "${IRONBOOT_TEST_PG_URL#"$base"}"
}
pg_drop_dbs() {  # drops the databases this run created (their conductors are stopped first)
    local db
    [ "${#PG_DBS[@]}" != 0 ] || return 0
    for db in "${PG_DBS[@]}"; do
        "$PSQL" -X -q -v ON_ERROR_STOP=1 "$IRONBOOT_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
            >>"$OUT/psql.log" 2>&1 || say "WARNING: cannot drop PostgreSQL database $db (see $OUT/psql.log)"
    done
    PG_DBS=()
}

cleanup() {
    local rc=$? t
    trap '' INT TERM
    if [ -n "$QEMU_PID" ]; then kill_pid "$QEMU_PID" qemu 5; QEMU_PID=""; fi
    for t in "${IB_NAMES[@]}"; do
        if [ -n "${INST_PID[$t]}" ]; then kill_pid "${INST_PID[$t]}" "ironboot ($t)" 10; INST_PID[$t]=""; fi
    done
    pg_drop_dbs
    swift_cleanup_container
    glance_cleanup
    if [ "$SWIFT_STARTED" = 1 ]; then
        scripts/swift-aio.sh stop "$SWIFT_DIR_OWN" >/dev/null 2>&1 || say "WARNING: stopping Swift in $SWIFT_DIR_OWN failed"
    fi
    [ -n "${OUT:-}" ] && rm -rf "$OUT/build"
    [ "$rc" = 0 ] && [ "$NFAIL" != 0 ] && rc=1
    echo
    say "==== e2e summary ===="
    for t in "${TIMINGS[@]}"; do printf '  %s\n' "$t"; done
    printf '  %-16s %6ss\n' total "$(secs "$T_START" "$(now)")"
    say "checks: $NPASS passed, $NFAIL failed"
    if [ -n "$INTERRUPTED" ]; then
        say "RESULT: INTERRUPTED (SIG$INTERRUPTED)"
    elif [ "$rc" = 0 ]; then
        say "RESULT: PASS (logs of this run in $OUT)"
    else
        [ "${#FAILED_CHECKS[@]}" != 0 ] && printf '  failed: %s\n' "${FAILED_CHECKS[@]}"
        say "RESULT: FAIL (rc=$rc).  Logs of this run:"
        if [ -d "$OUT" ]; then
            find "$OUT" -maxdepth 1 -type f \( -name '*.log' -o -name '*.txt' -o -name '*.ipxe' -o -name '*.conf' \) \
                | sort | sed 's/^/    /'
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'INTERRUPTED=INT; exit 130' INT
trap 'INTERRUPTED=TERM; exit 143' TERM
trap 'INTERRUPTED=HUP; exit 129' HUP

# One e2e run per IRONBOOT_TEST_DIR at a time (both would use e2e-last/).  Not fd 9:
# scripts/test.sh holds $TD/.lock on its own fd 9 and closes it for its children.
exec 8>"$TD/.e2e.lock"
flock -n 8 || die "another scripts/e2e-ipxe.sh is running with IRONBOOT_TEST_DIR=$TD"

rm -rf "$OUT"
mkdir -p "$OUT/build" "$CACHE" || die "cannot create $OUT or $CACHE"

pass() { NPASS=$((NPASS + 1)); printf '  PASS %s\n' "$*" | tee -a "$OUT/checks.txt"; }
fail() {
    NFAIL=$((NFAIL + 1)); FAILED_CHECKS+=("${CUR:-setup}: $*")
    printf '  FAIL %s\n' "$*" | tee -a "$OUT/checks.txt"
}
check() {  # description cmd...: PASS/FAIL on cmd's status (returns it)
    local d=$1; shift
    if "$@"; then pass "$d"; else fail "$d"; return 1; fi
}
serial_tail() {  # the end of the current run's serial console, for failures
    echo "  ---- last 25 lines of $OUT/$CUR.serial.txt ----"
    tail -n 25 "$OUT/$CUR.serial.txt" 2>/dev/null | cut -c1-160 | sed 's/^/  | /'
    echo "  ----"
}

# ---------------------------------------------------------------- packages
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo -n)
APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] && return 0
    APT_UPDATED=1
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120 update >"$OUT/apt.log" 2>&1 \
        || say "WARNING: apt-get update reported errors (see $OUT/apt.log)"
}
missing=()
for p in "${PKGS[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
command -v python3 >/dev/null || missing+=(python3)
find_psql() {  # -> PSQL: psql in PATH, else the newest /usr/lib/postgresql/*/bin/psql
    PSQL=$(command -v psql 2>/dev/null) && return 0
    PSQL=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/psql' 2>/dev/null | sort -V | tail -n 1)
    [ -n "$PSQL" ]
}
case " $SCENARIOS " in *" bios-takeover"*) find_psql || missing+=(postgresql-client) ;; esac
if [ "${#missing[@]}" != 0 ]; then
    [ "${IRONBOOT_TEST_SKIP_APT:-0}" = 1 ] && die "missing packages: ${missing[*]} (IRONBOOT_TEST_SKIP_APT=1)"
    if [ "${#SUDO[@]}" != 0 ] && ! sudo -n true 2>/dev/null; then
        die "missing packages: ${missing[*]} (not root and no passwordless sudo)"
    fi
    say "apt-get install ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=120 "${missing[@]}" >>"$OUT/apt.log" 2>&1 || {
        apt_update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=120 "${missing[@]}" >>"$OUT/apt.log" 2>&1 \
            || die "apt-get install ${missing[*]} failed (see $OUT/apt.log)"
    }
fi
command -v "$QEMU" >/dev/null || die "$QEMU not found"
case " $SCENARIOS " in *" bios-takeover"*) find_psql || die "psql not found (postgresql-client)" ;; esac
case " $SCENARIOS " in *" uefi-"*) [ -f "$OVMF" ] || die "OVMF not found at $OVMF" ;; esac

# ---------------------------------------------------------------- kernel + busybox (cached)
fetch_deb() {  # package -> path of the downloaded .deb on stdout
    local deb
    deb=$(find "$CACHE" -maxdepth 1 -name "$1_*.deb" | head -n1)
    if [ -z "$deb" ]; then
        (cd "$CACHE" && apt-get download -q "$1" >>"$OUT/apt.log" 2>&1) || {
            apt_update
            (cd "$CACHE" && apt-get download -q "$1" >>"$OUT/apt.log" 2>&1) || return 1
        }
        deb=$(find "$CACHE" -maxdepth 1 -name "$1_*.deb" | head -n1)
    fi
    [ -n "$deb" ] && echo "$deb"
}
if [ ! -s "$CACHE/vmlinuz" ]; then
    KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    if [ -z "$KPKG" ]; then
        apt_update
        KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    fi
    [ -n "$KPKG" ] || die "cannot resolve linux-image-cloud-amd64 (apt sources?)"
    say "downloading kernel package $KPKG into $CACHE"
    kdeb=$(fetch_deb "$KPKG") || die "apt-get download $KPKG failed (see $OUT/apt.log)"
    mkdir -p "$OUT/build/kx"
    dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$OUT/build/kx" --wildcards './boot/vmlinuz-*' \
        || die "cannot extract the kernel from $kdeb"
    mv "$OUT"/build/kx/boot/vmlinuz-* "$CACHE/vmlinuz.tmp" && mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
    echo "$KPKG" >"$CACHE/vmlinuz.pkg"
    rm -rf "$OUT/build/kx" "$kdeb"
fi
if [ ! -x "$CACHE/busybox" ]; then
    say "downloading busybox-static into $CACHE"
    bdeb=$(fetch_deb busybox-static) || die "apt-get download busybox-static failed (see $OUT/apt.log)"
    mkdir -p "$OUT/build/bx"
    dpkg-deb --fsys-tarfile "$bdeb" | tar -x -C "$OUT/build/bx" ./bin/busybox \
        || die "cannot extract busybox from $bdeb"
    mv "$OUT/build/bx/bin/busybox" "$CACHE/busybox.tmp" && mv "$CACHE/busybox.tmp" "$CACHE/busybox"
    rm -rf "$OUT/build/bx" "$bdeb"
fi

# ---------------------------------------------------------------- initrds
make_initrd() {  # role output
    local role=$1 out=$2 ir=$OUT/build/initramfs-$1
    rm -rf "$ir"
    mkdir -p "$ir"/{bin,dev,proc,sys} || return 1
    cp "$CACHE/busybox" "$ir/bin/busybox" && ln -s busybox "$ir/bin/sh" || return 1
    mknod -m 600 "$ir/dev/console" c 5 1 2>/dev/null || true   # root only; /init copes
    cat >"$ir/init" <<EOF
#!/bin/sh
B=/bin/busybox
\$B mount -t proc proc /proc
\$B mount -t sysfs sysfs /sys
if [ ! -c /dev/console ]; then
    \$B mount -t devtmpfs devtmpfs /dev && exec </dev/console >/dev/console 2>&1
fi
echo "IRONBOOT-E2E-ROLE=$role"
echo "BOOT-MARKER-OK"
echo "CMDLINE: \$(\$B cat /proc/cmdline)"
echo "UPTIME: \$(\$B cut -d' ' -f1 /proc/uptime)"
\$B sync
\$B poweroff -f
EOF
    chmod 755 "$ir/init"
    (cd "$ir" && find . | cpio -o -H newc --quiet | gzip -9) >"$out" || return 1
    rm -rf "$ir"
}
make_initrd deploy "$OUT/build/deploy-initrd.img" || die "cannot build the deploy initrd"
make_initrd instance "$OUT/build/instance-initrd.img" || die "cannot build the instance initrd"

# ---------------------------------------------------------------- ironboot binary
if [ -n "${IRONBOOT_BIN:-}" ]; then
    IB=$IRONBOOT_BIN
else
    say "cargo build --bin ironboot"
    cargo build --quiet --bin ironboot >"$OUT/cargo-build.log" 2>&1 \
        || { cat "$OUT/cargo-build.log" >&2; die "cargo build failed"; }
    T=${CARGO_TARGET_DIR:-$ROOT/target}
    case "$T" in /*) ;; *) T=$ROOT/$T ;; esac
    IB=$T/debug/ironboot
fi
[ -x "$IB" ] || die "ironboot binary $IB not found"

# ---------------------------------------------------------------- Swift
if [ -z "${SWIFT_AIO_PROXY_URL:-}" ]; then
    SWIFT_DIR_OWN=$TD/swift
    if scripts/swift-aio.sh status "$SWIFT_DIR_OWN" >/dev/null 2>&1; then
        die "a Swift is already running in $SWIFT_DIR_OWN (scripts/test.sh?); export its env: eval \"\$(scripts/swift-aio.sh env $SWIFT_DIR_OWN)\""
    fi
    say "SWIFT_AIO_PROXY_URL is unset: starting Swift in $SWIFT_DIR_OWN"
    SWIFT_STARTED=1
    [ "${IRONBOOT_TEST_SKIP_APT:-0}" = 1 ] && export SWIFT_AIO_SKIP_APT=1
    SWIFT_AIO_VENV=${SWIFT_AIO_VENV:-$TD/venv} scripts/swift-aio.sh start "$SWIFT_DIR_OWN" >"$OUT/swift-start.log" 2>&1 \
        || { tail -n 30 "$OUT/swift-start.log" >&2; die "scripts/swift-aio.sh start failed"; }
    envtxt=$(scripts/swift-aio.sh env "$SWIFT_DIR_OWN") || die "scripts/swift-aio.sh env failed"
    eval "$envtxt"
fi
SWIFT_PROXY=${SWIFT_AIO_PROXY_URL%/}
SWIFT_AUTH=${SWIFT_AIO_AUTH_URL:-$SWIFT_PROXY/auth/v1.0}
SWIFT_USER=${SWIFT_AIO_USER:-test:tester}
SWIFT_KEY=${SWIFT_AIO_KEY:-testing}
PROXY_LOG=${SWIFT_AIO_PROXY_LOG:-}
if [ -z "$PROXY_LOG" ] && [ -n "${SWIFT_AIO_DIR:-}" ]; then PROXY_LOG=$SWIFT_AIO_DIR/log/proxy-server.log; fi
{ [ -n "$PROXY_LOG" ] && [ -f "$PROXY_LOG" ]; } \
    || die "Swift proxy log not found (SWIFT_AIO_PROXY_LOG=${SWIFT_AIO_PROXY_LOG:-unset}, SWIFT_AIO_DIR=${SWIFT_AIO_DIR:-unset})"
SWIFT_PORT=${SWIFT_PROXY##*:}
case "$SWIFT_PROXY" in
    http://127.0.0.1:*) ;;
    *) die "SWIFT_AIO_PROXY_URL must be http://127.0.0.1:PORT (the guest reaches it as 10.0.2.2:PORT), got $SWIFT_PROXY" ;;
esac

hdrs=$(curl -s -m 20 -D - -o /dev/null -H "X-Auth-User: $SWIFT_USER" -H "X-Auth-Key: $SWIFT_KEY" "$SWIFT_AUTH" | tr -d '\r') \
    || die "cannot reach Swift auth at $SWIFT_AUTH"
SWIFT_TOKEN=$(awk -F': ' 'tolower($1) == "x-auth-token" {print $2}' <<<"$hdrs")
SWIFT_STORAGE=$(awk -F': ' 'tolower($1) == "x-storage-url" {print $2}' <<<"$hdrs")
{ [ -n "$SWIFT_TOKEN" ] && [ -n "$SWIFT_STORAGE" ]; } || die "no token from $SWIFT_AUTH"
SWIFT_ACCOUNT=${SWIFT_STORAGE##*/}   # AUTH_test
case "$SWIFT_STORAGE" in "$SWIFT_PROXY/v1/$SWIFT_ACCOUNT") ;; *) die "unexpected storage URL $SWIFT_STORAGE" ;; esac

NONCE=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
TEMP_URL_KEY=e2e-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
CONT=ironboot-e2e-$NONCE
swift_req() {  # expected-status-regex method url [curl args...]
    local want=$1 m=$2 url=$3 st; shift 3
    st=$(curl -s -m 60 -o /dev/null -w '%{http_code}' -X "$m" -H "X-Auth-Token: $SWIFT_TOKEN" "$@" "$url")
    [[ $st =~ ^($want)$ ]] || { say "Swift $m $url -> $st"; return 1; }
}
# The key goes on the container, not the account: other users of a shared Swift keep
# the account's Temp-URL-Key; Swift's tempurl accepts either.
swift_req '201|202' PUT "$SWIFT_STORAGE/$CONT" -H "X-Container-Meta-Temp-URL-Key: $TEMP_URL_KEY" \
    || die "cannot create container $CONT"
swift_req 201 PUT "$SWIFT_STORAGE/$CONT/deploy/vmlinuz" -T "$CACHE/vmlinuz" || die "upload failed"
swift_req 201 PUT "$SWIFT_STORAGE/$CONT/deploy/initrd.img" -T "$OUT/build/deploy-initrd.img" || die "upload failed"
swift_req 201 PUT "$SWIFT_STORAGE/$CONT/instance/vmlinuz" -T "$CACHE/vmlinuz" || die "upload failed"
swift_req 201 PUT "$SWIFT_STORAGE/$CONT/instance/initrd.img" -T "$OUT/build/instance-initrd.img" || die "upload failed"
say "Swift $SWIFT_PROXY: container $SWIFT_ACCOUNT/$CONT with deploy/ and instance/ kernel+initrd (proxy log $PROXY_LOG)"

# ---------------------------------------------------------------- Glance (*-glance)
# The deploy kernel and initrd above become images of the REAL Glance of scripts/test.sh,
# whose store is this Swift.  Whatever is missing or fails here is GLANCE_ERR, and each
# *-glance scenario then FAILs with it (a missing service never skips); the others run.
GLANCE_WANTED=0
case " $SCENARIOS " in *" bios-glance "*|*" uefi-glance "*) GLANCE_WANTED=1 ;; esac
GLANCE_VARS=(IRONBOOT_TEST_KEYSTONE_URL IRONBOOT_TEST_KEYSTONE_USER IRONBOOT_TEST_KEYSTONE_PASSWORD
    IRONBOOT_TEST_KEYSTONE_PROJECT IRONBOOT_TEST_GLANCE_URL IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT)
GLANCE_CONT=${IRONBOOT_TEST_GLANCE_CONTAINER:-glance}
KS_DOMAIN=${IRONBOOT_TEST_KEYSTONE_DOMAIN:-Default}
GLANCE_ERR="" GLANCE_CONF=0 GLANCE_TOKEN="" GL_ID="" GL_ERR="" GL_KERNEL="" GL_RAMDISK="" GL_KEY_HOW=""
declare -A GL_SIZE   # image id -> bytes

json_field() {  # key: the value of a top-level key of the JSON document on stdin ('' if none)
    python3 -c 'import json, sys
v = json.load(sys.stdin).get(sys.argv[1])
print("" if v is None else v)' "$1" 2>/dev/null
}
glance_api() {  # glance-url body-file method path [curl args...] -> HTTP status on stdout
    local g=$1 f=$2 m=$3 p=$4; shift 4
    curl -s -m 120 -o "$f" -w '%{http_code}' -X "$m" -H "X-Auth-Token: $GLANCE_TOKEN" "$@" "${g%/}$p"
}
glance_image() {  # glance-url name disk+container-format file -> GL_ID (an active image), or GL_ERR
    local g=$1 name=$2 fmt=$3 file=$4 j=$OUT/build/glance.json st status="" size
    GL_ID="" GL_ERR=""
    st=$(glance_api "$g" "$j" POST /v2/images -H 'Content-Type: application/json' -d "{\"name\": \"$name\",
        \"disk_format\": \"$fmt\", \"container_format\": \"$fmt\", \"visibility\": \"private\"}")
    [ "$st" = 201 ] && GL_ID=$(json_field id <"$j") && [ -n "$GL_ID" ] \
        || { GL_ERR="Glance POST /v2/images ($name) -> $st: $(head -c 300 "$j")"; return 1; }
    GLANCE_IMAGES+=("${g%/}/v2/images/$GL_ID")
    st=$(glance_api "$g" "$j" PUT "/v2/images/$GL_ID/file" -H 'Content-Type: application/octet-stream' -T "$file")
    [ "$st" = 204 ] || { GL_ERR="Glance PUT /v2/images/$GL_ID/file ($file) -> $st: $(head -c 300 "$j")"; return 1; }
    for _ in $(seq 1 60); do
        st=$(glance_api "$g" "$j" GET "/v2/images/$GL_ID")
        status=$(json_field status <"$j")
        [ "$st:$status" = 200:active ] && break
        sleep 0.5
    done
    [ "$status" = active ] || { GL_ERR="Glance image $GL_ID ($name) is '$status' 30 s after its upload, not active"; return 1; }
    size=$(json_field size <"$j")
    GL_SIZE[$GL_ID]=$(stat -c %s "$file")
    [ "$size" = "${GL_SIZE[$GL_ID]}" ] \
        || { GL_ERR="Glance image $GL_ID ($name) has size $size, its file ${GL_SIZE[$GL_ID]}"; return 1; }
    say "Glance image $GL_ID: $name, $fmt, $size bytes, active"
}
container_key() {  # container -> its X-Container-Meta-Temp-URL-Key on stdout ('' if none)
    curl -s -m 20 -I -H "X-Auth-Token: $SWIFT_TOKEN" "$SWIFT_STORAGE/$1" | tr -d '\r' \
        | awk -F': ' 'tolower($1) == "x-container-meta-temp-url-key" {print $2}'
}
# ironboot signs every TempURL with one key, so Swift must accept TEMP_URL_KEY for the
# container Glance stores into too.  Not on the account: the Rust tests set its keys.  The
# key on container glance is shared by e2e runs against this Swift: an earlier run's is
# reused (and then set on $CONT as well), so concurrent runs agree; it is never removed.
glance_temp_url_key() {
    local k
    k=$(container_key "$GLANCE_CONT")
    if [ -z "$k" ]; then
        swift_req '204' POST "$SWIFT_STORAGE/$GLANCE_CONT" -H "X-Container-Meta-Temp-URL-Key: $TEMP_URL_KEY" \
            || { GLANCE_ERR="cannot set the Temp-URL-Key of container $GLANCE_CONT"; return 1; }
        k=$(container_key "$GLANCE_CONT")   # a concurrent run may have set its own first
        GL_KEY_HOW="set by this run"
    else
        GL_KEY_HOW="reused: set by an earlier run"
    fi
    [ -n "$k" ] || { GLANCE_ERR="container $GLANCE_CONT has no Temp-URL-Key after setting it"; return 1; }
    if [ "$k" != "$TEMP_URL_KEY" ]; then
        TEMP_URL_KEY=$k
        swift_req '204' POST "$SWIFT_STORAGE/$CONT" -H "X-Container-Meta-Temp-URL-Key: $TEMP_URL_KEY" \
            || { GLANCE_ERR="cannot set the Temp-URL-Key of container $CONT"; return 1; }
    fi
}
glance_setup() {  # -> GL_KERNEL, GL_RAMDISK, GLANCE_CONF=1 when ironboot can be configured; or GLANCE_ERR
    local v missing=()
    for v in "${GLANCE_VARS[@]}"; do [ -n "${!v:-}" ] || missing+=("$v"); done
    if [ "${#missing[@]}" != 0 ]; then
        GLANCE_ERR="${missing[*]} unset: no Keystone/Glance to test against (scripts/test.sh exports them)"
        return 1
    fi
    GLANCE_CONF=1
    [ "$IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT" = "$SWIFT_ACCOUNT" ] || {
        GLANCE_ERR="Glance stores into Swift account $IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT (IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT), $SWIFT_USER's is $SWIFT_ACCOUNT"
        return 1
    }
    [ "${IRONBOOT_TEST_GLANCE_SEED:-0}" = 0 ] || {
        GLANCE_ERR="IRONBOOT_TEST_GLANCE_SEED=$IRONBOOT_TEST_GLANCE_SEED: *-glance needs the seed-0 Glance (every image in $GLANCE_CONT)"
        return 1
    }
    GLANCE_TOKEN=$(keystone_token) || {
        GLANCE_ERR="Keystone at $IRONBOOT_TEST_KEYSTONE_URL gave no token to $IRONBOOT_TEST_KEYSTONE_USER (project $IRONBOOT_TEST_KEYSTONE_PROJECT)"
        return 1
    }
    glance_image "$IRONBOOT_TEST_GLANCE_URL" "ironboot-e2e-$NONCE-deploy-kernel" aki "$CACHE/vmlinuz" \
        || { GLANCE_ERR=$GL_ERR; return 1; }
    GL_KERNEL=$GL_ID
    glance_image "$IRONBOOT_TEST_GLANCE_URL" "ironboot-e2e-$NONCE-deploy-ramdisk" ari "$OUT/build/deploy-initrd.img" \
        || { GLANCE_ERR=$GL_ERR; return 1; }
    GL_RAMDISK=$GL_ID
    glance_temp_url_key || return 1
    say "Glance ${IRONBOOT_TEST_GLANCE_URL%/}: deploy kernel $GL_KERNEL, ramdisk $GL_RAMDISK in $SWIFT_ACCOUNT/$GLANCE_CONT; its Temp-URL-Key: $GL_KEY_HOW"
}
if [ "$GLANCE_WANTED" = 1 ] && ! glance_setup; then
    say "Glance setup failed, the *-glance scenarios will FAIL: $GLANCE_ERR"
fi

# ---------------------------------------------------------------- file-store Glance (*-cache)
# Cache mode: the same deploy kernel and initrd become images of the REAL Glance whose
# store is a local directory (IRONBOOT_TEST_GLANCE_FILE_URL).  ironboot downloads them
# through Glance's API into its master cache and serves them itself.  Whatever is missing
# or fails here is CACHE_ERR, and each *-cache scenario then FAILs with it (never skips).
CACHE_VARS=(IRONBOOT_TEST_KEYSTONE_URL IRONBOOT_TEST_KEYSTONE_USER IRONBOOT_TEST_KEYSTONE_PASSWORD
    IRONBOOT_TEST_KEYSTONE_PROJECT IRONBOOT_TEST_GLANCE_FILE_URL)
CACHE_ERR="" GC_KERNEL="" GC_RAMDISK=""
cache_glance_setup() {  # -> GC_KERNEL, GC_RAMDISK (active images); or CACHE_ERR
    local v missing=()
    for v in "${CACHE_VARS[@]}"; do [ -n "${!v:-}" ] || missing+=("$v"); done
    if [ "${#missing[@]}" != 0 ]; then
        CACHE_ERR="${missing[*]} unset: no Keystone/file-store Glance to test against (scripts/test.sh exports them)"
        return 1
    fi
    GLANCE_TOKEN=$(keystone_token) || {
        CACHE_ERR="Keystone at $IRONBOOT_TEST_KEYSTONE_URL gave no token to $IRONBOOT_TEST_KEYSTONE_USER (project $IRONBOOT_TEST_KEYSTONE_PROJECT)"
        return 1
    }
    glance_image "$IRONBOOT_TEST_GLANCE_FILE_URL" "ironboot-e2e-$NONCE-cache-kernel" aki "$CACHE/vmlinuz" \
        || { CACHE_ERR=$GL_ERR; return 1; }
    GC_KERNEL=$GL_ID
    glance_image "$IRONBOOT_TEST_GLANCE_FILE_URL" "ironboot-e2e-$NONCE-cache-ramdisk" ari "$OUT/build/deploy-initrd.img" \
        || { CACHE_ERR=$GL_ERR; return 1; }
    GC_RAMDISK=$GL_ID
    say "Glance ${IRONBOOT_TEST_GLANCE_FILE_URL%/} (file store): deploy kernel $GC_KERNEL, ramdisk $GC_RAMDISK"
}
if { [ -n "${NEED[cache]:-}" ] || [ -n "${NEED[takeover-cache]:-}" ]; } && ! cache_glance_setup; then
    say "file-store Glance setup failed, the *-cache scenarios will FAIL: $CACHE_ERR"
fi
CACHE_GLANCE_ERR=$CACHE_ERR   # bios-takeover-cache needs the images, not the cache instance

# ---------------------------------------------------------------- ironboot serve
# One `ironboot serve` per mode a scenario of this run needs, each with its own config,
# state dir (SQLite, http_root), ports and log, started and stopped by PID:
#   swift     $OUT/ironboot.conf: [ipxe] use_swift = true, scripts carry the TempURLs
#   redirect  $OUT/ironboot-redirect.conf: the same plus tempurl_redirect = true and
#             [deploy] http_url = http://10.0.2.2:<its boot port>
#   cache     $OUT/ironboot-cache.conf: use_swift = false, images from the file-store
#             Glance into $OUT/state-cache/master_images, served by its boot listener
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
USED_PORTS=" "
new_port() {  # var: a free port no instance of this run has yet
    local p i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        p=$(free_port) || return 1
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        USED_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    return 1
}
inst_alloc() {  # name -> INST_API, INST_BOOT (free ports), INST_CONF, INST_LOG, INST_STATE
    local n=$1 sfx="" a b
    [ "$n" = swift ] || sfx=-$n
    new_port a && new_port b || die "cannot find free ports"
    INST_API[$n]=$a INST_BOOT[$n]=$b INST_PID[$n]=""
    INST_CONF[$n]=$OUT/ironboot$sfx.conf INST_LOG[$n]=$OUT/ironboot$sfx.log INST_STATE[$n]=$OUT/state$sfx
    mkdir -p "${INST_STATE[$n]}/httpboot" || die "cannot create ${INST_STATE[$n]}"
}
conf_head() {  # name: [DEFAULT], [api], [httpboot] of its config
    cat <<EOF
# written by scripts/e2e-ipxe.sh ($1 mode)
[DEFAULT]
state_path = ${INST_STATE[$1]}
EOF
    [ -n "${INST_HOST[$1]:-}" ] && echo "host = ${INST_HOST[$1]}"
    cat <<EOF

[api]
host_ip = 127.0.0.1
port = ${INST_API[$1]}

[httpboot]
host_ip = 127.0.0.1
port = ${INST_BOOT[$1]}
EOF
}
conf_retries() {  # fail fast instead of retrying for minutes when a download breaks
    printf '%s\n' "# fail fast instead of retrying for minutes when a download breaks" \
        "download_attempts = 2" "retry_max_delay = 2"
}
conf_keystone() {  # [glance] options: read images as the Keystone user of the tests
    printf '%s\n' "$IRONBOOT_TEST_KEYSTONE_PASSWORD" >"$OUT/build/keystone-password"
    chmod 600 "$OUT/build/keystone-password"
    cat <<EOF
auth_type = password
auth_url = ${IRONBOOT_TEST_KEYSTONE_URL%/}
username = $IRONBOOT_TEST_KEYSTONE_USER
password_file = $OUT/build/keystone-password
project_name = $IRONBOOT_TEST_KEYSTONE_PROJECT
user_domain_name = $KS_DOMAIN
project_domain_name = $KS_DOMAIN
EOF
    [ -n "${IRONBOOT_TEST_KEYSTONE_REGION:-}" ] && echo "region_name = $IRONBOOT_TEST_KEYSTONE_REGION"
    return 0
}
write_swift_conf() {  # name redirect(0|1)
    local n=$1 redirect=$2
    conf_head "$n"
    cat <<EOF

[deploy]
http_root = ${INST_STATE[$n]}/httpboot
EOF
    [ "$redirect" = 1 ] && echo "http_url = http://10.0.2.2:${INST_BOOT[$n]}"
    cat <<EOF

[ipxe]
use_swift = true
EOF
    if [ "$redirect" = 1 ]; then
        echo "tempurl_redirect = true"
    elif [ "$n" = swift ]; then
        echo "fallback_script = fallback.ipxe"
    fi
    conf_retries
    cat <<EOF

[pxe]
kernel_append_params = console=ttyS0 panic=1 ironboot_e2e=$NONCE

[glance]
swift_endpoint_url = http://10.0.2.2:$SWIFT_PORT
swift_internal_endpoint_url = http://127.0.0.1:$SWIFT_PORT
swift_account = $SWIFT_ACCOUNT
swift_temp_url_key_file = $OUT/build/temp-url-key
EOF
    if [ "$n" = swift ] && [ "$GLANCE_CONF" = 1 ]; then
        # *-glance: image metadata from Glance as the Keystone user that uploaded them; the
        # objects are in $SWIFT_ACCOUNT (Glance's account, checked above)/$GLANCE_CONT, seed 0
        conf_keystone
        printf '%s\n' "swift_container = $GLANCE_CONT" "swift_store_multiple_containers_seed = 0"
    fi
}
write_cache_conf() {  # name
    local n=$1
    conf_head "$n"
    cat <<EOF

[deploy]
http_root = ${INST_STATE[$n]}/httpboot
http_url = http://10.0.2.2:${INST_BOOT[$n]}

[ipxe]
use_swift = false
EOF
    conf_retries
    cat <<EOF

[pxe]
kernel_append_params = console=ttyS0 panic=1 ironboot_e2e=$NONCE
tftp_master_path = ${INST_STATE[$n]}/master_images
EOF
    # bios-takeover-cache: every image is cached, even an http(s) one (the default, said)
    [ -n "${INST_SCOPED[$n]:-}" ] && echo "http_passthrough = false"
    cat <<EOF

[glance]
EOF
    conf_keystone
    echo "endpoint_override = ${IRONBOOT_TEST_GLANCE_FILE_URL%/}"
}
START_ERR=""
start_ironboot() {  # name: config check, then `serve` in the background until /healthz and
    # /boot.ipxe answer -> INST_PID; or START_ERR (1)
    local n=$1 sfx="" rc pid ready=0 api=http://127.0.0.1:${INST_API[$1]}
    [ "$n" = swift ] || sfx=-$n
    "$IB" --config "${INST_CONF[$n]}" config check >"$OUT/config-check$sfx.txt" 2>&1
    rc=$?
    if [ "$rc" != 0 ]; then
        START_ERR="ironboot config check of ${INST_CONF[$n]} failed (rc=$rc): $(grep -v '^ *$' "$OUT/config-check$sfx.txt" | tail -n 3 | tr '\n' ' ')"
        return 1
    fi
    NO_COLOR=1 "$IB" --config "${INST_CONF[$n]}" --log "$IB_LOG_FILTER" serve </dev/null >"${INST_LOG[$n]}" 2>&1 &
    pid=$!
    INST_PID[$n]=$pid
    IB_NAMES+=("$n")
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        if curl -sf -m 2 -o /dev/null "$api/healthz" \
            && curl -sf -m 2 -o "$OUT/boot$sfx.ipxe" "http://127.0.0.1:${INST_BOOT[$n]}/boot.ipxe"; then
            ready=1; break
        fi
        sleep 0.2
    done
    if [ "$ready" != 1 ]; then
        tail -n 30 "${INST_LOG[$n]}" >&2
        START_ERR="ironboot serve ($n mode) did not come up on 127.0.0.1:${INST_API[$n]} / :${INST_BOOT[$n]} (see ${INST_LOG[$n]})"
        return 1
    fi
    say "ironboot serve ($n mode) pid $pid: API $api, boot http://127.0.0.1:${INST_BOOT[$n]} (guest: http://10.0.2.2:${INST_BOOT[$n]}/boot.ipxe)"
}
IB_CUR="" BOOT_PORT=""
use_ironboot() {  # name: the instance the CLI, the metrics helpers and run_vm talk to
    IB_CUR=$1
    export IRONBOOT_URL=http://127.0.0.1:${INST_API[$1]:-0} IRONBOOT_CONFIG=${INST_CONF[$1]:-/dev/null}
    BOOT_PORT=${INST_BOOT[$1]:-0}   # unset: the instance did not start (its scenarios FAIL)
}

printf '%s\n' "$TEMP_URL_KEY" >"$OUT/build/temp-url-key"
chmod 600 "$OUT/build/temp-url-key"
unset IRONBOOT_TOKEN_FILE

ib() { "$IB" --log warn "$@"; }   # CLI client (IRONBOOT_URL, IRONBOOT_CONFIG exported)
ib_step() {  # description cmd...: run an ironboot CLI command, log its output, FAIL on error
    local d=$1 rc; shift
    { echo "\$ ironboot $*  # $IB_CUR mode"; ib "$@"; } >>"$OUT/cli.log" 2>&1
    rc=$?
    if [ "$rc" != 0 ]; then
        fail "$d: \`ironboot $*\` exited $rc (see $OUT/cli.log)"
        return 1
    fi
}
node_uuid() { ib node show "$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["uuid"])'; }
create_vm1() {  # node vm1 (mac $MAC) with the swift:// deploy and instance images -> VM1_UUID
    ib_step "create node vm1" node create --name vm1 --mac "$MAC" --boot-mode bios \
        --deploy-kernel "swift://$CONT/deploy/vmlinuz" --deploy-ramdisk "swift://$CONT/deploy/initrd.img" \
        --kernel "swift://$CONT/instance/vmlinuz" --ramdisk "swift://$CONT/instance/initrd.img" \
        --kernel-append-params "console=ttyS0 panic=1 role=instance ironboot_e2e_instance=$NONCE" \
        || die "cannot create node vm1 ($IB_CUR mode)"
    VM1_UUID=$(node_uuid vm1) || die "cannot read the uuid of node vm1 ($IB_CUR mode)"
    say "node vm1 = $VM1_UUID, mac $MAC ($IB_CUR mode)"
}

VM1_UUID="" NODE_UUID="" REDIRECT_UUID="" CACHE_UUID=""
if [ -n "${NEED[swift]:-}" ]; then
    inst_alloc swift
    write_swift_conf swift 0 >"${INST_CONF[swift]}"
    cat >"${INST_STATE[swift]}/httpboot/fallback.ipxe" <<'EOF'
#!ipxe
echo IRONBOOT-E2E-FALLBACK ${mac:hexhyp}
sleep 2
reboot
EOF
    cp "${INST_STATE[swift]}/httpboot/fallback.ipxe" "$OUT/fallback.ipxe"
    start_ironboot swift || die "$START_ERR"
    use_ironboot swift
    create_vm1
    NODE_UUID=$VM1_UUID
    if [ "$GLANCE_WANTED" = 1 ] && [ -z "$GLANCE_ERR" ]; then
        # driver_info holds only the two Glance images, as a bare UUID and as glance://UUID
        if ib_step "create node vm-glance" node create --name vm-glance --mac "$MAC_GLANCE" --boot-mode bios \
            --deploy-kernel "$GL_KERNEL" --deploy-ramdisk "glance://$GL_RAMDISK"; then
            say "node vm-glance, mac $MAC_GLANCE: deploy_kernel=$GL_KERNEL deploy_ramdisk=glance://$GL_RAMDISK"
        else
            GLANCE_ERR="cannot create node vm-glance (see $OUT/cli.log)"
        fi
    fi
fi
if [ -n "${NEED[redirect]:-}" ]; then
    inst_alloc redirect
    write_swift_conf redirect 1 >"${INST_CONF[redirect]}"
    start_ironboot redirect || die "$START_ERR"
    use_ironboot redirect
    create_vm1
    REDIRECT_UUID=$VM1_UUID
fi
if [ -n "${NEED[cache]:-}" ] && [ -z "$CACHE_ERR" ]; then
    inst_alloc cache
    write_cache_conf cache >"${INST_CONF[cache]}"
    if ! start_ironboot cache; then
        CACHE_ERR=$START_ERR
    else
        use_ironboot cache
        # driver_info holds only the two Glance images, as a bare UUID and as glance://UUID
        if ib_step "create node vm-cache" node create --name vm-cache --mac "$MAC_CACHE" --boot-mode bios \
            --deploy-kernel "$GC_KERNEL" --deploy-ramdisk "glance://$GC_RAMDISK" \
            && CACHE_UUID=$(node_uuid vm-cache); then
            say "node vm-cache = $CACHE_UUID, mac $MAC_CACHE: deploy_kernel=$GC_KERNEL deploy_ramdisk=glance://$GC_RAMDISK"
        else
            CACHE_ERR="cannot create node vm-cache (see $OUT/cli.log)"
        fi
    fi
    [ -n "$CACHE_ERR" ] && say "the *-cache scenarios will FAIL: $CACHE_ERR"
fi

# ---------------------------------------------------------------- helpers for the runs
metric() {  # kind result -> value of ironboot_script_renders_total (0 when absent)
    curl -s -m 5 "$IRONBOOT_URL/metrics" | awk -v k="kind=\"$1\"" -v r="result=\"$2\"" '
        /^ironboot_script_renders_total\{/ && index($0, k) && index($0, r) { v = $NF }
        END { print (v == "" ? 0 : v + 0) }'
}
METRIC_KEYS=(master:ok node:ok node:not_found fallback:ok)
declare -A M0 M1
metrics_snapshot() {  # array name
    local k
    for k in "${METRIC_KEYS[@]}"; do
        eval "$1[\$k]=\$(metric \"\${k%%:*}\" \"\${k#*:}\")"
    done
}
metric_delta() { echo $(( ${M1[$1]} - ${M0[$1]} )); }

log_size() { stat -c %s "$PROXY_LOG" 2>/dev/null || echo 0; }
log_since() { tail -c +"$(( $1 + 1 ))" "$PROXY_LOG" 2>/dev/null; }
re_escape() { sed 's/[][\.*^$+?(){}|/]/\\&/g' <<<"$1"; }
# A proxy log line of a TempURL GET, e.g.
#   proxy-server: 127.0.0.1 127.0.0.1 26/Nov/2026/01/12/55 GET
#   /v1/AUTH_test/c/deploy/vmlinuz%3Ftemp_url_sig%3D0123456789abcdef...%26temp_url_expires%3D1795655575
#   HTTP/1.0 200 - iPXE/1.0.0%2Bgit-20190125.36a4c85-5.1 ...
tempurl_re() {  # method container/object
    printf ' %s %s%%3F[^ ]*temp_url_sig%%3D[0-9a-f]+[^ ]* HTTP/1\\.[01] 200 ' \
        "$1" "$(re_escape "/v1/$SWIFT_ACCOUNT/$2")"
}
wait_swift_log() {  # offset method container/object -> the matching log line(s) on stdout; polls up to 5 s
    local off=$1 re i out
    re=$(tempurl_re "$2" "$3")
    for i in $(seq 1 25); do
        out=$(log_since "$off" | grep -E -- "$re")
        [ -n "$out" ] && { echo "$out"; return 0; }
        sleep 0.2
    done
    return 1
}

swift_logged() { wait_swift_log "$@" >/dev/null; }

clean_serial() {  # raw -> text without ANSI sequences, CRs and backspaces
    sed -e 's/\x1b\[[0-9;?=]*[A-Za-z]//g' -e 's/\x1b[c78]//g' -e 's/\x1b[()][0-9A-Za-z]//g' "$1" | tr -d '\r\b'
}

VM_RC="" VM_WALL="" VM_END="" VM_T_KERNEL="" VM_T_MARKER=""
run_vm() {  # mode mac tag [stop-regex [grace-regex]]
    # -> VM_RC, VM_WALL, VM_END: exited (QEMU exited by itself), stopped (stop-regex
    # appeared on the serial port), grace-expired (LOCAL_GRACE s after grace-regex),
    # gave-up (ironboot's script or the kernel gave up), timeout (VM_TIMEOUT);
    # VM_T_KERNEL, VM_T_MARKER: seconds from QEMU's start until the kernel's first console
    # line ("Linux version") and BOOT-MARKER-OK showed up on the serial port ('' if never;
    # polled every 0.25 s, and when QEMU exited before a poll saw them: its exit time)
    local mode=$1 mac=$2 tag=$3 stop=${4:-} grace=${5:-} fw serial=$OUT/$3.serial.log t0 t seen="" text tk="" tm=""
    case "$mode" in
        bios) fw=(-machine "pc,accel=$ACCEL,graphics=off") ;;
        uefi) fw=(-machine "q35,accel=$ACCEL,graphics=off" -bios "$OVMF") ;;
    esac
    : >"$serial"
    # graphics=off: SeaBIOS copies BIOS and iPXE text to the serial port.  The NIC's
    # default ROM (efi-e1000.rom from ipxe-qemu) is Debian's BIOS+UEFI iPXE.
    # -no-reboot: poweroff, panic and iPXE's reboot all make QEMU exit.
    "$QEMU" "${fw[@]}" -m "$MEM" -nodefaults -display none -no-reboot \
        -serial "file:$serial" -monitor none \
        -netdev "user,id=n0,bootfile=http://10.0.2.2:$BOOT_PORT/boot.ipxe" \
        -device "$NIC,netdev=n0,mac=$mac,bootindex=1" \
        </dev/null >"$OUT/$tag.qemu.log" 2>&1 &
    QEMU_PID=$!
    t0=$(now); VM_END=exited
    while kill -0 "$QEMU_PID" 2>/dev/null; do
        t=$(now)
        text=$(clean_serial "$serial")
        [ -z "$tk" ] && grep -Fq 'Linux version' <<<"$text" && tk=$t
        [ -z "$tm" ] && grep -Fq BOOT-MARKER-OK <<<"$text" && tm=$t
        if [ -n "$stop" ] && grep -Eq -- "$stop" <<<"$text"; then VM_END=stopped; break; fi
        if [ -n "$grace" ] && [ -z "$seen" ] && grep -Eq -- "$grace" <<<"$text"; then seen=$t; fi
        if [ -n "$seen" ] && awk -v a="$seen" -v b="$t" -v m="$LOCAL_GRACE" 'BEGIN{exit !(b - a > m)}'; then
            VM_END='grace-expired'; break
        fi
        if grep -Eq 'could not boot its images|nothing to boot, rebooting|Kernel panic' <<<"$text"; then
            say "$tag: the guest gave up (see $serial), killing qemu $QEMU_PID"
            VM_END=gave-up; break
        fi
        if awk -v a="$t0" -v b="$t" -v m="$VM_TIMEOUT" 'BEGIN{exit !(b - a > m)}'; then
            say "$tag: no result after ${VM_TIMEOUT}s, killing qemu $QEMU_PID"
            VM_END=timeout; break
        fi
        sleep 0.25
    done
    if [ "$VM_END" = exited ]; then
        wait "$QEMU_PID" 2>/dev/null; VM_RC=$?
    else
        kill_pid "$QEMU_PID" qemu 5; VM_RC=killed
    fi
    QEMU_PID=""
    t=$(now)
    VM_WALL=$(secs "$t0" "$t")
    clean_serial "$serial" >"$OUT/$tag.serial.txt"
    [ -z "$tk" ] && grep -Fq 'Linux version' "$OUT/$tag.serial.txt" && tk=$t
    [ -z "$tm" ] && grep -Fq BOOT-MARKER-OK "$OUT/$tag.serial.txt" && tm=$t
    VM_T_KERNEL="" VM_T_MARKER=""
    [ -n "$tk" ] && VM_T_KERNEL=$(secs "$t0" "$tk")
    [ -n "$tm" ] && VM_T_MARKER=$(secs "$t0" "$tm")
    TIMINGS+=("$(printf '%-16s %6ss  (%s, qemu rc %s; kernel at %ss, marker at %ss)' "$tag" "$VM_WALL" \
        "$VM_END" "$VM_RC" "${VM_T_KERNEL:--}" "${VM_T_MARKER:--}")")
    if [ -n "${E2E_TIMING_FILE:-}" ]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${tag%.r*}" "$ROUND" "$VM_END" "$VM_WALL" \
            "${VM_T_KERNEL:--}" "${VM_T_MARKER:--}" "$tag" >>"$E2E_TIMING_FILE"
    fi
    say "$tag: VM finished in ${VM_WALL}s ($VM_END; kernel at ${VM_T_KERNEL:--}s, marker at ${VM_T_MARKER:--}s)"
}

SER="" CMDLINE=""
serial_has() { grep -Fq -- "$1" <<<"$SER"; }
serial_lacks() { ! serial_has "$1"; }
cmdline_has() { [[ " $CMDLINE " == *" $1 "* ]]; }
cmdline_lacks() { ! cmdline_has "$1"; }
lines_in_order() {  # text ERE: a line matching ERE $2 comes after the first line containing text $1
    awk -v a="$1" -v b="$2" 'index($0, a) && !na { na = NR } $0 ~ b && na && NR > na { ok = 1 } END { exit !ok }' <<<"$SER"
}
no_swift_get() {  # offset path-prefix under the container ('' = anything)
    ! log_since "$1" | grep -Fq -- " GET /v1/$SWIFT_ACCOUNT/$CONT/$2"
}

# common checks of a run that must boot our kernel+initrd from Swift
check_linux_boot() {  # role kernel-name initrd-name logoff mac kernel-object initrd-object
    # (objects as container/object); the proxy log lines of iPXE's GETs -> GOT_LINE[object]
    local role=$1 kname=$2 iname=$3 off=$4 mac=$5 line o; shift 5
    GOT_LINE=()
    check "QEMU exited on its own after poweroff (${VM_WALL}s, $VM_END, rc $VM_RC)" \
        test "$VM_END:$VM_RC" = exited:0 || serial_tail
    check "serial: BOOT-MARKER-OK" serial_has BOOT-MARKER-OK
    check "serial: IRONBOOT-E2E-ROLE=$role" grep -Eq "^IRONBOOT-E2E-ROLE=$role\$" <<<"$SER"
    CMDLINE=$(grep -m1 '^CMDLINE: ' <<<"$SER" | sed 's/^CMDLINE: //; s/[[:space:]]*$//')
    echo "  INFO cmdline: $CMDLINE" | tee -a "$OUT/checks.txt"
    check "cmdline has BOOTIF=01-$(hexhyp "$mac")" cmdline_has "BOOTIF=01-$(hexhyp "$mac")"
    check "cmdline has initrd=$iname" cmdline_has "initrd=$iname"
    check "serial: iPXE chained pxelinux.cfg/$(hexhyp "$mac")" serial_has "trying pxelinux.cfg/$(hexhyp "$mac")"
    check "serial: iPXE downloaded $kname and $iname" serial_has "downloading $kname and $iname"
    for o in "$@"; do
        if line=$(wait_swift_log "$off" GET "$o"); then
            pass "Swift proxy log: TempURL GET 200 of $o"
            echo "  INFO $(head -n1 <<<"$line" | cut -c1-220)" | tee -a "$OUT/checks.txt"
            check "that GET came from iPXE (User-Agent)" grep -q ' iPXE/' <<<"$line"
            GOT_LINE[$o]=$(grep -m1 ' iPXE/' <<<"$line")
        else
            fail "Swift proxy log: no TempURL GET 200 of $o with temp_url_sig since the VM started"
        fi
    done
}
declare -A GOT_LINE

check_renders() {  # expected deltas: master node_ok node_not_found fallback (-: not checked)
    local want=("$@") i k d
    metrics_snapshot M1
    for i in "${!METRIC_KEYS[@]}"; do
        k=${METRIC_KEYS[$i]}; [ "${want[$i]}" = - ] && continue
        d=$(metric_delta "$k")
        check "ironboot_script_renders_total{kind=${k%%:*},result=${k#*:}} +$d (want >= ${want[$i]})" \
            test "$d" -ge "${want[$i]}"
    done
}

begin() {  # tag
    CUR=$1
    echo | tee -a "$OUT/checks.txt"
    say "==== $1 ====" | tee -a "$OUT/checks.txt"
}
prepare() {  # node boot-mode target [container/object the prepare HEAD-checks ...]
    local node=$1 mode=$2 target=$3 off o; shift 3
    ib_step "set boot mode $mode" node update "$node" --boot-mode "$mode" || return 1
    off=$(log_size)
    ib_step "prepare target $target" node boot "$node" --target "$target" || return 1
    pass "\`ironboot node boot $node --target $target\` succeeded"
    for o in "$@"; do
        check "the prepare HEAD-checked $o through a TempURL (Swift proxy log)" \
            swift_logged "$off" HEAD "$o"
    done
    ib node ipxe "$node" >"$OUT/$CUR.node.ipxe" 2>&1
}

# ---------------------------------------------------------------- scenarios
sc_deploy() {  # mode
    local mode=$1 tag=$1-deploy$RSUF off
    begin "$tag"
    prepare vm1 "$mode" deploy "$CONT/deploy/vmlinuz" "$CONT/deploy/initrd.img" || return
    off=$(log_size); metrics_snapshot M0
    say "booting $mode VM, mac $MAC"
    run_vm "$mode" "$MAC" "$tag"
    SER=$(cat "$OUT/$tag.serial.txt")
    check_linux_boot deploy deploy_kernel deploy_ramdisk "$off" "$MAC" "$CONT/deploy/vmlinuz" "$CONT/deploy/initrd.img"
    check "cmdline has [pxe] kernel_append_params (ironboot_e2e=$NONCE)" cmdline_has "ironboot_e2e=$NONCE"
    check "cmdline has console=ttyS0" cmdline_has console=ttyS0
    check_renders 1 1 - -
}

sc_fallback() {  # mode
    local mode=$1 tag=$1-fallback$RSUF off
    begin "$tag"
    off=$(log_size); metrics_snapshot M0
    say "booting $mode VM, unknown mac $MAC_UNKNOWN"
    run_vm "$mode" "$MAC_UNKNOWN" "$tag"
    SER=$(cat "$OUT/$tag.serial.txt")
    check "QEMU exited on its own after the fallback's reboot (${VM_WALL}s, $VM_END, rc $VM_RC)" \
        test "$VM_END:$VM_RC" = exited:0 || serial_tail
    check "serial: iPXE tried pxelinux.cfg/$(hexhyp "$MAC_UNKNOWN")" serial_has "trying pxelinux.cfg/$(hexhyp "$MAC_UNKNOWN")"
    check "serial: ironboot's master script found no boot configuration" serial_has "no boot configuration for"
    check "serial: fallback marker IRONBOOT-E2E-FALLBACK $(hexhyp "$MAC_UNKNOWN")" \
        serial_has "IRONBOOT-E2E-FALLBACK $(hexhyp "$MAC_UNKNOWN")"
    check "no kernel booted" serial_lacks BOOT-MARKER-OK
    check "no Swift GET of $CONT/* during this run" no_swift_get "$off" ""
    check_renders 1 0 1 1
}

sc_instance() {  # mode
    local mode=$1 tag=$1-instance$RSUF off
    begin "$tag"
    prepare vm1 "$mode" instance "$CONT/instance/vmlinuz" "$CONT/instance/initrd.img" || return
    off=$(log_size); metrics_snapshot M0
    say "booting $mode VM, mac $MAC"
    run_vm "$mode" "$MAC" "$tag"
    SER=$(cat "$OUT/$tag.serial.txt")
    check_linux_boot instance kernel ramdisk "$off" "$MAC" "$CONT/instance/vmlinuz" "$CONT/instance/initrd.img"
    check "cmdline has the node's kernel_append_params (role=instance ironboot_e2e_instance=$NONCE)" \
        cmdline_has "role=instance ironboot_e2e_instance=$NONCE"
    check "cmdline does not have [pxe] kernel_append_params (ironboot_e2e=$NONCE)" \
        cmdline_lacks "ironboot_e2e=$NONCE"
    check "no Swift GET of $CONT/deploy/* during this run" no_swift_get "$off" deploy/
    check_renders 1 1 - -
}

sc_local() {  # mode
    local mode=$1 tag=$1-local$RSUF off stop what
    begin "$tag"
    prepare vm1 "$mode" local || return
    off=$(log_size); metrics_snapshot M0
    say "booting $mode VM, mac $MAC (expecting an exit to the firmware)"
    # Once iPXE has exited, SeaBIOS tries its other devices and prints "No bootable
    # device" (then retries after 60 s); OVMF reports the iPXE boot option as failed and
    # moves on to PXE/HTTP boot and its shell.  Stop at that line; without it, stop
    # LOCAL_GRACE s after ironboot's line.
    if [ "$mode" = bios ]; then
        stop='No bootable device' what='SeaBIOS printed "No bootable device"'
    else
        stop='BdsDxe: failed to load Boot' what='OVMF moved on to its next boot option (BdsDxe)'
    fi
    run_vm "$mode" "$MAC" "$tag" "$stop" 'boots from its local disk'
    SER=$(cat "$OUT/$tag.serial.txt")
    check "serial: ironboot's local-boot line (ironboot: $NODE_UUID boots from its local disk)" \
        serial_has "ironboot: $NODE_UUID boots from its local disk"
    if [ "$mode" = bios ]; then
        check "serial: iPXE tried sanboot --drive 0x80 and it failed (no disk)" \
            serial_has "Boot from SAN device 0x80 failed"
    else
        check "serial: no sanboot under UEFI" serial_lacks "Booting from SAN"
    fi
    check "iPXE exited to the firmware: $what after ironboot's line (${VM_WALL}s, $VM_END)" \
        lines_in_order "boots from its local disk" "$stop" || serial_tail
    check "no kernel booted" serial_lacks BOOT-MARKER-OK
    check "no Swift GET of $CONT/* during this run" no_swift_get "$off" ""
    check_renders 1 1 - -
}

# Glance images: stored by Glance in Swift, booted by iPXE straight from Swift
node_has_only_glance_refs() {  # node kernel-id ramdisk-id: driver_info is the two Glance refs
    # (deploy_kernel=<id>, deploy_ramdisk=glance://<id>) and nothing else
    ib node show "$1" --json | python3 -c 'import json, sys
n = json.load(sys.stdin)
di, ii = n.get("driver_info") or {}, n.get("instance_info") or {}
print("  INFO %s driver_info %s, instance_info %s" % (sys.argv[1], json.dumps(di, sort_keys=True), json.dumps(ii, sort_keys=True)))
want = {"deploy_kernel": sys.argv[2], "deploy_ramdisk": "glance://" + sys.argv[3]}
sys.exit(0 if di == want and "kernel" not in ii and "ramdisk" not in ii else 1)' "$@" \
        | tee -a "$OUT/checks.txt"
}
SEG_MANIFEST="" SEG_LEN="" SEG_N=0 SEG_BYTES=0
glance_object() {  # image id -> SEG_MANIFEST, SEG_LEN: the object's; SEG_N, SEG_BYTES: its segments'
    local id=$1 hdrs
    hdrs=$(curl -s -m 20 -I -H "X-Auth-Token: $SWIFT_TOKEN" "$SWIFT_STORAGE/$GLANCE_CONT/$id" | tr -d '\r')
    SEG_MANIFEST=$(awk -F': ' 'tolower($1) == "x-object-manifest" {print $2}' <<<"$hdrs")
    SEG_LEN=$(awk -F': ' 'tolower($1) == "content-length" {print $2}' <<<"$hdrs")
    read -r SEG_N SEG_BYTES < <(curl -s -m 20 -H "X-Auth-Token: $SWIFT_TOKEN" \
        "$SWIFT_STORAGE/$GLANCE_CONT?format=json&prefix=$id-" \
        | python3 -c 'import json, sys; l = json.load(sys.stdin); print(len(l), sum(o["bytes"] for o in l))' 2>/dev/null \
        || echo 0 0)
}
script_fetches_from_swift() {  # the node's script takes both images from Swift, nothing from ironboot
    local f=$OUT/$CUR.node.ipxe base
    base=$(re_escape "http://10.0.2.2:$SWIFT_PORT/v1/$SWIFT_ACCOUNT/$GLANCE_CONT")
    grep -Eq "^kernel --name deploy_kernel $base/$GL_KERNEL\?temp_url_sig=[0-9a-f]+&temp_url_expires=[0-9]+ " "$f" \
        && grep -Eq "^initrd --name deploy_ramdisk $base/$GL_RAMDISK\?temp_url_sig=[0-9a-f]+&temp_url_expires=[0-9]+( |\$)" "$f" \
        && ! grep -q "10\.0\.2\.2:$BOOT_PORT" "$f"
}
log_field_after_proto() {  # n: the n-th field after HTTP/1.x of each proxy log line on stdin
    # (1 status, 2 referer, 3 user agent, 4 token, 5 bytes received, 6 bytes sent, 7 etag,
    # 8 transaction id)
    awk -v n="$1" '{ for (i = 1; i <= NF; i++) if ($i ~ /^HTTP\/1\.[01]$/) { print $(i + n); next } }'
}
segment_gets() {  # offset image-id transaction-id -> "count bytes" of the 200 GETs of its
    # segments since offset that the proxy's DLO middleware made within that transaction
    log_since "$1" | grep -F -- " $3 " \
        | grep -E -- " GET $(re_escape "/v1/$SWIFT_ACCOUNT/$GLANCE_CONT/$2")-[0-9]+(%3F[^ ]*)? HTTP/1\.[01] 200 .* DLO " \
        | log_field_after_proto 6 | awk '{ n++; b += $1 } END { print n + 0, b + 0 }'
}
boot_requests() {  # -> "route status count" lines of ironboot_http_requests_total{listener="boot"}
    curl -s -m 5 "$IRONBOOT_URL/metrics" | awk '/^ironboot_http_requests_total\{/ && index($0, "listener=\"boot\"") {
        r = $0; sub(/.*route="/, "", r); sub(/".*/, "", r)
        st = $0; sub(/.*status="/, "", st); sub(/".*/, "", st)
        print r, st, $NF }'
}
only_scripts_served() {  # before-file after-file: each boot-listener request since was a script
    awk 'NR == FNR { b[$1 " " $2] = $3; next } $3 - b[$1 " " $2] > 0 {
            d = $3 - b[$1 " " $2]; printf "  INFO boot listener: %s %s +%d\n", $1, $2, d
            if ($1 == "/boot.ipxe" && $2 == 200) m = 1
            else if ($1 == "/pxelinux.cfg/{mac}" && $2 == 200) n = 1
            else bad = 1 }
         END { exit !(m && n && !bad) }' "$1" "$2" | tee -a "$OUT/checks.txt"
}

sc_glance() {  # mode
    local mode=$1 tag=$1-glance$RSUF off id o line sent tx n b ok
    begin "$tag"
    if [ -n "$GLANCE_ERR" ]; then
        fail "Glance images: $GLANCE_ERR"
        return
    fi
    check "node vm-glance: driver_info is only deploy_kernel=$GL_KERNEL and deploy_ramdisk=glance://$GL_RAMDISK" \
        node_has_only_glance_refs vm-glance "$GL_KERNEL" "$GL_RAMDISK"
    for id in "$GL_KERNEL" "$GL_RAMDISK"; do
        glance_object "$id"
        ok=0
        [ "$SEG_MANIFEST:$SEG_LEN:$SEG_BYTES" = "$GLANCE_CONT/$id-:${GL_SIZE[$id]}:${GL_SIZE[$id]}" ] \
            && [ "$SEG_N" -ge 2 ] && ok=1
        check "Swift: Glance stored image $id as $GLANCE_CONT/$id, ${SEG_LEN:-?} bytes: a manifest (X-Object-Manifest ${SEG_MANIFEST:-none}) of $SEG_N segments, $SEG_BYTES bytes" \
            test "$ok" = 1
    done
    prepare vm-glance "$mode" deploy "$GLANCE_CONT/$GL_KERNEL" "$GLANCE_CONT/$GL_RAMDISK" || return
    check "the node's script fetches both images from Swift (http://10.0.2.2:$SWIFT_PORT/v1/$SWIFT_ACCOUNT/$GLANCE_CONT/<uuid>?temp_url_sig=...), nothing from ironboot (:$BOOT_PORT)" \
        script_fetches_from_swift
    off=$(log_size); metrics_snapshot M0; boot_requests >"$OUT/build/$tag.boot0"
    say "booting $mode VM, mac $MAC_GLANCE"
    run_vm "$mode" "$MAC_GLANCE" "$tag"
    SER=$(cat "$OUT/$tag.serial.txt")
    check_linux_boot deploy deploy_kernel deploy_ramdisk "$off" "$MAC_GLANCE" "$GLANCE_CONT/$GL_KERNEL" "$GLANCE_CONT/$GL_RAMDISK"
    check "cmdline has [pxe] kernel_append_params (ironboot_e2e=$NONCE)" cmdline_has "ironboot_e2e=$NONCE"
    for id in "$GL_KERNEL" "$GL_RAMDISK"; do
        o=$GLANCE_CONT/$id
        line=${GOT_LINE[$o]:-}
        [ -n "$line" ] || continue
        sent=$(log_field_after_proto 6 <<<"$line")
        tx=$(log_field_after_proto 8 <<<"$line")
        check "Swift sent iPXE all of image $id in that GET: $sent bytes (want ${GL_SIZE[$id]})" \
            test "$sent" = "${GL_SIZE[$id]}"
        read -r n b < <(segment_gets "$off" "$id" "$tx")
        ok=0; [ "$n" -ge 2 ] && [ "$b" = "${GL_SIZE[$id]}" ] && ok=1
        check "in that GET ($tx) Swift's proxy read the manifest's segments: $n segment GETs by DLO, $b bytes" \
            test "$ok" = 1
    done
    boot_requests >"$OUT/build/$tag.boot1"
    check "ironboot's boot listener answered only scripts during the boot, 200 (ironboot_http_requests_total{listener=boot}): no image byte went through ironboot" \
        only_scripts_served "$OUT/build/$tag.boot0" "$OUT/build/$tag.boot1"
    check_renders 1 1 - -
}

# Swift mode with [ipxe] tempurl_redirect: the script names ironboot, which answers 302
script_points_at_ironboot() {  # uuid: the node's script takes both images from
    # http://10.0.2.2:$BOOT_PORT/<uuid>/deploy_kernel|deploy_ramdisk: no signature, no Swift URL
    local f=$OUT/$CUR.node.ipxe base
    base=$(re_escape "http://10.0.2.2:$BOOT_PORT/$1")
    grep -Eq "^kernel --name deploy_kernel( --timeout [0-9]+)? $base/deploy_kernel " "$f" \
        && grep -Eq "^initrd --name deploy_ramdisk( --timeout [0-9]+)? $base/deploy_ramdisk( |\$)" "$f" \
        && ! grep -q "10\.0\.2\.2:$SWIFT_PORT" "$f"
}
REDIRECT_EXPIRES=""
redirect_answer() {  # label container/object: a GET (not followed) of /<uuid>/<label> on the boot
    # listener is a 302, Cache-Control no-store, to a TempURL of the object signed now
    local hdrs st loc cc re t
    t=$(date +%s)
    hdrs=$(curl -s -m 10 -o /dev/null -D - "http://127.0.0.1:$BOOT_PORT/$REDIRECT_UUID/$1" | tr -d '\r')
    st=$(awk 'NR == 1 {print $2}' <<<"$hdrs")
    loc=$(awk -F': ' 'tolower($1) == "location" {print $2}' <<<"$hdrs")
    cc=$(awk -F': ' 'tolower($1) == "cache-control" {print $2}' <<<"$hdrs")
    echo "  INFO GET /$REDIRECT_UUID/$1 -> $st, Location: $loc, Cache-Control: $cc" | tee -a "$OUT/checks.txt"
    re="^$(re_escape "http://10.0.2.2:$SWIFT_PORT/v1/$SWIFT_ACCOUNT/$2")\\?temp_url_sig=[0-9a-f]+&temp_url_expires=([0-9]+)\$"
    [ "$st" = 302 ] && [ "$cc" = no-store ] && [[ $loc =~ $re ]] || return 1
    REDIRECT_EXPIRES=${BASH_REMATCH[1]}
    # [glance] swift_temp_url_duration (1200 s) from the moment of the request
    [ "$REDIRECT_EXPIRES" -ge $((t + 1200)) ] && [ "$REDIRECT_EXPIRES" -le $(($(date +%s) + 1200)) ]
}
metric_tempurls() {  # ironboot_tempurls_minted_total of the current instance
    curl -s -m 5 "$IRONBOOT_URL/metrics" | awk '/^ironboot_tempurls_minted_total / { v = $NF } END { print v + 0 }'
}
boot_served() {  # before-file after-file image-status image-count: since before, the boot
    # listener answered /boot.ipxe and /pxelinux.cfg/{mac} (200), exactly image-count
    # requests of /{node}/{label} with image-status, and nothing else
    awk -v st="$3" -v want="$4" 'NR == FNR { b[$1 " " $2] = $3; next } $3 - b[$1 " " $2] > 0 {
            d = $3 - b[$1 " " $2]; printf "  INFO boot listener: %s %s +%d\n", $1, $2, d
            if ($1 == "/boot.ipxe" && $2 == 200) m = 1
            else if ($1 == "/pxelinux.cfg/{mac}" && $2 == 200) n = 1
            else if ($1 == "/{node}/{label}" && $2 == st) i = d
            else bad = 1 }
         END { exit !(m && n && i == want && !bad) }' "$1" "$2" | tee -a "$OUT/checks.txt"
}

sc_redirect() {  # mode
    local mode=$1 tag=$1-redirect$RSUF off t0 t1 o
    begin "$tag"
    prepare vm1 "$mode" deploy "$CONT/deploy/vmlinuz" "$CONT/deploy/initrd.img" || return
    check "the node's script takes deploy_kernel and deploy_ramdisk from ironboot (http://10.0.2.2:$BOOT_PORT/$REDIRECT_UUID/<label>), nothing from Swift" \
        script_points_at_ironboot "$REDIRECT_UUID"
    check "the node's script holds no signature (no temp_url_sig)" not_in_file temp_url_sig "$OUT/$CUR.node.ipxe"
    check "GET /$REDIRECT_UUID/deploy_kernel: 302, no-store, to a TempURL of $CONT/deploy/vmlinuz signed now (expires = now + 1200 s)" \
        redirect_answer deploy_kernel "$CONT/deploy/vmlinuz"
    check "GET /$REDIRECT_UUID/deploy_ramdisk: 302, no-store, to a TempURL of $CONT/deploy/initrd.img signed now" \
        redirect_answer deploy_ramdisk "$CONT/deploy/initrd.img"
    off=$(log_size); metrics_snapshot M0; boot_requests >"$OUT/build/$tag.boot0"; t0=$(metric_tempurls)
    say "booting $mode VM, mac $MAC (redirect mode)"
    run_vm "$mode" "$MAC" "$tag"
    SER=$(cat "$OUT/$tag.serial.txt")
    check_linux_boot deploy deploy_kernel deploy_ramdisk "$off" "$MAC" "$CONT/deploy/vmlinuz" "$CONT/deploy/initrd.img"
    check "cmdline has [pxe] kernel_append_params (ironboot_e2e=$NONCE)" cmdline_has "ironboot_e2e=$NONCE"
    check "serial: iPXE asked ironboot for http://10.0.2.2:$BOOT_PORT/$REDIRECT_UUID/deploy_kernel" \
        serial_has "http://10.0.2.2:$BOOT_PORT/$REDIRECT_UUID/deploy_kernel"
    boot_requests >"$OUT/build/$tag.boot1"; t1=$(metric_tempurls)
    check "ironboot's boot listener answered the scripts (200) and the two image paths with 302 (ironboot_http_requests_total{listener=boot,route=/{node}/{label},status=302} +2), nothing else" \
        boot_served "$OUT/build/$tag.boot0" "$OUT/build/$tag.boot1" 302 2
    check "ironboot signed one TempURL per redirect, none for the script (ironboot_tempurls_minted_total +$((t1 - t0)), want 2)" \
        test "$((t1 - t0))" = 2
    for o in "$CONT/deploy/vmlinuz" "$CONT/deploy/initrd.img"; do
        [ -n "${GOT_LINE[$o]:-}" ] || continue
        check "iPXE's GET of $o carried a signature made at the boot, not the one curl got before (temp_url_expires > $REDIRECT_EXPIRES or equal within the same second)" \
            expires_not_before "${GOT_LINE[$o]}" "$REDIRECT_EXPIRES"
    done
    check_renders 1 1 - -
}
not_in_file() { ! grep -Fq -- "$1" "$2"; }
expires_not_before() {  # proxy-log-line expires: the line's temp_url_expires >= expires
    local e
    e=$(grep -oE 'temp_url_expires%3D[0-9]+' <<<"$1" | head -n1 | sed 's/.*%3D//')
    [ -n "$e" ] && [ "$e" -ge "$2" ]
}

# Cache mode: Glance (file store) -> ironboot's master cache -> ironboot's boot listener
CACHE_STATE="" CACHE_NODE_JSON=""
prepare_cached() {  # mode: boot mode, then prepare target deploy and follow the node until it
    # is no longer preparing: `ironboot node boot --wait` when the binary has it, else
    # PUT /v1/nodes/<uuid>/boot (202, preparing) and GET /v1/nodes/<uuid> every 0.2 s
    local mode=$1 st state target i t0 err rc
    ib_step "set boot mode $mode" node update vm-cache --boot-mode "$mode" || return 1
    t0=$(now)
    if [ "$HAS_WAIT" = 1 ]; then
        echo "\$ ironboot node boot vm-cache --target deploy --wait --json  # cache mode" >>"$OUT/cli.log"
        ib node boot vm-cache --target deploy --wait --json >"$OUT/build/node.json" 2>"$OUT/$CUR.wait.log"
        rc=$?
        echo "  INFO --wait's last progress line: $(tr '\r' '\n' <"$OUT/$CUR.wait.log" | grep . | tail -n 1)" | tee -a "$OUT/checks.txt"
        check "\`ironboot node boot vm-cache --target deploy --wait\` exited 0 after $(secs "$t0" "$(now)")s (rc $rc)" \
            test "$rc" = 0 || { tail -n 5 "$OUT/$CUR.wait.log"; return 1; }
    else
        st=$(curl -s -m 60 -o "$OUT/build/put.json" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
            -d '{"target": "deploy"}' "$IRONBOOT_URL/v1/nodes/$CACHE_UUID/boot")
        state=$(json_field state <"$OUT/build/put.json")
        check "PUT /v1/nodes/$CACHE_UUID/boot {\"target\": \"deploy\"} answered 202 with state preparing (got $st, ${state:-?})" \
            test "$st:$state" = 202:preparing || { head -c 400 "$OUT/build/put.json"; echo; return 1; }
        for i in $(seq 1 600); do   # up to 120 s
            curl -s -m 5 -o "$OUT/build/node.json" "$IRONBOOT_URL/v1/nodes/$CACHE_UUID"
            state=$(json_field state <"$OUT/build/node.json")
            [ "$state" = preparing ] || break
            [ "$i" = 1 ] && echo "  INFO while preparing: progress $(python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin).get("progress")))' <"$OUT/build/node.json")" \
                | tee -a "$OUT/checks.txt"
            sleep 0.2
        done
    fi
    state=$(json_field state <"$OUT/build/node.json")
    target=$(json_field target <"$OUT/build/node.json")
    err=$(json_field last_error <"$OUT/build/node.json")
    check "the node left preparing after $(secs "$t0" "$(now)")s: state ready, target deploy (state ${state:-?}, target ${target:-?}${err:+, last_error: $err})" \
        test "$state:$target" = ready:deploy || return 1
    ib node ipxe vm-cache >"$OUT/$CUR.node.ipxe" 2>&1
}
master_has() {  # image-id source-file: the master cache holds the image, byte for byte
    local f=$CACHE_STATE/master_images/$1
    [ -f "$f" ] && cmp -s "$f" "$2"
}
linked_from_master() {  # label image-id: http_root/<uuid>/<label> is the master file's inode,
    # which has exactly 2 links (the master and the node's file)
    local f=$CACHE_STATE/httpboot/$CACHE_UUID/$1 m=$CACHE_STATE/master_images/$2
    echo "  INFO $(stat -c '%n: inode %i, %h links, %s bytes' "$f" "$m" 2>&1 | tr '\n' ';')" | tee -a "$OUT/checks.txt"
    [ "$(stat -c %h "$f" 2>/dev/null)" = 2 ] && [ "$(stat -c %i "$f" 2>/dev/null)" = "$(stat -c %i "$m" 2>/dev/null)" ]
}
no_swift_request_of() {  # offset id...: no proxy log line since offset names one of the ids,
    # and no iPXE request of this run's container
    local off=$1 id; shift
    for id in "$@"; do
        log_since "$off" | grep -Fq -- "$id" && return 1
    done
    ! log_since "$off" | grep -F -- " iPXE/" | grep -Fq -- "/v1/$SWIFT_ACCOUNT/$CONT/"
}

sc_cache() {  # mode
    local mode=$1 tag=$1-cache$RSUF off label id src had goff
    begin "$tag"
    if [ -n "$CACHE_ERR" ]; then
        fail "cache mode: $CACHE_ERR"
        return
    fi
    CACHE_STATE=${INST_STATE[cache]}
    check "node vm-cache: driver_info is only deploy_kernel=$GC_KERNEL and deploy_ramdisk=glance://$GC_RAMDISK" \
        node_has_only_glance_refs vm-cache "$GC_KERNEL" "$GC_RAMDISK"
    had=0
    [ -f "$CACHE_STATE/master_images/$GC_KERNEL" ] && [ -f "$CACHE_STATE/master_images/$GC_RAMDISK" ] && had=1
    goff=$(stat -c %s "$GLANCE_FILE_LOG" 2>/dev/null || echo 0)
    prepare_cached "$mode" || return
    check_glance_downloads "$goff" "$had"
    for label in deploy_kernel deploy_ramdisk; do
        if [ "$label" = deploy_kernel ]; then id=$GC_KERNEL src=$CACHE/vmlinuz; else id=$GC_RAMDISK src=$OUT/build/deploy-initrd.img; fi
        check "master cache: $CACHE_STATE/master_images/$id is image $id byte for byte ($(stat -c %s "$src") bytes)" \
            master_has "$id" "$src"
        check "http_root/$CACHE_UUID/$label is a hardlink of master_images/$id (same inode, link count 2)" \
            linked_from_master "$label" "$id"
    done
    if [ "$HAS_CACHE_LIST" = 1 ]; then
        check "\`ironboot cache list --json\` (cache-mode config) lists $GC_KERNEL and $GC_RAMDISK with their sizes, each linked by one node (links 1)" \
            cache_list_has "$GC_KERNEL" "$(stat -c %s "$CACHE/vmlinuz")" "$GC_RAMDISK" "$(stat -c %s "$OUT/build/deploy-initrd.img")"
    else
        echo "  INFO \`ironboot cache list\` is not in this binary: the master directory was read with stat/cmp" | tee -a "$OUT/checks.txt"
    fi
    check "the node's script takes deploy_kernel and deploy_ramdisk from ironboot (http://10.0.2.2:$BOOT_PORT/$CACHE_UUID/<label>), no TempURL, nothing from Swift" \
        script_points_at_ironboot "$CACHE_UUID"
    check "the node's script holds no signature (no temp_url_sig)" not_in_file temp_url_sig "$OUT/$CUR.node.ipxe"
    off=$(log_size); metrics_snapshot M0; boot_requests >"$OUT/build/$tag.boot0"
    say "booting $mode VM, mac $MAC_CACHE (cache mode)"
    run_vm "$mode" "$MAC_CACHE" "$tag"
    SER=$(cat "$OUT/$tag.serial.txt")
    check_linux_boot deploy deploy_kernel deploy_ramdisk "$off" "$MAC_CACHE"
    check "cmdline has [pxe] kernel_append_params (ironboot_e2e=$NONCE)" cmdline_has "ironboot_e2e=$NONCE"
    check "serial: iPXE fetched http://10.0.2.2:$BOOT_PORT/$CACHE_UUID/deploy_kernel and .../deploy_ramdisk" \
        serial_has_both "http://10.0.2.2:$BOOT_PORT/$CACHE_UUID/deploy_kernel" "http://10.0.2.2:$BOOT_PORT/$CACHE_UUID/deploy_ramdisk"
    boot_requests >"$OUT/build/$tag.boot1"
    check "ironboot's boot listener served the scripts and the two images, 200 (ironboot_http_requests_total{listener=boot,route=/{node}/{label},status=200} +2), nothing else" \
        boot_served "$OUT/build/$tag.boot0" "$OUT/build/$tag.boot1" 200 2
    check "Swift's proxy log: no request of image $GC_KERNEL or $GC_RAMDISK, no iPXE GET of $CONT/* during the boot" \
        no_swift_request_of "$off" "$GC_KERNEL" "$GC_RAMDISK"
    check_renders 1 1 - -
}
GLANCE_FILE_LOG=""   # the file-store Glance's uWSGI request log, when scripts/glance-aio.sh runs it
[ -n "${GLANCE_AIO_DIR:-}" ] && [ -f "$GLANCE_AIO_DIR/file/log/wsgi.log" ] && GLANCE_FILE_LOG=$GLANCE_AIO_DIR/file/log/wsgi.log
glance_downloads() {  # offset id: GETs of /v2/images/<id>/file in GLANCE_FILE_LOG since offset
    tail -c +"$(( $1 + 1 ))" "$GLANCE_FILE_LOG" 2>/dev/null | grep -c -F -- " GET /v2/images/$2/file "
}
check_glance_downloads() {  # offset had-before: how often ironboot downloaded each image
    # from the file-store Glance during the prepare (its request log; polled up to 2 s)
    local off=$1 had=$2 nk=0 nr=0 i
    if [ -z "$GLANCE_FILE_LOG" ]; then
        echo "  INFO the file-store Glance's request log was not found (\$GLANCE_AIO_DIR/file/log/wsgi.log): downloads not counted" \
            | tee -a "$OUT/checks.txt"
        return 0
    fi
    for i in $(seq 1 10); do
        nk=$(glance_downloads "$off" "$GC_KERNEL"); nr=$(glance_downloads "$off" "$GC_RAMDISK")
        [ "$nk" -ge 1 ] && [ "$nr" -ge 1 ] && break
        sleep 0.2
    done
    if [ "$had" = 1 ]; then
        # an active Glance image's os_hash names its bytes: the master is used as it is
        check "the master cache already held both images: no new download from Glance (GET /v2/images/<id>/file: kernel $nk, ramdisk $nr)" \
            test "$nk:$nr" = 0:0
    else
        check "ironboot downloaded each image from the file-store Glance's API once (GET /v2/images/<id>/file in its request log: kernel $nk, ramdisk $nr)" \
            test "$nk:$nr" = 1:1
    fi
}
serial_has_both() {  # text text: the URLs as iPXE printed them (cut at 80 columns: prefixes)
    grep -Fq -- "${1:0:78}" <<<"$SER" && grep -Fq -- "${2:0:78}" <<<"$SER"
}
cache_list_has() {  # id size id size: `ironboot cache list --json` has both, each with links 1
    # (its "links" counts the nodes' names besides the master's own)
    IRONBOOT_CONFIG=${INST_CONF[cache]} "$IB" --log warn cache list --json >"$OUT/build/cache-list.json" 2>>"$OUT/cli.log" || return 1
    python3 -c 'import json, sys
e = {x["key"]: x for x in json.load(open(sys.argv[1]))["entries"]}
for k, v in e.items():
    print("  INFO cache list: %s %s bytes, %s links, source %s" % (k, v.get("size"), v.get("links"), v.get("source")))
ok = all(k in e and e[k].get("size") == int(n) and e[k].get("links") == 1 for k, n in zip(sys.argv[2::2], sys.argv[3::2]))
sys.exit(0 if ok else 1)' "$OUT/build/cache-list.json" "$@" | tee -a "$OUT/checks.txt"
}

# ---------------------------------------------------------------- bios-takeover*
# Two conductors, e2e-a and e2e-b, share a fresh PostgreSQL database; the owner of the
# node is killed with SIGKILL and the VM boots through the survivor.  Each scenario run
# starts its own pair (instances takeover[-cache]-a|b, suffixed in later rounds) and stops
# them again; cleanup() stops whatever is left, by PID, and drops the database.
TK_HB_INTERVAL=1 TK_HB_TIMEOUT=3
TK_OWNER_WITHIN=15    # seconds from the kill until the survivor shows the takeover
TK_ADOPT_WITHIN=60    # cache mode: ... until the survivor's script names its own http_url
TK_SETTLE_WITHIN=15   # seconds for both conductors to see each other, and to agree on the owner
TK_DB_N=0 TK_DB="" TK_ERR=""
TK_KILL="" TK_T_DEAD="" TK_T_OWNER="" TK_T_ADOPT="" TK_LAST="" TK_KURL_BEFORE=""
declare -A TK_INST   # host (e2e-a, e2e-b) -> instance name of the current scenario run

pg_create_db() {  # -> TK_DB, a new empty database on IRONBOOT_TEST_PG_URL's server; or TK_ERR
    local db
    TK_DB=""
    if [ -z "${IRONBOOT_TEST_PG_URL:-}" ]; then
        TK_ERR="IRONBOOT_TEST_PG_URL unset: no PostgreSQL to test against (scripts/test.sh exports it)"
        return 1
    fi
    TK_DB_N=$((TK_DB_N + 1))
    db=ironboot_e2e_${NONCE}_$TK_DB_N
    echo "\$ psql \$IRONBOOT_TEST_PG_URL -c 'CREATE DATABASE $db'" >>"$OUT/psql.log"
    "$PSQL" -X -q -v ON_ERROR_STOP=1 "$IRONBOOT_TEST_PG_URL" -c "CREATE DATABASE $db" >>"$OUT/psql.log" 2>&1 \
        || { TK_ERR="cannot create database $db on IRONBOOT_TEST_PG_URL's server (see $OUT/psql.log)"; return 1; }
    PG_DBS+=("$db")
    TK_DB=$db
}
tk_start() {  # mode(swift|cache) host instance db-url: its config, then `serve`; or TK_ERR
    local mode=$1 host=$2 n=$3 url=$4
    INST_HOST[$n]=$host INST_SCOPED[$n]=1
    inst_alloc "$n"
    {
        if [ "$mode" = swift ]; then write_swift_conf "$n" 0; else write_cache_conf "$n"; fi
        cat <<EOF

[database]
connection = $url

[conductor]
heartbeat_interval = $TK_HB_INTERVAL
heartbeat_timeout = $TK_HB_TIMEOUT
EOF
    } >"${INST_CONF[$n]}"
    chmod 600 "${INST_CONF[$n]}"   # the database URL may hold a password
    start_ironboot "$n" || { TK_ERR=$START_ERR; return 1; }
    TK_INST[$host]=$n
}
tk_api() { echo "http://127.0.0.1:${INST_API[${TK_INST[$1]}]}"; }   # host -> its API URL
tk_alive() {  # api host -> "alive" of host in api's GET /v1/conductors (true, false, absent, ?)
    curl -s -m 5 "$1/v1/conductors" | python3 -c 'import json, sys
try:
    l = json.load(sys.stdin)["conductors"]
except Exception:
    print("?"); sys.exit()
print(next((json.dumps(c.get("alive")) for c in l if c.get("hostname") == sys.argv[1]), "absent"))' "$2"
}
tk_node() {  # api uuid field -> that field of api's GET /v1/nodes/<uuid> ('' if none)
    curl -s -m 5 "$1/v1/nodes/$2" | json_field "$3"
}
kernel_url_of() {  # script on stdin -> the URL of its kernel line
    awk '/^kernel / { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }'
}
tk_wait() {  # seconds cmd...: polls cmd every 0.1 s until it succeeds (0) or seconds passed (1)
    local within=$1 t0; shift
    t0=$(now)
    until "$@"; do
        awk -v a="$t0" -v b="$(now)" -v m="$within" 'BEGIN{exit !(b - a > m)}' && return 1
        sleep 0.1
    done
}
tk_see_each_other() {  # both conductors list both alive
    local api h
    for api in "$(tk_api e2e-a)" "$(tk_api e2e-b)"; do
        for h in e2e-a e2e-b; do
            [ "$(tk_alive "$api" "$h")" = true ] || return 1
        done
    done
}
TK_UUID="" TK_OWNER=""
tk_agree() {  # both conductors: node TK_UUID ready, the same owner (e2e-a or e2e-b) -> TK_OWNER
    local oa ob sa sb
    oa=$(tk_node "$(tk_api e2e-a)" "$TK_UUID" conductor); ob=$(tk_node "$(tk_api e2e-b)" "$TK_UUID" conductor)
    sa=$(tk_node "$(tk_api e2e-a)" "$TK_UUID" state); sb=$(tk_node "$(tk_api e2e-b)" "$TK_UUID" state)
    TK_LAST="e2e-a says owner ${oa:-none}, state ${sa:-?}; e2e-b says owner ${ob:-none}, state ${sb:-?}"
    [ "$sa:$sb" = ready:ready ] && [ "$oa" = "$ob" ] || return 1
    case "$oa" in e2e-a|e2e-b) TK_OWNER=$oa ;; *) return 1 ;; esac
}
TK_SURV="" TK_DEAD="" TK_MAC="" TK_CACHE=0
tk_script_kernel() {  # host -> the kernel URL of the script host's boot listener serves for TK_MAC
    curl -s -m 5 "http://127.0.0.1:${INST_BOOT[${TK_INST[$1]}]}/pxelinux.cfg/$(hexhyp "$TK_MAC")" | kernel_url_of
}
tk_taken_over() {  # the survivor's view since the kill (first times -> TK_T_*): the dead one
    # alive: false, the node's owner the survivor; cache mode: its script names its own http_url
    local t a o k="" api
    api=$(tk_api "$TK_SURV")
    a=$(tk_alive "$api" "$TK_DEAD"); o=$(tk_node "$api" "$TK_UUID" conductor)
    [ "$TK_CACHE" = 1 ] && k=$(tk_script_kernel "$TK_SURV")
    t=$(secs "$TK_KILL" "$(now)")
    [ -z "$TK_T_DEAD" ] && [ "$a" = false ] && TK_T_DEAD=$t
    [ -z "$TK_T_OWNER" ] && [ "$o" = "$TK_SURV" ] && TK_T_OWNER=$t
    TK_LAST="$t s after the kill: $TK_DEAD alive ${a:-?}, owner ${o:-none}${k:+, its script names $k}"
    [ "$a" = false ] && [ "$o" = "$TK_SURV" ] || return 1
    [ "$TK_CACHE" = 1 ] || return 0
    if [ "$k" != "http://10.0.2.2:${INST_BOOT[${TK_INST[$TK_SURV]}]}/$TK_UUID/deploy_kernel" ]; then
        [ -n "$k" ] && TK_KURL_BEFORE=$k
        return 1
    fi
    [ -z "$TK_T_ADOPT" ] && TK_T_ADOPT=$t
    return 0
}
tk_dead_gone() {  # pid boot-port rc: reaped with the status of SIGKILL, no such process, and its
    # boot listener refuses connections
    local st
    [ "$3" = 137 ] && ! kill -0 "$1" 2>/dev/null && [ ! -e "/proc/$1" ] || return 1
    curl -s -m 3 -o /dev/null "http://127.0.0.1:$2/boot.ipxe"
    st=$?
    [ "$st" = 7 ]   # couldn't connect
}
tk_le() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a != "" && a + 0 <= b + 0)}'; }

sc_takeover() {  # mode (swift|cache): runs the scenario, then stops its conductors
    tk_run "$@"
    tk_stop
}
tk_stop() {  # stops this run's conductors by PID; the survivor's exit status is checked
    local h n
    for h in e2e-a e2e-b; do
        n=${TK_INST[$h]:-}
        [ -n "$n" ] && [ -n "${INST_PID[$n]:-}" ] || continue
        kill_pid "${INST_PID[$n]}" "ironboot ($n)" 10; INST_PID[$n]=""
        [ "$h" = "$TK_SURV" ] && check "the survivor $h ($n) exited 0 on SIGTERM (rc $WAIT_RC)" test "$WAIT_RC" = 0
    done
    pg_drop_dbs
}
tk_run() {  # mode (swift|cache)
    local mode=$1 tag sfx="" name dpid dboot drc off h o st state t0 line k sboot sn id src
    TK_INST=() TK_SURV="" TK_DEAD="" TK_OWNER="" TK_UUID="" TK_ERR="" TK_KURL_BEFORE=""
    TK_KILL="" TK_T_DEAD="" TK_T_OWNER="" TK_T_ADOPT=""
    if [ "$mode" = swift ]; then
        tag=bios-takeover$RSUF name=vm-takeover TK_MAC=$MAC_TAKEOVER TK_CACHE=0
    else
        tag=bios-takeover-cache$RSUF name=vm-takeover-cache TK_MAC=$MAC_TAKEOVER_CACHE TK_CACHE=1 sfx=-cache
    fi
    begin "$tag"
    if [ "$mode" = cache ] && [ -n "$CACHE_GLANCE_ERR" ]; then
        fail "cache mode: $CACHE_GLANCE_ERR"
        return
    fi
    pg_create_db || { fail "PostgreSQL: $TK_ERR"; return; }
    for h in e2e-a e2e-b; do
        tk_start "$mode" "$h" "takeover$sfx-${h#e2e-}$RSUF" "$(pg_url_of "$TK_DB")" \
            || { fail "conductor $h ($mode mode) on database $TK_DB: $TK_ERR"; return; }
    done
    check "e2e-a and e2e-b each list both conductors alive (GET /v1/conductors; within ${TK_SETTLE_WITHIN}s)" \
        tk_wait "$TK_SETTLE_WITHIN" tk_see_each_other || return
    use_ironboot "${TK_INST[e2e-a]}"
    if [ "$mode" = swift ]; then
        ib_step "create node $name through e2e-a" node create --name "$name" --mac "$TK_MAC" --boot-mode bios \
            --deploy-kernel "swift://$CONT/deploy/vmlinuz" --deploy-ramdisk "swift://$CONT/deploy/initrd.img" || return
    else
        ib_step "create node $name through e2e-a" node create --name "$name" --mac "$TK_MAC" --boot-mode bios \
            --deploy-kernel "$GC_KERNEL" --deploy-ramdisk "glance://$GC_RAMDISK" || return
    fi
    TK_UUID=$(node_uuid "$name") || { fail "cannot read the uuid of node $name"; return; }
    say "node $name = $TK_UUID, mac $TK_MAC (database $TK_DB)"
    if [ "$mode" = swift ]; then
        off=$(log_size)
        ib_step "prepare target deploy through e2e-a" node boot "$name" --target deploy || return
        pass "\`ironboot node boot $name --target deploy\` through e2e-a succeeded"
        for o in "$CONT/deploy/vmlinuz" "$CONT/deploy/initrd.img"; do
            check "the prepare HEAD-checked $o through a TempURL (Swift proxy log)" swift_logged "$off" HEAD "$o"
        done
    else
        st=$(curl -s -m 60 -o "$OUT/build/put.json" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
            -d '{"target": "deploy"}' "$IRONBOOT_URL/v1/nodes/$TK_UUID/boot")
        state=$(json_field state <"$OUT/build/put.json")
        check "PUT /v1/nodes/$TK_UUID/boot {\"target\": \"deploy\"} through e2e-a answered 202 with state preparing (got $st, ${state:-?})" \
            test "$st:$state" = 202:preparing || { head -c 400 "$OUT/build/put.json"; echo; return; }
        t0=$(now)
        for _ in $(seq 1 600); do   # up to 120 s
            state=$(tk_node "$IRONBOOT_URL" "$TK_UUID" state)
            [ "$state" = preparing ] || break
            sleep 0.2
        done
        check "the node left preparing after $(secs "$t0" "$(now)")s: state ready (state ${state:-?}, last_error: $(tk_node "$IRONBOOT_URL" "$TK_UUID" last_error))" \
            test "$state" = ready || return
    fi
    if ! tk_wait "$TK_SETTLE_WITHIN" tk_agree; then
        fail "e2e-a and e2e-b agree on the owner of $TK_UUID, ready (within ${TK_SETTLE_WITHIN}s): $TK_LAST"
        return
    fi
    pass "e2e-a and e2e-b agree: $TK_UUID is ready and owned by $TK_OWNER"
    TK_DEAD=$TK_OWNER
    if [ "$TK_DEAD" = e2e-a ]; then TK_SURV=e2e-b; else TK_SURV=e2e-a; fi
    sn=${TK_INST[$TK_SURV]} sboot=${INST_BOOT[${TK_INST[$TK_SURV]}]}
    dpid=${INST_PID[${TK_INST[$TK_DEAD]}]} dboot=${INST_BOOT[${TK_INST[$TK_DEAD]}]}
    if [ "$mode" = cache ]; then
        k="http://10.0.2.2:$dboot/$TK_UUID/deploy_kernel"
        check "before the kill, the survivor $TK_SURV's script names the owner's http_url ($k)" \
            tk_wait "$TK_SETTLE_WITHIN" eval '[ "$(tk_script_kernel "$TK_SURV")" = "$k" ]'
    fi

    say "kill -9 of the owner $TK_DEAD (${TK_INST[$TK_DEAD]}, pid $dpid); the survivor is $TK_SURV ($sn)"
    TK_KILL=$(now)
    kill -KILL "$dpid"
    wait "$dpid" 2>/dev/null; drc=$?
    INST_PID[${TK_INST[$TK_DEAD]}]=""
    if [ "$mode" = swift ]; then
        tk_wait "$TK_OWNER_WITHIN" tk_taken_over
    else
        tk_wait "$TK_ADOPT_WITHIN" tk_taken_over
    fi
    echo "  INFO last view: $TK_LAST" | tee -a "$OUT/checks.txt"
    check "the survivor's GET /v1/conductors shows $TK_DEAD alive: false (after ${TK_T_DEAD:--}s)" \
        tk_le "$TK_T_DEAD" "$TK_OWNER_WITHIN"
    check "the survivor's GET /v1/nodes/$TK_UUID names it, $TK_SURV, as the owner within ${TK_OWNER_WITHIN}s of the kill (after ${TK_T_OWNER:--}s)" \
        tk_le "$TK_T_OWNER" "$TK_OWNER_WITHIN" || return
    line="$tag: kill -9 -> $TK_DEAD alive:false ${TK_T_DEAD:--}s, -> $TK_SURV owns the node ${TK_T_OWNER:--}s"
    if [ "$mode" = cache ]; then
        [ -n "$TK_KURL_BEFORE" ] && echo "  INFO until adoption the survivor's script named $TK_KURL_BEFORE" | tee -a "$OUT/checks.txt"
        check "the survivor adopted the images: its script names http://10.0.2.2:$sboot/$TK_UUID/deploy_kernel (after ${TK_T_ADOPT:--}s, within ${TK_ADOPT_WITHIN}s)" \
            test -n "$TK_T_ADOPT" || return
        line+=", -> adopted ${TK_T_ADOPT}s"
        for id in "$GC_KERNEL" "$GC_RAMDISK"; do
            if [ "$id" = "$GC_KERNEL" ]; then src=$CACHE/vmlinuz; else src=$OUT/build/deploy-initrd.img; fi
            check "the survivor's master cache holds image $id byte for byte" \
                cmp -s "${INST_STATE[$sn]}/master_images/$id" "$src"
        done
    fi
    TIMINGS+=("$line")
    say "$line"
    echo "  INFO $line" >>"$OUT/checks.txt"

    use_ironboot "$sn"
    ib node ipxe "$name" >"$OUT/$CUR.node.ipxe" 2>&1
    if [ "$mode" = swift ]; then
        check "the survivor's script takes the kernel from Swift through a TempURL" \
            grep -Eq "^kernel .*http://10\.0\.2\.2:$SWIFT_PORT/v1/$SWIFT_ACCOUNT/$(re_escape "$CONT")/deploy/vmlinuz\?temp_url_sig=" "$OUT/$CUR.node.ipxe"
    fi
    off=$(log_size); metrics_snapshot M0; boot_requests >"$OUT/build/$tag.boot0"
    say "booting bios VM, mac $TK_MAC, through the survivor $TK_SURV (http://10.0.2.2:$BOOT_PORT/boot.ipxe)"
    run_vm bios "$TK_MAC" "$tag"
    SER=$(cat "$OUT/$tag.serial.txt")
    if [ "$mode" = swift ]; then
        check_linux_boot deploy deploy_kernel deploy_ramdisk "$off" "$TK_MAC" "$CONT/deploy/vmlinuz" "$CONT/deploy/initrd.img"
    else
        check_linux_boot deploy deploy_kernel deploy_ramdisk "$off" "$TK_MAC"
        check "serial: iPXE fetched http://10.0.2.2:$BOOT_PORT/$TK_UUID/deploy_kernel and .../deploy_ramdisk (the survivor's)" \
            serial_has_both "http://10.0.2.2:$BOOT_PORT/$TK_UUID/deploy_kernel" "http://10.0.2.2:$BOOT_PORT/$TK_UUID/deploy_ramdisk"
        boot_requests >"$OUT/build/$tag.boot1"
        check "the survivor's boot listener served the scripts and the two images, 200 (ironboot_http_requests_total{listener=boot,route=/{node}/{label},status=200} +2), nothing else" \
            boot_served "$OUT/build/$tag.boot0" "$OUT/build/$tag.boot1" 200 2
    fi
    check "cmdline has [pxe] kernel_append_params (ironboot_e2e=$NONCE)" cmdline_has "ironboot_e2e=$NONCE"
    check_renders 1 1 - -
    check "the dead conductor $TK_DEAD is gone: pid $dpid reaped with SIGKILL's status (rc $drc), no such process, its boot listener :$dboot refuses connections" \
        tk_dead_gone "$dpid" "$dboot" "$drc"
    check "the survivor $TK_SURV is still running" kill -0 "${INST_PID[$sn]}"
}

# ---------------------------------------------------------------- main
# `ironboot cache list` and `node boot --wait` are used when the binary has them
HAS_CACHE_LIST=0 HAS_WAIT=0
"$IB" cache list --help >/dev/null 2>&1 && HAS_CACHE_LIST=1
"$IB" node boot --help 2>/dev/null | grep -q -- '--wait' && HAS_WAIT=1
REPEAT=${E2E_REPEAT:-1}
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "E2E_REPEAT must be a positive integer, got '$REPEAT'"
say "ironboot $("$IB" --version 2>/dev/null | awk '{print $NF}'), iPXE $(dpkg-query -W -f='${Version}' ipxe-qemu 2>/dev/null), qemu $(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null), kernel $(cat "$CACHE/vmlinuz.pkg" 2>/dev/null || echo '?'), accel $ACCEL, nic $NIC"
ROUND=1 RSUF=""
for ((ROUND = 1; ROUND <= REPEAT; ROUND++)); do
    RSUF=""; [ "$ROUND" = 1 ] || RSUF=.r$ROUND   # tags (log file names) of later rounds
    for sc in $SCENARIOS; do
        use_ironboot "$(instance_of "$sc")"
        case "$sc" in
            bios-deploy|uefi-deploy) sc_deploy "${sc%%-*}" ;;
            bios-fallback|uefi-fallback) sc_fallback "${sc%%-*}" ;;
            bios-instance|uefi-instance) sc_instance "${sc%%-*}" ;;
            bios-local|uefi-local) sc_local "${sc%%-*}" ;;
            bios-glance|uefi-glance) sc_glance "${sc%%-*}" ;;
            bios-redirect|uefi-redirect) sc_redirect "${sc%%-*}" ;;
            bios-cache|uefi-cache) sc_cache "${sc%%-*}" ;;
            bios-takeover) sc_takeover swift ;;
            bios-takeover-cache) sc_takeover cache ;;
        esac
    done
done
CUR=totals
begin totals
for inst in "${IB_NAMES[@]}"; do
    [ -n "${INST_SCOPED[$inst]:-}" ] && continue   # bios-takeover*: checked and stopped there
    use_ironboot "$inst"
    check "ironboot ($inst mode) still running" kill -0 "${INST_PID[$inst]}"
    curl -s -m 5 "$IRONBOOT_URL/metrics" | grep '^ironboot_\(script_renders\|tempurls_minted\|boot_prepares\|errors\)_total' \
        | sed "s/^/  INFO $inst: /" | tee -a "$OUT/checks.txt"
    check "ironboot ($inst mode) answered /boot.ipxe (renders kind=master > 0)" test "$(metric master ok)" -gt 0
    check "ironboot ($inst mode) answered /pxelinux.cfg/<mac> (renders kind=node,result=ok > 0)" test "$(metric node ok)" -gt 0
done
# stop ironboot now, so that its log ends with a clean shutdown
for inst in "${IB_NAMES[@]}"; do
    [ -n "${INST_SCOPED[$inst]:-}" ] && continue
    kill_pid "${INST_PID[$inst]}" "ironboot ($inst)" 10; INST_PID[$inst]=""
    check "ironboot ($inst mode) exited 0 on SIGTERM (rc $WAIT_RC)" test "$WAIT_RC" = 0
done
[ "$NFAIL" = 0 ] || exit 1
exit 0

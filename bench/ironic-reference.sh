#!/usr/bin/env bash
# Ironic reference for the boot-path benchmark (P5): times Ironic's own per-node iPXE
# config path (render_template() on its installed ipxe_config.template + 2 SHA1 TempURLs)
# for N nodes with ../shared/bench/ironic-reference.py, in the venv that
# bench/ironic-venv.sh makes (ironic from PyPI, pinned there), and prints its line.
#
#   bench/ironic-reference.sh [N]      # N nodes (10000)
#
# Env: IRONIC_VENV (/tmp/ironboot-bench/ironic-venv)  passed on to bench/ironic-venv.sh
#      IRONIC_REFERENCE (../shared/bench/ironic-reference.py)  the reference script
# Single-threaded and CPU-bound: compare with ironboot's figure from the same machine and
# day, not across days. About 99% of the time is Jinja2 parsing and compiling the template
# (render_template builds a new Environment per call), so the figure follows the Python
# version (3.12.1 was ~30% slower than 3.11.7 here) and any other load on the cores: the
# interpreter and library versions go to stderr with the result.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
case "$N" in ''|*[!0-9]*) echo "usage: $0 [N]  (N: number of nodes)" >&2; exit 2;; esac
REF=${IRONIC_REFERENCE:-../shared/bench/ironic-reference.py}
[ -f "$REF" ] || { echo "$REF not found (set IRONIC_REFERENCE)" >&2; exit 2; }
PY=$(bench/ironic-venv.sh)
"$PY" -c 'import platform, importlib.metadata as m; print("python %s, ironic %s, jinja2 %s" % (platform.python_version(), m.version("ironic"), m.version("jinja2")))' >&2
"$PY" "$REF" "$N"

#!/usr/bin/env bash
# Creates (once) a Python venv with OpenStack Ironic from PyPI, for the Ironic reference
# benchmark (bench/ironic-reference.sh), and prints the path of the venv's python.
#
#   bench/ironic-venv.sh            # -> /tmp/ironboot-bench/ironic-venv/bin/python
#
# Env: IRONIC_VENV (/tmp/ironboot-bench/ironic-venv)  where the venv lives
#      PYTHON (python3)  the interpreter that creates the venv
#
# Pinned: ironic==39.0.0 (the version the shared reference was measured with). A venv
# that already imports that version is reused as it is; any other state is rebuilt.
# The wheel install needs no system packages: everything it pulls comes as wheels
# (or pure-Python sdists) on Python 3.11. All progress goes to stderr; stdout is only
# the python path, so callers can do PY=$(bench/ironic-venv.sh).
set -euo pipefail
IRONIC_VERSION=39.0.0
VENV=${IRONIC_VENV:-/tmp/ironboot-bench/ironic-venv}
PY=$VENV/bin/python
installed() {
    [ -x "$PY" ] && [ "$("$PY" -c 'import importlib.metadata as m; print(m.version("ironic"))' 2>/dev/null)" = "$IRONIC_VERSION" ] \
        && "$PY" -c 'import ironic.common.utils' 2>/dev/null
}
if ! installed; then
    echo "creating $VENV with ironic==$IRONIC_VERSION (takes a few minutes)..." >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip >&2
    "$PY" -m pip install --quiet "ironic==$IRONIC_VERSION" >&2
    installed || { echo "$VENV: ironic==$IRONIC_VERSION still does not import" >&2; exit 1; }
fi
echo "$PY"

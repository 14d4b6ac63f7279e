#!/usr/bin/env bash
# Create .venv and install the project with its dev tools; a no-op when nothing changed.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ]; then
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
log=.venv/bootstrap.log
echo "[bootstrap] installing registry-app and its dev tools into .venv (log: $log)" >&2
if ! { .venv/bin/python -m pip install --upgrade pip \
       && .venv/bin/python -m pip install -e ".[dev]"; } > "$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "[bootstrap] pip install failed; full log: $log" >&2
  exit 1
fi
rm -f .venv/.installed-*
touch "$stamp"

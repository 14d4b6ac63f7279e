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
echo "[bootstrap] installing registry-app and its dev tools into .venv" >&2
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
rm -f .venv/.installed-*
touch "$stamp"

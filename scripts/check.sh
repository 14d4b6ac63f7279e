#!/usr/bin/env bash
# Lint and format check: the same one command locally and in CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m registry_app.schemas check schemas/

#!/usr/bin/env bash
# Run every test against real servers: set up .venv, start Kafka, Consul and PostgreSQL
# (installing them on first use), lint, then the unit and integration tiers.
#
#   scripts/test.sh [pytest arguments]      e.g. scripts/test.sh -k burst
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"

scripts/bootstrap.sh
scripts/servers.sh start
scripts/check.sh

exec .venv/bin/python -m pytest "$@"

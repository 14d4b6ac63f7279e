#!/usr/bin/env bash
# The main job: start the local servers and one registry worker, let a simulated fleet
# introspect, and print what Consul and PostgreSQL then hold.
#
#   scripts/demo.sh [--nodes N] [--keep-running]
#
# --keep-running leaves the worker in the foreground until Ctrl-C; the servers keep
# running either way (scripts/servers.sh stop stops them).
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"

nodes=20
keep_running=0
while [ $# -gt 0 ]; do
  case $1 in
    --nodes) nodes=$2; shift 2 ;;
    --keep-running) keep_running=1; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

scripts/bootstrap.sh
scripts/servers.sh start

# The registry finds the servers where scripts/servers.sh put them (their ports are
# configurable there), unless told otherwise.
export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:${KAFKA_PORT:-9092}}
export CONSUL_PORT=${CONSUL_PORT:-${CONSUL_HTTP_PORT:-8500}}
export POSTGRES_DSN=${POSTGRES_DSN:-postgresql://${POSTGRES_USER:-registry}:${POSTGRES_PASSWORD:-registry}@127.0.0.1:${POSTGRES_PORT:-5432}/${POSTGRES_DB:-registry}}

# The demo's worker keeps its tables apart from any other worker on this machine.
export DATA_DIR="$ROOT_DIR/.cache/demo/registry-data"
export WEB_PORT=${WEB_PORT:-6066}
mkdir -p "$DATA_DIR"
worker_log="$ROOT_DIR/.cache/run/demo-worker.log"

echo "[demo] starting a registry worker (log: $worker_log)"
.venv/bin/registry-app worker -l info > "$worker_log" 2>&1 &
worker_pid=$!
stop_worker() {
  if kill -0 "$worker_pid" 2>/dev/null; then
    echo "[demo] stopping the worker"
    kill -TERM "$worker_pid" 2>/dev/null || true
    wait "$worker_pid" 2>/dev/null || true
  fi
}
trap stop_worker EXIT

deadline=$((SECONDS + 120))
until grep -q "Ready" "$worker_log" 2>/dev/null; do
  if ! kill -0 "$worker_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    tail -n 30 "$worker_log"
    echo "[demo] the worker did not become ready" >&2
    exit 1
  fi
  sleep 0.5
done
echo "[demo] worker ready; web views on http://127.0.0.1:$WEB_PORT/"

run="demo$(date +%H%M%S)"
.venv/bin/registry-app simulate --nodes "$nodes" --run "$run"

echo "[demo] waiting for all $nodes nodes in Consul and PostgreSQL"
.venv/bin/registry-app nodes --prefix "sim-$run-" --wait-for "$nodes" --timeout 120

if [ "$keep_running" = 1 ]; then
  echo "[demo] the worker keeps running; Ctrl-C stops it"
  wait "$worker_pid"
fi

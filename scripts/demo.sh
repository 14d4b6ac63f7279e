#!/usr/bin/env bash
# The main job: start the local servers and one registry worker, let a simulated fleet
# introspect, and print what Consul and PostgreSQL then hold.
#
#   scripts/demo.sh [--nodes N] [--keep-running]
#
# --keep-running then keeps the fleet heartbeating and the worker running until Ctrl-C;
# the servers keep running either way (scripts/servers.sh stop stops them).
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"

nodes=20
keep_running=0
while [ $# -gt 0 ]; do
  case $1 in
    --nodes) nodes=$2; shift 2 ;;
    --keep-running) keep_running=1; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

case $nodes in
  ''|*[!0-9]*|0) echo "--nodes takes a whole number above 0, not '$nodes'" >&2; exit 2 ;;
esac

# One demo at a time: two workers on one data directory fight over RocksDB's lock.
demo_pidfile="$ROOT_DIR/.cache/run/demo-worker.pid"
if [ -f "$demo_pidfile" ] && kill -0 "$(cat "$demo_pidfile")" 2>/dev/null; then
  echo "[demo] another demo's worker is running (pid $(cat "$demo_pidfile")); stop it first" >&2
  exit 1
fi

scripts/bootstrap.sh
scripts/servers.sh start

# The demo's worker keeps its tables apart from any other worker on this machine.
export DATA_DIR="$ROOT_DIR/.cache/demo/registry-data"
export WEB_PORT=${WEB_PORT:-6066}
mkdir -p "$DATA_DIR"
worker_log="$ROOT_DIR/.cache/run/demo-worker.log"

echo "[demo] starting a registry worker (log: $worker_log)"
.venv/bin/registry-app worker -l info > "$worker_log" 2>&1 &
worker_pid=$!
echo "$worker_pid" > "$demo_pidfile"
stop_worker() {
  rm -f "$demo_pidfile"
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
echo "[demo] worker ready; its Faust web server is on http://127.0.0.1:$WEB_PORT/"

run="demo$(date +%H%M%S)"
.venv/bin/registry-app simulate --once --nodes "$nodes" --run "$run"

echo "[demo] waiting for all $nodes nodes in Consul and PostgreSQL"
.venv/bin/registry-app nodes --prefix "sim-$run-" --wait-for "$nodes" --timeout 120

if [ "$keep_running" = 1 ]; then
  # The same nodes come back (new epochs) and heartbeat, so none expires meanwhile.
  echo "[demo] the fleet keeps heartbeating and the worker keeps running; Ctrl-C stops both"
  .venv/bin/registry-app simulate --nodes "$nodes" --run "$run" || true
fi

# Shared helpers for the local-server scripts; sourced, never run.
# Everything downloaded, built or written by a server lives under $CACHE_DIR (git-ignored).

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${REGISTRY_CACHE_DIR:-$ROOT_DIR/.cache}"
RUN_DIR="$CACHE_DIR/run"          # pid files and server logs
mkdir -p "$RUN_DIR"

say()  { printf '[servers] %s\n' "$*" >&2; }
die()  { printf '[servers] error: %s\n' "$*" >&2; exit 1; }

# pid_alive NAME: true when $RUN_DIR/NAME.pid names a running process.
pid_alive() {
  local pidfile="$RUN_DIR/$1.pid"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.3 s until it succeeds.
wait_until() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      return 1
    fi
    sleep 0.3
  done
}

# port_open PORT: true when something listens on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_pid NAME [SECONDS]: SIGTERM the process, wait, then SIGKILL if it lingers.
stop_pid() {
  local name=$1 seconds=${2:-30} pid
  if ! pid_alive "$name"; then
    rm -f "$RUN_DIR/$name.pid"
    say "$name: not running"
    return 0
  fi
  pid=$(cat "$RUN_DIR/$name.pid")
  kill "$pid" 2>/dev/null || true
  if ! wait_until "$seconds" "$name to stop" bash -c "! kill -0 $pid"; then
    say "$name: did not stop in ${seconds}s, killing"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/$name.pid"
  say "$name: stopped"
}

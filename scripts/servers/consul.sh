# Consul: a single in-memory dev agent on loopback, built from the Go module proxy.
# Sourced by scripts/servers.sh (after lib.sh); defines consul_install, consul_start,
# consul_status and consul_stop.
#
# Licence rule: only a Consul release under MPL-2.0, cut before HashiCorp's licence
# change of 2023-08-10. v1.14.8 (2023-06-23) is the newest 1.14 patch from before that
# date that the Go module proxy serves; later 1.14 patches (1.14.9-1.14.11) came after
# it, so they are left alone although their LICENSE file still reads MPL-2.0. The 1.14
# line also predates the BUSL-only envoyextensions and troubleshoot modules.
# consul_install re-checks the licence and the module graph before building.

CONSUL_VERSION=v1.14.8
CONSUL_MODULE=github.com/hashicorp/consul

: "${CONSUL_HTTP_PORT:=8500}"
: "${CONSUL_SERVER_PORT:=8300}"
: "${CONSUL_SERF_LAN_PORT:=8301}"
: "${CONSUL_SERF_WAN_PORT:=8302}"
: "${CONSUL_LOG_LEVEL:=info}"

CONSUL_BIN="$CACHE_DIR/bin/consul-$CONSUL_VERSION"

# _consul_go DESCRIPTION ARGS...: run `go ARGS` in the build module with a self-contained
# cache; output goes to the build log, and a failure prints its tail and stops.
_consul_go() {
  local what=$1; shift
  local go_bin log="$RUN_DIR/consul-build.log"
  go_bin=$(command -v go || echo /usr/local/go/bin/go)
  # -modcacherw: the module cache stays deletable with a plain rm -rf .cache.
  if ! env -C "$CACHE_DIR/consul-build" \
      GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -modcacherw" \
      GOPATH="$CACHE_DIR/go" GOMODCACHE="$CACHE_DIR/go/pkg/mod" GOCACHE="$CACHE_DIR/go/cache" \
      "$go_bin" "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "consul: $what failed (full log: $log)"
  fi
}

consul_install() {
  local build_dir="$CACHE_DIR/consul-build" log="$RUN_DIR/consul-build.log"
  local mod_dir bad

  # Cached: one binary per version, so a version bump rebuilds and a rollback is free.
  if [ -x "$CONSUL_BIN" ]; then
    ln -sfn "consul-$CONSUL_VERSION" "$CACHE_DIR/bin/consul"
    return 0
  fi

  [ -x "$(command -v go || echo /usr/local/go/bin/go)" ] || die "consul: no Go toolchain (go or /usr/local/go/bin/go) to build it with"
  say "consul: building $CONSUL_VERSION from the Go module proxy (cold: ~10 min on 2 cores; log: $log)"
  : >"$log"

  # A fresh wrapper module each time: the go.mod template and go get are the only inputs.
  rm -rf "$build_dir"
  mkdir -p "$build_dir" "$CACHE_DIR/bin"
  cp "$ROOT_DIR/infra/consul/go.mod.in" "$build_dir/go.mod"

  # Licence gate, before anything is built: the module's LICENSE must be MPL-2.0,
  # no Go file may carry a BUSL header, and it must not require the BUSL-only modules.
  say "consul: downloading $CONSUL_MODULE@$CONSUL_VERSION and checking its licence"
  _consul_go "download of $CONSUL_MODULE@$CONSUL_VERSION" mod download -json "$CONSUL_MODULE@$CONSUL_VERSION"
  mod_dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' "$log" | tail -n 1)
  [ -f "$mod_dir/LICENSE" ] || die "consul: no LICENSE in the downloaded module ($mod_dir)"
  if ! head -n 5 "$mod_dir/LICENSE" | grep -q 'Mozilla Public License, version 2.0' \
      || grep -qi 'Business Source' "$mod_dir/LICENSE"; then
    head -n 5 "$mod_dir/LICENSE" >&2
    die "consul: $CONSUL_VERSION is not under MPL-2.0; refusing to build it"
  fi
  bad=$(grep -rl --include='*.go' 'SPDX-License-Identifier: BUSL' "$mod_dir" | head -n 3 || true)
  [ -z "$bad" ] || die "consul: $CONSUL_VERSION has BUSL-licensed files ($bad); refusing to build it"
  if grep -Eq "$CONSUL_MODULE/(envoyextensions|troubleshoot)" "$mod_dir/go.mod"; then
    die "consul: $CONSUL_VERSION requires the BUSL-licensed envoyextensions/troubleshoot modules; refusing"
  fi

  # Resolve the whole graph from Consul's go.mod (minimal version selection).
  say "consul: resolving dependencies"
  _consul_go "go get" get -tool "$CONSUL_MODULE@$CONSUL_VERSION"

  # Graph gate: neither BUSL module anywhere in the module graph, exactly the pinned Consul
  # in the build, and no module compiled into the binary with a Business Source LICENSE.
  # (Not `go list -m all`: it wants metadata of unused modules that the proxy may refuse.)
  _consul_go "go mod graph" mod graph
  if grep -Eq "$CONSUL_MODULE/(envoyextensions|troubleshoot)@" "$log"; then
    die "consul: the module graph holds a BUSL-licensed Consul module (envoyextensions/troubleshoot)"
  fi
  _consul_go "go list -deps" list -deps -f '{{with .Module}}MOD {{.Path}} {{.Version}} {{.Dir}}{{end}}' "$CONSUL_MODULE"
  grep -q "^MOD $CONSUL_MODULE $CONSUL_VERSION " "$log" \
    || die "consul: the build would not use $CONSUL_MODULE $CONSUL_VERSION (see $log)"
  bad=$(sed -n 's/^MOD [^ ]* [^ ]* //p' "$log" | sort -u | while read -r dir; do
    grep -lis 'Business Source License' "$dir"/LICENSE* "$dir"/COPYING* || true
  done | head -n 3)
  [ -z "$bad" ] || die "consul: a module in the build has a Business Source licence: $bad"

  # Build to a temporary name so an interrupted build never looks installed.
  say "consul: compiling (the slow part)"
  _consul_go "go build" build -trimpath -ldflags "-s -w" -o "$CONSUL_BIN.tmp" "$CONSUL_MODULE"
  mv -f "$CONSUL_BIN.tmp" "$CONSUL_BIN"
  ln -sfn "consul-$CONSUL_VERSION" "$CACHE_DIR/bin/consul"
  say "consul: installed $("$CONSUL_BIN" version | head -n 1) at $CONSUL_BIN"
}

# _consul_get PATH: print the body of GET http://127.0.0.1:$CONSUL_HTTP_PORT/PATH.
_consul_get() {
  local url="http://127.0.0.1:$CONSUL_HTTP_PORT$1"
  if command -v curl >/dev/null 2>&1; then
    curl -sf --max-time 2 "$url"
  else
    python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "$url"
  fi
}

# _consul_leader: print the raft leader's address; fails while there is none.
_consul_leader() {
  local leader
  leader=$(_consul_get /v1/status/leader 2>/dev/null) || return 1
  leader=${leader//\"/}
  [ -n "$leader" ] && printf '%s\n' "$leader"
}

# _consul_settled: true once the agent has a leader or has died (wait_until's condition).
_consul_settled() { _consul_leader >/dev/null || ! pid_alive consul; }

consul_start() {
  local port

  # Already up: a second start is a no-op.
  if pid_alive consul; then
    if wait_until 30 "consul leader" _consul_leader; then
      say "consul: already running (pid $(cat "$RUN_DIR/consul.pid")), leader $(_consul_leader)"
      return 0
    fi
    tail -n 20 "$RUN_DIR/consul.log" >&2
    die "consul: pid $(cat "$RUN_DIR/consul.pid") is running but has no leader after 30s"
  fi
  rm -f "$RUN_DIR/consul.pid"

  # Someone else's process on one of our ports would make the agent fail obscurely.
  for port in "$CONSUL_HTTP_PORT" "$CONSUL_SERVER_PORT" "$CONSUL_SERF_LAN_PORT" "$CONSUL_SERF_WAN_PORT"; do
    if port_open "$port"; then
      die "consul: 127.0.0.1:$port is already in use by another process (set CONSUL_HTTP_PORT, CONSUL_SERVER_PORT, CONSUL_SERF_LAN_PORT or CONSUL_SERF_WAN_PORT)"
    fi
  done
  [ -x "$CONSUL_BIN" ] || die "consul: $CONSUL_BIN missing; run scripts/servers.sh install consul"

  # -dev: in-memory single server, no data dir. DNS and gRPC (only for Connect/Envoy) are off;
  # -pid-file lets the agent record its own pid (same as $!, and removed on clean exit).
  # setsid + nohup detach it from the calling shell and its terminal.
  say "consul: starting dev agent on 127.0.0.1:$CONSUL_HTTP_PORT"
  setsid nohup "$CONSUL_BIN" agent -dev -node=registry-dev \
    -bind=127.0.0.1 -advertise=127.0.0.1 -client=127.0.0.1 \
    -http-port="$CONSUL_HTTP_PORT" -dns-port=-1 -grpc-port=-1 -grpc-tls-port=-1 \
    -server-port="$CONSUL_SERVER_PORT" -serf-lan-port="$CONSUL_SERF_LAN_PORT" \
    -serf-wan-port="$CONSUL_SERF_WAN_PORT" \
    -log-level="$CONSUL_LOG_LEVEL" -pid-file="$RUN_DIR/consul.pid" \
    -hcl 'disable_update_check = true' \
    >"$RUN_DIR/consul.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/consul.pid"

  # Ready = a raft leader is elected (usually 1-3 s); stop early if the agent dies.
  wait_until 30 "consul leader" _consul_settled || true
  if ! pid_alive consul; then
    tail -n 20 "$RUN_DIR/consul.log" >&2
    rm -f "$RUN_DIR/consul.pid"
    die "consul: the agent exited during start (log: $RUN_DIR/consul.log)"
  fi
  if ! _consul_leader >/dev/null; then
    tail -n 20 "$RUN_DIR/consul.log" >&2
    stop_pid consul 5
    die "consul: no leader elected within 30s (log: $RUN_DIR/consul.log)"
  fi
  say "consul: ready (pid $(cat "$RUN_DIR/consul.pid")), leader $(_consul_leader)"
}

consul_status() {
  local pid leader version
  if ! pid_alive consul; then
    echo "consul: stopped"
    return 1
  fi
  pid=$(cat "$RUN_DIR/consul.pid")
  if ! leader=$(_consul_leader); then
    echo "consul: running (pid $pid) but not ready on 127.0.0.1:$CONSUL_HTTP_PORT (no leader)"
    return 1
  fi
  # The first "Version" in /v1/agent/self is Config.Version, e.g. 1.14.11.
  version=$(_consul_get /v1/agent/self | grep -m 1 -o '"Version": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/')
  echo "consul: running (pid $pid) on 127.0.0.1:$CONSUL_HTTP_PORT, leader $leader, version ${version:-unknown}"
}

consul_stop() { stop_pid consul; }

#!/usr/bin/env bash
# Install, start, stop and inspect the local Kafka, Consul and PostgreSQL on loopback.
#
#   scripts/servers.sh install|start|status|stop|restart [kafka|consul|postgres ...]
#
# With no server named, all three.  Everything goes into .cache/ (git-ignored, or
# $REGISTRY_CACHE_DIR); a second `start` reuses what is there and takes seconds.
# Ports: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), CONSUL_HTTP_PORT (8500),
# CONSUL_SERVER_PORT (8300), CONSUL_SERF_LAN_PORT (8301), CONSUL_SERF_WAN_PORT (8302),
# POSTGRES_PORT (5432).  Logs: .cache/run/<server>.log.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for server in kafka consul postgres; do
  source "$ROOT_DIR/scripts/servers/$server.sh"
done

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
}

action=${1:-}
[ -n "$action" ] || usage
shift
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(postgres consul kafka)

for server in "${servers[@]}"; do
  case $server in
    kafka|consul|postgres) ;;
    *) die "unknown server '$server' (kafka, consul or postgres)" ;;
  esac
done

status_rc=0
for server in "${servers[@]}"; do
  case $action in
    install) "${server}_install" ;;
    start)   "${server}_install"; "${server}_start" ;;
    stop)    "${server}_stop" ;;
    restart) "${server}_stop"; "${server}_install"; "${server}_start" ;;
    status)  "${server}_status" || status_rc=1 ;;
    *) usage ;;
  esac
done
exit $status_rc

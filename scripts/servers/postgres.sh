# PostgreSQL from Debian's package: a cluster of the project's own under .cache/postgres,
# owned by an unprivileged user (postgres refuses to run as root), on 127.0.0.1 only.
# Sourced by scripts/servers.sh.

POSTGRES_PORT=${POSTGRES_PORT:-5432}
POSTGRES_DB=${POSTGRES_DB:-registry}
POSTGRES_USER=${POSTGRES_USER:-registry}
POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-registry}
PG_DATA_DIR="$CACHE_DIR/postgres/data"

# The newest server Debian installed, e.g. /usr/lib/postgresql/15/bin.
pg_bin_dir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Run a command as the cluster's owner: root may not own a cluster.
as_pg_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# The owner must reach the data directory through every parent, and a checkout in a
# folder made by mktemp -d is closed to others: open each parent for traversal only.
grant_traverse_to_pg_owner() {
  local dir=$1
  while [ "$dir" != / ]; do
    if ! runuser -u postgres -- test -x "$dir"; then
      say "postgres: allowing the postgres user to traverse $dir"
      chmod o+x "$dir"
    fi
    dir=$(dirname "$dir")
  done
}

postgres_install() {
  if [ -z "$(pg_bin_dir)" ]; then
    say "postgres: installing Debian's postgresql package"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq postgresql >/dev/null
    else
      die "postgres: Debian's postgresql package is missing; install it (apt-get install postgresql)"
    fi
  fi

  # Debian's package starts its own cluster on 5432; we run ours, so keep theirs out
  # of the way when it would take our port.
  if [ "$POSTGRES_PORT" = 5432 ] && command -v pg_lsclusters >/dev/null \
      && pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 && $4 == "online"' | grep -q .; then
    say "postgres: stopping Debian's system cluster, which holds port 5432"
    pg_lsclusters -h | awk '$3 == 5432 {print $1, $2}' | while read -r version name; do
      pg_ctlcluster "$version" "$name" stop || true
    done
  fi

  if [ -f "$PG_DATA_DIR/PG_VERSION" ]; then
    return 0
  fi

  say "postgres: creating a cluster in $PG_DATA_DIR"
  mkdir -p "$PG_DATA_DIR"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$CACHE_DIR/postgres"
    grant_traverse_to_pg_owner "$CACHE_DIR/postgres"
  fi
  local pwfile
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  chmod 644 "$pwfile"
  as_pg_owner "$(pg_bin_dir)/initdb" -D "$PG_DATA_DIR" -U "$POSTGRES_USER" \
    --pwfile="$pwfile" --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
    > "$RUN_DIR/postgres-initdb.log" 2>&1 || { rm -f "$pwfile"; tail -n 20 "$RUN_DIR/postgres-initdb.log"; die "postgres: initdb failed"; }
  rm -f "$pwfile"
}

postgres_ready() {
  "$(pg_bin_dir)/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT"
}

postgres_start() {
  if postgres_ready && [ -f "$PG_DATA_DIR/postmaster.pid" ]; then
    say "postgres: already running on 127.0.0.1:$POSTGRES_PORT"
    return 0
  fi
  if port_open "$POSTGRES_PORT"; then
    die "postgres: port $POSTGRES_PORT is taken by another process; set POSTGRES_PORT"
  fi

  say "postgres: starting on 127.0.0.1:$POSTGRES_PORT"
  touch "$RUN_DIR/postgres.log"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$RUN_DIR/postgres.log"

  # fsync off: a test and demo cluster whose data can be rebuilt; say so to anyone who
  # copies these flags into production.
  as_pg_owner "$(pg_bin_dir)/pg_ctl" -D "$PG_DATA_DIR" -l "$RUN_DIR/postgres.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $POSTGRES_PORT -k /tmp -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { tail -n 20 "$RUN_DIR/postgres.log"; die "postgres: did not start"; }
  wait_until 30 "postgres ready" postgres_ready || die "postgres: not accepting connections"

  # Create the database once; the cluster's superuser is $POSTGRES_USER.
  if ! PGPASSWORD=$POSTGRES_PASSWORD psql -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$POSTGRES_USER" \
      -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$POSTGRES_DB'" | grep -q 1; then
    PGPASSWORD=$POSTGRES_PASSWORD createdb -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$POSTGRES_USER" "$POSTGRES_DB"
  fi
  say "postgres: ready, dsn postgresql://$POSTGRES_USER:***@127.0.0.1:$POSTGRES_PORT/$POSTGRES_DB"
}

postgres_status() {
  if postgres_ready; then
    local version
    version=$(PGPASSWORD=$POSTGRES_PASSWORD psql -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$POSTGRES_USER" \
      -d postgres -tAc 'SHOW server_version' 2>/dev/null || echo '?')
    echo "postgres: running on 127.0.0.1:$POSTGRES_PORT, version $version, data $PG_DATA_DIR"
    return 0
  fi
  echo "postgres: stopped"
  return 1
}

postgres_stop() {
  if [ -f "$PG_DATA_DIR/postmaster.pid" ]; then
    as_pg_owner "$(pg_bin_dir)/pg_ctl" -D "$PG_DATA_DIR" -m fast -w stop >/dev/null \
      && say "postgres: stopped" || say "postgres: stop failed, see $RUN_DIR/postgres.log"
  else
    say "postgres: not running"
  fi
}

# Apache Kafka, single node in KRaft mode, on loopback; sourced by scripts/servers.sh.
#
# The jars come from Maven Central (infra/kafka/pom.xml), not from a release tarball, since
# the machines reach only package registries.  Settings (environment):
#   KAFKA_VERSION (4.0.2)  KAFKA_PORT (9092)  KAFKA_CONTROLLER_PORT (9093)
#   KAFKA_PARTITIONS (8)   partitions of auto-created topics (= Faust topic_partitions)
#   KAFKA_DATA_DIR ($CACHE_DIR/kafka-data)  KAFKA_START_TIMEOUT (90 s)
#   KAFKA_RESET=1          on start: stop the broker and wipe its data first
#   KAFKA_JAVA_OPTS        extra JVM options
# Other 4.x versions work if infra/kafka/pom.xml's logging pins still fit; 3.x does not
# (different logging binding).

KAFKA_VERSION=${KAFKA_VERSION:-4.0.2}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_DATA_DIR=${KAFKA_DATA_DIR:-$CACHE_DIR/kafka-data}
KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_INFRA="$ROOT_DIR/infra/kafka"

# Stamp written after a complete copy: records version and pom checksum, so an interrupted
# download or an edited pom.xml triggers a fresh install.
_kafka_stamp() {
  printf '%s %s\n' "$KAFKA_VERSION" "$(sha256sum "$KAFKA_INFRA/pom.xml" | cut -d' ' -f1)"
}

kafka_install() {
  local libs="$KAFKA_HOME/libs" log="$RUN_DIR/kafka-install.log"
  if [ -f "$libs/kafka_2.13-$KAFKA_VERSION.jar" ] &&
     [ "$(cat "$KAFKA_HOME/.installed" 2>/dev/null)" = "$(_kafka_stamp)" ]; then
    return 0
  fi

  command -v java >/dev/null || die "kafka: java not found (Kafka $KAFKA_VERSION needs Java 17+)"
  command -v mvn >/dev/null || die "kafka: mvn not found (needed once to fetch the Kafka jars)"
  say "kafka: fetching Kafka $KAFKA_VERSION jars from Maven Central (log: $log)"

  # Copy into a scratch dir and rename at the end, so libs/ is never half-filled.
  # The plugin version is pinned: Maven 3.8.7 would otherwise pick the ancient 2.8.
  rm -rf "$libs.tmp" "$KAFKA_HOME/.installed"
  mkdir -p "$KAFKA_HOME"
  if ! mvn -B -q \
       -f "$KAFKA_INFRA/pom.xml" \
       -Dmaven.repo.local="$CACHE_DIR/m2" \
       -Dkafka.version="$KAFKA_VERSION" \
       org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
       -DincludeScope=runtime -DoutputDirectory="$libs.tmp" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "kafka: mvn could not fetch the jars (full log: $log)"
  fi
  [ -f "$libs.tmp/kafka_2.13-$KAFKA_VERSION.jar" ] || die "kafka: kafka_2.13-$KAFKA_VERSION.jar missing after mvn (log: $log)"

  rm -rf "$libs"
  mv "$libs.tmp" "$libs"
  _kafka_stamp >"$KAFKA_HOME/.installed"
  say "kafka: installed $(find "$libs" -name '*.jar' | wc -l) jars in $libs"
}

# java command line: modest heap and G1 as in kafka-run-class.sh, logging via our log4j2 file.
# log4j2's own shutdown hook would stop logging while Kafka's hook still shuts down
# ("Unable to register Log4j shutdown hook..."), hiding the shutdown lines: disabled.
read -ra _kafka_extra_opts <<<"${KAFKA_JAVA_OPTS:-}"
_KAFKA_JAVA=(java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20
  -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
  -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$KAFKA_INFRA/log4j2.properties"
  -Dlog4j2.shutdownHookEnabled=false
  "${_kafka_extra_opts[@]}"
  -cp "$KAFKA_HOME/libs/*")

# True when the pid file names a live broker of ours (guards against a reused pid).
_kafka_running() {
  pid_alive kafka && grep -qa 'kafka\.Kafka' "/proc/$(cat "$RUN_DIR/kafka.pid")/cmdline" 2>/dev/null
}

_kafka_ready() {
  _kafka_running && port_open "$KAFKA_PORT" &&
    grep -q 'Kafka Server started' "$RUN_DIR/kafka.log" 2>/dev/null
}

kafka_start() {
  local log="$RUN_DIR/kafka.log" conf="$KAFKA_DATA_DIR/server.properties"
  local logdir="$KAFKA_DATA_DIR/log" timeout=${KAFKA_START_TIMEOUT:-90} port template cid deadline

  if [ "${KAFKA_RESET:-0}" = 1 ]; then
    _kafka_running && kafka_stop
    say "kafka: KAFKA_RESET=1, wiping $KAFKA_DATA_DIR"
    rm -rf "$KAFKA_DATA_DIR"
  fi

  if _kafka_ready; then
    say "kafka: already running (pid $(cat "$RUN_DIR/kafka.pid")) on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  if _kafka_running; then
    # Started by someone else moments ago: just wait for it below.
    say "kafka: pid $(cat "$RUN_DIR/kafka.pid") is starting, waiting for it"
  else
    rm -f "$RUN_DIR/kafka.pid"
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
      if port_open "$port"; then
        die "kafka: port 127.0.0.1:$port is already taken by another process (see: ss -ltnp 'sport = :$port'); stop it or set KAFKA_PORT / KAFKA_CONTROLLER_PORT"
      fi
    done

    # Keep the previous run's log; the readiness check greps a fresh one.
    [ -f "$log" ] && mv "$log" "$log.1"

    # Real config: the template with ports, partitions and the absolute data path filled in.
    mkdir -p "$logdir"
    template=$(<"$KAFKA_INFRA/server.properties")
    template=${template//@PORT@/"$KAFKA_PORT"}
    template=${template//@CONTROLLER_PORT@/"$KAFKA_CONTROLLER_PORT"}
    template=${template//@PARTITIONS@/"${KAFKA_PARTITIONS:-8}"}
    template=${template//@LOG_DIR@/"$logdir"}
    printf '%s\n' "$template" >"$conf"

    # KRaft storage must be formatted once (cluster id + metadata version); later starts
    # skip this JVM run.  Static voters in the config, so no --standalone.
    if [ ! -f "$logdir/meta.properties" ]; then
      # Cluster id as `kafka-storage.sh random-uuid` makes it (16 random bytes, base64url,
      # not starting with '-'), without paying for another JVM start.
      cid=-
      while [ "${cid:0:1}" = - ]; do
        cid=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
      done
      if ! "${_KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$cid" -c "$conf" --ignore-formatted >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "kafka: formatting $logdir failed"
      fi
    fi

    # Detached (own session, immune to hangups) so it outlives this script; the child
    # writes its own pid just before exec'ing the JVM.
    # shellcheck disable=SC2016  # $$ and $@ belong to the inner shell
    setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$RUN_DIR/kafka.pid" \
      "${_KAFKA_JAVA[@]}" kafka.Kafka "$conf" >>"$log" 2>&1 </dev/null &
    say "kafka: starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (log: $log)"
  fi

  # Ready = "Kafka Server started" logged and the client port answering; fail early if
  # the JVM dies.
  deadline=$((SECONDS + timeout))
  until _kafka_ready; do
    if [ -f "$RUN_DIR/kafka.pid" ] && ! _kafka_running; then
      tail -n 40 "$log" >&2
      rm -f "$RUN_DIR/kafka.pid"
      die "kafka: the broker exited during startup (log: $log)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 40 "$log" >&2
      die "kafka: not ready after ${timeout}s, still running as pid $(cat "$RUN_DIR/kafka.pid" 2>/dev/null) (log: $log)"
    fi
    sleep 0.3
  done
  say "kafka: ready (pid $(cat "$RUN_DIR/kafka.pid")) on 127.0.0.1:$KAFKA_PORT"
}

kafka_status() {
  local version
  if _kafka_ready; then
    # The version the running broker reported (AppInfoParser line), not the one configured.
    version=$(grep -m1 -o 'Kafka version: [^ ]*' "$RUN_DIR/kafka.log" | cut -d' ' -f3)
    echo "kafka: running (pid $(cat "$RUN_DIR/kafka.pid")) on 127.0.0.1:$KAFKA_PORT, version ${version:-$KAFKA_VERSION}, data $KAFKA_DATA_DIR"
    return 0
  fi
  if _kafka_running; then
    echo "kafka: not ready (pid $(cat "$RUN_DIR/kafka.pid")), 127.0.0.1:$KAFKA_PORT not answering yet (log: $RUN_DIR/kafka.log)"
    return 1
  fi
  echo "kafka: stopped"
  return 1
}

kafka_stop() {
  # A stale pid file must not make stop_pid signal an unrelated process.
  _kafka_running || rm -f "$RUN_DIR/kafka.pid"
  # SIGTERM = controlled shutdown (flushes logs, closes the metadata log); allow time.
  stop_pid kafka 120
}

#!/usr/bin/env bash
# Local infrastructure for development and tests: a private PostgreSQL cluster
# and a single-node Apache Kafka broker (KRaft), both bound to 127.0.0.1.
#
#   scripts/infra.sh up       install what is missing, start both, wait until both answer
#   scripts/infra.sh down     stop both (idempotent)
#   scripts/infra.sh status   state of both; exit 0 only if both are up
#   scripts/infra.sh env      export lines for eval: eval "$(scripts/infra.sh env)"
#   scripts/infra.sh install  install PostgreSQL packages and the Kafka jars, start nothing
#   scripts/infra.sh pg-up | pg-down | kafka-up | kafka-down
#   scripts/infra.sh kafka-run-class CLASS [ARGS...]   run a Kafka tool from the cached jars,
#       e.g. org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:59092 --list
#
# State (data, pid files, logs) lives in <repo>/.infra/ (git-ignored).
# Downloads are cached machine-wide in ~/.cache/osago/ (and Maven's ~/.m2).
#
# Environment overrides:
#   OSAGO_PG_PORT (55432)  OSAGO_KAFKA_PORT (59092)  OSAGO_KAFKA_CONTROLLER_PORT (59093)
#   OSAGO_INFRA_TIMEOUT (90, seconds to wait for a service)  OSAGO_CACHE_DIR (~/.cache/osago)
set -euo pipefail

KAFKA_VERSION="${OSAGO_KAFKA_VERSION:-4.1.1}"
# Tried in order, only when KAFKA_VERSION cannot be resolved.
KAFKA_FALLBACK_VERSIONS="4.4.0 4.0.1"

PG_PORT="${OSAGO_PG_PORT:-55432}"
KAFKA_PORT="${OSAGO_KAFKA_PORT:-59092}"
KAFKA_CONTROLLER_PORT="${OSAGO_KAFKA_CONTROLLER_PORT:-59093}"
TIMEOUT="${OSAGO_INFRA_TIMEOUT:-90}"
HOST=127.0.0.1

PG_OS_USER=osago-pg            # initdb/postgres refuse to run as root
PG_SUPERUSER=postgres
PG_SUPERUSER_PASSWORD=postgres
PG_APP_USER=osago
PG_APP_PASSWORD=osago
PG_APP_DB=osago
# glibc's malloc gives a backend's freed heap back to the kernel once its top exceeds a
# threshold that adapts to the largest block freed, and takes it back page fault by page fault
# at the next statement: under load 7 % of core-app's database CPU went into brk and its
# faults (bench/FINDINGS.md, twentieth pass). These keep up to 32 MiB a backend instead.
PG_MALLOC_TUNABLES=glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=33554432:glibc.malloc.top_pad=4194304

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
INFRA_SRC="$REPO_ROOT/infra"
STATE_DIR="$REPO_ROOT/.infra"
PG_DIR="$STATE_DIR/pg"
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/pg.log"
KAFKA_DIR="$STATE_DIR/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
KAFKA_PID_FILE="$KAFKA_DIR/kafka.pid"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_CLUSTER_ID_FILE="$KAFKA_DIR/cluster.id"
CACHE_DIR="${OSAGO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/osago}"

export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- helpers

say()  { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [[ $EUID -eq 0 ]]; }

# Print the last lines of a log file to stderr (used before dying).
show_log_tail() {
  local file=$1 lines=${2:-40}
  if [[ -f $file ]]; then
    printf -- '---- last %s lines of %s ----\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2 || true
    printf -- '----\n' >&2
  fi
}

# True if PID $1 is alive and not a zombie waiting to be reaped.
pid_alive() {
  local pid=$1 state
  [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/stat ]] || return 1
  state="$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)"
  [[ -n $state && $state != Z && $state != X ]]
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

apt_updated=0
apt_install() {
  is_root || die "need root to install packages: $*"
  if [[ $apt_updated -eq 0 ]]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Serialise state-changing commands of this checkout (fd 8).
lock_state() {
  mkdir -p "$STATE_DIR"
  exec 8>"$STATE_DIR/.lock"
  flock 8
}

# ---------------------------------------------------------------- PostgreSQL

# Newest /usr/lib/postgresql/<major>/bin that has initdb.
pg_bindir() {
  local f best=""
  for f in /usr/lib/postgresql/*/bin/initdb; do
    [[ -x $f ]] && best="$(printf '%s\n%s\n' "$best" "${f%/initdb}" | sort -V | tail -n 1)"
  done
  [[ -n $best ]] && printf '%s\n' "$best"
}

pg_install() {
  local bindir
  if bindir="$(pg_bindir)"; then
    say "PostgreSQL $(basename "$(dirname "$bindir")") already installed ($bindir)"
    return
  fi
  say "installing PostgreSQL (apt-get)…"
  pg_skip_system_cluster
  apt_install postgresql
  bindir="$(pg_bindir)" || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
  say "PostgreSQL installed ($bindir)"
}

# On a machine without PostgreSQL, tell Debian's package not to create and
# start its own "main" cluster on port 5432: we only use a private cluster.
pg_skip_system_cluster() {
  local conf=/etc/postgresql-common/createcluster.conf
  [[ -e $conf ]] && return
  mkdir -p "$(dirname "$conf")"
  printf '# Written by osago scripts/infra.sh before installing PostgreSQL.\ncreate_main_cluster = false\n' >"$conf"
  export UCF_FORCE_CONFFOLD=1   # keep this file when postgresql-common installs
}

PG_BIN=""
pg_require_bin() {
  [[ -n $PG_BIN ]] && return
  # An existing cluster needs the binaries of its own major version.
  local major
  major="$(cat "$PG_DATA/PG_VERSION" 2>/dev/null || true)"
  if [[ -n $major && -x /usr/lib/postgresql/$major/bin/postgres ]]; then
    PG_BIN=/usr/lib/postgresql/$major/bin
    return
  fi
  PG_BIN="$(pg_bindir)" || die "PostgreSQL is not installed; run: scripts/infra.sh install"
}

# Unix socket directory: inside .infra/pg unless the socket path would exceed
# the kernel's 107-byte limit (very deep checkouts); then a per-checkout /tmp dir.
pg_socket_dir() {
  local dir="$PG_DIR"
  if (( ${#dir} + ${#PG_PORT} + 12 > 100 )); then
    dir="${TMPDIR:-/tmp}/osago-pg-$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1)"
  fi
  printf '%s\n' "$dir"
}

# Run a command as the unprivileged cluster owner (or as ourselves if not root).
as_pg() {
  if is_root; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

pg_ensure_os_user() {
  is_root || return 0
  if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
    say "creating system user $PG_OS_USER"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$PG_OS_USER"
  fi
}

# The cluster owner must be able to reach .infra/pg through every parent dir.
pg_check_traversable() {
  is_root || return 0
  local dir="$STATE_DIR"
  if as_pg test -x "$dir"; then
    return 0
  fi
  # Find the first parent directory that blocks the way, for a useful message.
  local path="" part
  IFS='/' read -r -a parts <<<"${dir#/}"
  for part in "${parts[@]}"; do
    path="$path/$part"
    if ! as_pg test -x "$path"; then
      die "user $PG_OS_USER cannot enter $path ($(stat -c '%A %U:%G' "$path")); PostgreSQL data must live under a traversable path. Fix with: chmod o+x $path  (or move the checkout)"
    fi
  done
  die "user $PG_OS_USER cannot enter $dir"
}

pg_prepare_dirs() {
  pg_ensure_os_user
  mkdir -p "$STATE_DIR"
  chmod 755 "$STATE_DIR"
  mkdir -p "$PG_DIR"
  pg_check_traversable
  if is_root; then
    chown "$PG_OS_USER:$PG_OS_USER" "$PG_DIR"
    # e.g. after the system user was recreated with another uid
    if [[ -d $PG_DATA && "$(stat -c %U "$PG_DATA")" != "$PG_OS_USER" ]]; then
      chown -R "$PG_OS_USER:$PG_OS_USER" "$PG_DATA"
    fi
    if [[ -f $PG_LOG ]]; then chown "$PG_OS_USER:$PG_OS_USER" "$PG_LOG"; fi
  fi
  chmod 700 "$PG_DIR"
  local sock
  sock="$(pg_socket_dir)"
  if [[ $sock != "$PG_DIR" ]]; then
    mkdir -p "$sock"
    is_root && chown "$PG_OS_USER:$PG_OS_USER" "$sock"
    chmod 700 "$sock"
  fi
}

pg_initdb() {
  if [[ -f $PG_DATA/PG_VERSION ]]; then
    return
  fi
  say "initialising PostgreSQL cluster in $PG_DATA"
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_SUPERUSER" -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 \
    || { show_log_tail "$PG_DIR/initdb.log"; die "initdb failed"; }
  # Our settings live in osago.conf (rewritten at every start); include it last.
  printf "\n# Added by scripts/infra.sh\ninclude_if_exists = 'osago.conf'\n" \
    | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

# pg_stat_statements, for make bench-profile, which turns tracking on for its run and reports
# the cost of each statement; off, the module costs a hook call and a query id per statement
# planned. Only when the package has it: a library named here but missing stops Postgres.
pg_stat_statements_conf() {
  if [[ -f "$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo "${PG_BIN%/bin}/lib")/pg_stat_statements.so" ]]; then
    printf "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = 'none'\n"
  fi
}

# (Re)write the settings that depend on the environment (port, socket dir).
pg_write_config() {
  as_pg tee "$PG_DATA/osago.conf" >/dev/null <<EOF
# Written by scripts/infra.sh at every start; edits are overwritten.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$(pg_socket_dir)'
max_connections = 200
password_encryption = 'scram-sha-256'
logging_collector = off
$(pg_stat_statements_conf)
EOF
  as_pg tee "$PG_DATA/pg_hba.conf" >/dev/null <<EOF
# Written by scripts/infra.sh. The socket dir is private to the cluster owner
# (and root), so trust there; TCP needs a password.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   $HOST/32   scram-sha-256
EOF
}

# PID of the postmaster of our cluster, if it is alive. Removes a stale
# postmaster.pid (process gone, or the PID now belongs to something else).
pg_running_pid() {
  local pidfile="$PG_DATA/postmaster.pid" pid
  [[ -f $pidfile ]] || return 1
  pid="$(head -n 1 "$pidfile" 2>/dev/null || true)"
  if pid_alive "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == postgres* ]]; then
    printf '%s\n' "$pid"
    return 0
  fi
  warn "removing stale $pidfile (pid ${pid:-?} is not running)"
  rm -f "$pidfile"
  pg_remove_stale_socket_locks
  return 1
}

# After a crash the socket lock file still names the dead postmaster; postgres
# refuses to start while that PID exists, even as an unreaped zombie.
pg_remove_stale_socket_locks() {
  local lock pid
  for lock in "$(pg_socket_dir)"/.s.PGSQL.*.lock; do
    [[ -f $lock ]] || continue
    pid="$(head -n 1 "$lock" 2>/dev/null || true)"
    if ! pid_alive "$pid"; then
      rm -f "$lock" "${lock%.lock}"
    fi
  done
}

pg_psql_admin() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$(pg_socket_dir)" -p "$PG_PORT" \
    -U "$PG_SUPERUSER" -d postgres
}

pg_ensure_roles() {
  pg_psql_admin >/dev/null <<SQL
ALTER ROLE $PG_SUPERUSER PASSWORD '$PG_SUPERUSER_PASSWORD';
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_APP_USER') THEN
    CREATE ROLE $PG_APP_USER LOGIN CREATEDB PASSWORD '$PG_APP_PASSWORD';
  ELSE
    ALTER ROLE $PG_APP_USER LOGIN CREATEDB PASSWORD '$PG_APP_PASSWORD';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_APP_DB OWNER $PG_APP_USER'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_APP_DB')
\gexec
SQL
}

pg_url()       { printf 'postgres://%s:%s@%s:%s/%s\n' "$PG_APP_USER" "$PG_APP_PASSWORD" "$HOST" "$PG_PORT" "$PG_APP_DB"; }
pg_admin_url() { printf 'postgres://%s:%s@%s:%s/postgres\n' "$PG_SUPERUSER" "$PG_SUPERUSER_PASSWORD" "$HOST" "$PG_PORT"; }

pg_wait_ready() {
  local pid=$1 deadline=$((SECONDS + TIMEOUT))
  say "waiting for PostgreSQL on $HOST:$PG_PORT…"
  until "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2; do
    if ! pid_alive "$pid"; then
      show_log_tail "$PG_LOG"
      die "PostgreSQL (pid $pid) exited"
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$PG_LOG"
      die "PostgreSQL did not accept connections on $HOST:$PG_PORT within ${TIMEOUT}s"
    fi
    sleep 1
  done
  pg_ensure_roles || { show_log_tail "$PG_LOG"; die "could not create role/database in PostgreSQL"; }
  # A real query over TCP with the application's password.
  "$PG_BIN/psql" -X -q -At "$(pg_url)" -c 'select 1' >/dev/null \
    || { show_log_tail "$PG_LOG"; die "PostgreSQL is up but '$(pg_url)' cannot run 'select 1'"; }
  say "PostgreSQL is ready: $(pg_url)"
}

pg_up() {
  pg_require_bin
  pg_prepare_dirs
  pg_initdb
  local pid
  if pid="$(pg_running_pid)"; then
    say "PostgreSQL already running (pid $pid), reusing it"
  else
    if port_open "$PG_PORT"; then
      die "port $HOST:$PG_PORT is already in use by another process; set OSAGO_PG_PORT or stop it"
    fi
    pg_remove_stale_socket_locks
    pg_write_config
    say "starting PostgreSQL on $HOST:$PG_PORT…"
    if ! as_pg env GLIBC_TUNABLES="$PG_MALLOC_TUNABLES" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$TIMEOUT" start >/dev/null 8>&- 9>&-; then
      show_log_tail "$PG_LOG"
      die "PostgreSQL failed to start"
    fi
    pid="$(pg_running_pid)" || { show_log_tail "$PG_LOG"; die "PostgreSQL exited right after start"; }
  fi
  pg_wait_ready "$pid"
}

pg_down() {
  local pid
  if [[ ! -d $PG_DATA ]] || ! pid="$(pg_running_pid)"; then
    say "PostgreSQL already stopped"
    return
  fi
  pg_require_bin
  say "stopping PostgreSQL (pid $pid)…"
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null; then
    show_log_tail "$PG_LOG"
    die "PostgreSQL did not stop"
  fi
  say "PostgreSQL stopped"
}

pg_status() {
  local pid state=stopped rc=1
  if [[ -d $PG_DATA ]] && pid="$(pg_running_pid 2>/dev/null)"; then
    state="running (not answering on $HOST:$PG_PORT)"
    pg_require_bin
    if "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2; then
      state=running
      rc=0
    fi
  fi
  printf 'postgres: %s\n' "$state"
  printf '  pid:      %s\n' "${pid:--}"
  printf '  port:     %s:%s\n' "$HOST" "$PG_PORT"
  printf '  url:      %s\n' "$(pg_url)"
  printf '  data dir: %s\n' "$PG_DATA"
  printf '  log file: %s\n' "$PG_LOG"
  return $rc
}

# ---------------------------------------------------------------- Kafka

kafka_cache_dir() { printf '%s/kafka-%s\n' "$CACHE_DIR" "$1"; }

# The marker records which POM produced the jars, so editing the POM re-syncs.
kafka_marker_content() {
  printf 'kafka %s\npom %s\n' "$1" "$(sha256sum "$INFRA_SRC/kafka/pom.xml" | cut -d' ' -f1)"
}

kafka_cache_complete() {
  local marker
  marker="$(kafka_cache_dir "$1")/.complete"
  [[ -f $marker ]] && [[ "$(cat "$marker")" == "$(kafka_marker_content "$1")" ]]
}

# Prints the directory with the Kafka jars (first complete cache among the
# preferred version and its fallbacks).
KAFKA_LIBS=""
KAFKA_RESOLVED_VERSION=""
kafka_find_libs() {
  local v
  for v in $KAFKA_VERSION $KAFKA_FALLBACK_VERSIONS; do
    if kafka_cache_complete "$v"; then
      KAFKA_LIBS="$(kafka_cache_dir "$v")/libs"
      KAFKA_RESOLVED_VERSION=$v
      return 0
    fi
  done
  return 1
}

kafka_require_libs() {
  [[ -n $KAFKA_LIBS ]] && return
  kafka_find_libs || die "Kafka jars are not installed; run: scripts/infra.sh install"
}

java_install() {
  if ! command -v java >/dev/null 2>&1; then
    say "installing a Java runtime (apt-get)…"
    apt_install default-jre-headless
  fi
  if ! command -v mvn >/dev/null 2>&1 && ! kafka_find_libs; then
    say "installing Maven (apt-get)…"
    apt_install maven
  fi
}

# Copy Kafka $1 and its runtime dependencies into the cache. Returns non-zero
# if Maven cannot resolve that version.
kafka_fetch() {
  local v=$1 dir tmp mvn_log
  dir="$(kafka_cache_dir "$v")"
  tmp="$dir/libs.tmp.$$"
  mvn_log="$dir/mvn.log"
  say "installing Kafka $v into cache $dir (Maven)…"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -q -B -Dstyle.color=never -f "$INFRA_SRC/kafka/pom.xml" \
        -Dkafka.version="$v" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
    rm -rf "$tmp"
    warn "Maven could not resolve Kafka $v (see $mvn_log)"
    grep -m 3 '\[ERROR\]' "$mvn_log" >&2 || true
    return 1
  fi
  [[ -f $tmp/kafka_2.13-$v.jar ]] || { rm -rf "$tmp"; warn "kafka_2.13-$v.jar missing after Maven"; return 1; }
  rm -rf "$dir/libs"
  mv "$tmp" "$dir/libs"
  kafka_marker_content "$v" >"$dir/.complete"
  local jars=("$dir"/libs/*.jar)
  say "Kafka $v installed (${#jars[@]} jars, $(du -sh "$dir/libs" | cut -f1))"
}

kafka_install() {
  if kafka_find_libs; then
    say "Kafka $KAFKA_RESOLVED_VERSION already installed ($KAFKA_LIBS)"
    return
  fi
  mkdir -p "$CACHE_DIR"
  # Machine-wide cache: keep two checkouts from downloading at the same time.
  exec 9>"$CACHE_DIR/.kafka-install.lock"
  flock 9
  if ! kafka_find_libs; then
    local v
    for v in $KAFKA_VERSION $KAFKA_FALLBACK_VERSIONS; do
      if kafka_fetch "$v"; then
        break
      fi
    done
    kafka_find_libs || die "could not install any of Kafka $KAFKA_VERSION $KAFKA_FALLBACK_VERSIONS"
  fi
  exec 9>&-
}

# Run a Kafka main class with the cached jars and quiet tool logging.
kafka_run_class() {
  kafka_require_libs
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$INFRA_SRC/kafka/tools-log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$@"
}

kafka_write_config() {
  cat >"$KAFKA_PROPS" <<EOF
# Written by scripts/infra.sh at every start; edits are overwritten.
# Single-node KRaft: this process is both broker and controller.
process.roles=broker,controller
node.id=1
# Static quorum: the voter set lives here, not in the log, so ports can change.
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT

log.dirs=$KAFKA_DATA
num.partitions=6
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
EOF
}

kafka_format_storage() {
  if [[ -f $KAFKA_DATA/meta.properties ]]; then
    return
  fi
  local cluster_id
  if [[ -s $KAFKA_CLUSTER_ID_FILE ]]; then
    cluster_id="$(cat "$KAFKA_CLUSTER_ID_FILE")"
  else
    cluster_id="$(kafka_run_class kafka.tools.StorageTool random-uuid)"
    printf '%s\n' "$cluster_id" >"$KAFKA_CLUSTER_ID_FILE"
  fi
  say "formatting Kafka storage in $KAFKA_DATA (cluster id $cluster_id)"
  mkdir -p "$KAFKA_DATA"
  kafka_run_class kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_PROPS" \
    >"$KAFKA_DIR/format.log" 2>&1 \
    || { show_log_tail "$KAFKA_DIR/format.log"; die "kafka storage format failed"; }
}

# True if PID $1 is our broker (guards against PID reuse after a crash).
kafka_is_our_process() {
  local pid=$1
  pid_alive "$pid" \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "kafka.Kafka $KAFKA_PROPS"
}

# PID of our running broker. Drops a stale pid file; adopts a broker of this
# checkout that lost its pid file.
kafka_running_pid() {
  local pid=""
  if [[ -f $KAFKA_PID_FILE ]]; then
    pid="$(cat "$KAFKA_PID_FILE" 2>/dev/null || true)"
    if kafka_is_our_process "$pid"; then
      printf '%s\n' "$pid"
      return 0
    fi
    warn "removing stale $KAFKA_PID_FILE (pid ${pid:-?} is not our Kafka)"
    rm -f "$KAFKA_PID_FILE"
  fi
  local p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    if kafka_is_our_process "$p"; then
      warn "found Kafka of this checkout without pid file (pid $p), adopting it"
      printf '%s\n' "$p" >"$KAFKA_PID_FILE"
      printf '%s\n' "$p"
      return 0
    fi
  done
  return 1
}

kafka_start_process() {
  {
    printf '\n===== %s starting Kafka %s (scripts/infra.sh) =====\n' \
      "$(date '+%F %T')" "$KAFKA_RESOLVED_VERSION"
  } >>"$KAFKA_LOG"
  rm -f "$KAFKA_PID_FILE"
  # The subshell writes its own PID, then execs java: the pid file is exact.
  # setsid + nohup + closed stdin: the broker outlives this shell and its terminal.
  # shellcheck disable=SC2016  # expanded by the inner bash, not here
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PID_FILE" \
    java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KAFKA_DIR" \
    -Dlog4j2.configurationFile="$INFRA_SRC/kafka/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
    </dev/null >>"$KAFKA_LOG" 2>&1 8>&- 9>&- &
  for _ in $(seq 50); do
    [[ -s $KAFKA_PID_FILE ]] && return 0
    sleep 0.1
  done
  die "Kafka did not write its pid file $KAFKA_PID_FILE"
}

# One readiness probe: a real ApiVersions + metadata round trip to the broker.
kafka_probe() {
  kafka_require_libs
  timeout 30 java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$INFRA_SRC/kafka/tools-log4j2.properties" \
    -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "$HOST:$KAFKA_PORT"
}

kafka_wait_ready() {
  local pid=$1 deadline=$((SECONDS + TIMEOUT))
  say "waiting for Kafka on $HOST:$KAFKA_PORT…"
  while :; do
    if ! kafka_is_our_process "$pid"; then
      show_log_tail "$KAFKA_LOG"
      rm -f "$KAFKA_PID_FILE"
      die "Kafka (pid $pid) exited during startup"
    fi
    if port_open "$KAFKA_PORT" && kafka_probe >/dev/null 2>&1; then
      break
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$KAFKA_LOG"
      die "Kafka did not answer a metadata request on $HOST:$KAFKA_PORT within ${TIMEOUT}s (pid $pid still running)"
    fi
    sleep 1
  done
  say "Kafka is ready: $HOST:$KAFKA_PORT (pid $pid)"
}

kafka_up() {
  kafka_require_libs
  mkdir -p "$KAFKA_DIR"
  local pid
  if pid="$(kafka_running_pid)"; then
    say "Kafka already running (pid $pid), reusing it"
    kafka_wait_ready "$pid"
    return
  fi
  local port
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$port"; then
      die "port $HOST:$port is already in use by another process; set OSAGO_KAFKA_PORT/OSAGO_KAFKA_CONTROLLER_PORT or stop it"
    fi
  done
  kafka_write_config
  kafka_format_storage
  say "starting Kafka $KAFKA_RESOLVED_VERSION on $HOST:$KAFKA_PORT (controller $HOST:$KAFKA_CONTROLLER_PORT)…"
  kafka_start_process
  kafka_wait_ready "$(cat "$KAFKA_PID_FILE")"
}

kafka_down() {
  local pid
  if ! pid="$(kafka_running_pid)"; then
    say "Kafka already stopped"
    return
  fi
  say "stopping Kafka (pid $pid)…"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kafka_is_our_process "$pid"; do
    if ((SECONDS >= deadline)); then
      warn "Kafka (pid $pid) still running after 30s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.5
  done
  rm -f "$KAFKA_PID_FILE"
  printf '===== %s stopped by scripts/infra.sh =====\n' "$(date '+%F %T')" >>"$KAFKA_LOG"
  say "Kafka stopped"
}

kafka_status() {
  local pid state=stopped rc=1
  if pid="$(kafka_running_pid 2>/dev/null)"; then
    state="running (not answering on $HOST:$KAFKA_PORT)"
    if port_open "$KAFKA_PORT"; then
      state=running
      rc=0
    fi
  fi
  local version="-"
  kafka_find_libs && version=$KAFKA_RESOLVED_VERSION
  printf 'kafka: %s\n' "$state"
  printf '  pid:      %s\n' "${pid:--}"
  printf '  port:     %s:%s (controller %s:%s)\n' "$HOST" "$KAFKA_PORT" "$HOST" "$KAFKA_CONTROLLER_PORT"
  printf '  version:  %s\n' "$version"
  printf '  data dir: %s\n' "$KAFKA_DATA"
  printf '  log file: %s\n' "$KAFKA_LOG"
  return $rc
}

# ---------------------------------------------------------------- commands

cmd_install() {
  pg_install
  java_install
  kafka_install
}

cmd_up() {
  cmd_install
  pg_up
  kafka_up
  say "all up. Use: eval \"\$(scripts/infra.sh env)\""
}

cmd_down() {
  local rc=0
  kafka_down || rc=$?
  pg_down || rc=$?
  return $rc
}

cmd_status() {
  local rc=0
  pg_status || rc=1
  kafka_status || rc=1
  return $rc
}

cmd_env() {
  printf 'export OSAGO_PG_URL=%s\n' "$(pg_url)"
  printf 'export DATABASE_URL=%s\n' "$(pg_url)"
  printf 'export OSAGO_PG_ADMIN_URL=%s\n' "$(pg_admin_url)"
  printf 'export OSAGO_KAFKA_BROKERS=%s:%s\n' "$HOST" "$KAFKA_PORT"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up)         lock_state; cmd_up ;;
    down)       lock_state; cmd_down ;;
    status)     cmd_status ;;
    env)        cmd_env ;;
    install)    lock_state; cmd_install ;;
    pg-up)      lock_state; pg_install; pg_up ;;
    pg-down)    lock_state; pg_down ;;
    kafka-up)   lock_state; java_install; kafka_install; kafka_up ;;
    kafka-down) lock_state; kafka_down ;;
    kafka-run-class)
      [[ $# -ge 1 ]] || die "usage: $0 kafka-run-class CLASS [ARGS...]"
      kafka_run_class "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"

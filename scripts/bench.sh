#!/usr/bin/env bash
# The benchmark harness (issue 7): starts Postgres + Kafka if needed, builds the release
# binaries, raises the open-file limit (10 000 SSE streams need as many sockets on each
# side), and runs the `bench` crate, which writes docs/benchmarks.md and raw data under
# bench/results/.
#
#   scripts/bench.sh           the full benchmark (about 20 minutes on 2 cores)
#   scripts/bench.sh --quick   the quick regression check (under 5 minutes once built)
#   scripts/bench.sh [--quick] --parts limits,pipeline,ramp,intake,fanout
#   BENCH_REF=HEAD scripts/bench.sh --quick   services built from a committed ref instead of
#                                             the working tree (e.g. to compare before/after)
#   scripts/bench.sh profile [--qps 120 --seconds 40 --label before] [--no-perf]
#                              a steady load under `perf record`, flamegraphs per process
#                              (installs linux-perf and inferno first); with --no-perf,
#                              only the load and its latencies, for A/B runs
#   scripts/bench.sh report bench/results/<run>
#                              docs/benchmarks.md again from an earlier run's raw data
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/osago/target}"

if [[ ${1:-} == report ]]; then
  cargo build --release --locked -q -p bench
  exec "$CARGO_TARGET_DIR/release/bench" "$@"
fi

eval "$(scripts/infra.sh env)"
if ! scripts/infra.sh up >/dev/null 2>&1; then
  # Another checkout's Postgres and Kafka may hold the ports (a CI clone on this machine):
  # any server that answers will do for a benchmark that makes its own databases and topics.
  if psql "$OSAGO_PG_URL" -Atqc 'SELECT 1' >/dev/null 2>&1 &&
     (exec 3<>"/dev/tcp/${OSAGO_KAFKA_BROKERS%:*}/${OSAGO_KAFKA_BROKERS##*:}") 2>/dev/null; then
    echo "==> Postgres and Kafka answer on their ports but are not this checkout's; using them"
  else
    scripts/infra.sh up
  fi
fi

if [[ ! -x /usr/lib/postgresql/15/bin/pgbench ]] && ! ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 && ! command -v pgbench >/dev/null; then
  echo "==> installing pgbench (postgresql-contrib)"
  apt-get install -y -q postgresql-contrib >/dev/null
fi

if [[ -n "${BENCH_REF:-}" ]]; then
  sha=$(git rev-parse --short=12 "$BENCH_REF")
  src="$HOME/.cache/osago/bench-src/$sha"
  echo "==> building the services at $BENCH_REF ($sha) in $src"
  rm -rf "$src" && mkdir -p "$src" && git archive "$BENCH_REF" | tar -x -C "$src"
  # A target dir of their own: in the shared one, a later build of the working tree whose
  # units are still fresh would not copy its binaries back over these.
  ref_target="$HOME/.cache/osago/target-ref"
  (cd "$src" && CARGO_TARGET_DIR="$ref_target" cargo build --release --locked -q -p aggregator -p core-app)
  export BENCH_SERVICES_BIN="$ref_target/release"
  export BENCH_SOURCE="services built from $BENCH_REF ($sha)"
else
  echo "==> building the services from the working tree"
  cargo build --release --locked -q -p aggregator -p core-app
  export BENCH_SOURCE="services built from the working tree"
fi
cargo build --release --locked -q -p bench

command=run
if [[ ${1:-} == profile ]]; then
  command=profile
  shift
  if ! command -v perf >/dev/null; then
    echo "==> installing perf (linux-perf)"
    apt-get install -y -q linux-perf >/dev/null
  fi
  # inferno folds perf's stacks and draws the flamegraphs; built once per machine.
  tools="$HOME/.cache/osago/cargo-tools"
  if [[ ! -x $tools/bin/inferno-flamegraph ]]; then
    echo "==> building inferno into $tools (once per machine)"
    cargo install -q --locked --root "$tools" inferno
  fi
  export PATH="$tools/bin:$PATH"
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "==> open-file limit $(ulimit -n); load average $(cut -d' ' -f1-3 /proc/loadavg)"
# The bench runs in its own process group with the stacks it starts, so that Ctrl-C (or
# any exit) stops every process it started too.
set -m
"$CARGO_TARGET_DIR/release/bench" "$command" "$@" &
bench=$!
trap 'kill -TERM -- -"$bench" 2>/dev/null || true' INT TERM
wait "$bench"

#!/usr/bin/env bash
# The benchmark harness (issue 7): starts Postgres + Kafka if needed, builds the release
# binaries, raises the open-file limit (10 000 SSE streams need as many sockets on each
# side), and runs the `bench` crate, which writes docs/benchmarks.md and raw data under
# bench/results/.
#
#   scripts/bench.sh           the full benchmark (about 20 minutes on 2 cores)
#   scripts/bench.sh --quick   the quick regression check (under 5 minutes once built)
#   scripts/bench.sh [--quick] --parts limits,pipeline,ramp,intake,fanout
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/osago/target}"

scripts/infra.sh up >/dev/null
eval "$(scripts/infra.sh env)"

if [[ ! -x /usr/lib/postgresql/15/bin/pgbench ]] && ! ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 && ! command -v pgbench >/dev/null; then
  echo "==> installing pgbench (postgresql-contrib)"
  apt-get install -y -q postgresql-contrib >/dev/null
fi

echo "==> building release binaries (sandbox, aggregator, core-app, bench)"
cargo build --release --locked -q -p aggregator -p core-app -p bench

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "==> open-file limit $(ulimit -n); load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$CARGO_TARGET_DIR/release/bench" run "$@"

#!/usr/bin/env bash
# Runs the whole platform locally on top of `make infra-up`: the insurer sandbox, one
# poller per examples/insurers/*.yaml, the aggregator (intake + outbox relay) and core-app.
# Every process logs to .demo/logs/. Ctrl-C stops everything this script started.
#
#   scripts/demo.sh           run until Ctrl-C
#   scripts/demo.sh --smoke   submit the sample quote, follow it to complete, print the
#                             offers, stop; exit 0 only if every insurer answered and ≥3 offered
#   scripts/demo.sh --e2e     the smoke run, then the browser tests (tests/e2e) against the stack
#   scripts/demo.sh --exec CMD ARGS...   run CMD against the stack (OSAGO_CORE_URL is core-app's
#                             URL), stop, and exit with CMD's status
set -euo pipefail
cd "$(dirname "$0")/.."
# The same build cache the Makefile uses.
bin="${CARGO_TARGET_DIR:-$HOME/.cache/osago/target}/debug"
logs=.demo/logs
mkdir -p "$logs"
eval "$(scripts/infra.sh env)"

CORE_ADDR="${CORE_APP_LISTEN:-127.0.0.1:8080}"
AGG_ADDR="${AGGREGATOR_LISTEN:-127.0.0.1:8081}"
SANDBOX_ADDR="${SANDBOX_LISTEN:-127.0.0.1:9100}"
TOKEN="demo-core-app-token"   # core-app's partner token at the aggregator (demo only)
pg_base="${OSAGO_PG_URL%/*}"

say() { printf '==> %s\n' "$*"; }

pids=()
cleanup() {
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    say "stopping ${#pids[@]} processes"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # name, command...
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}

wait_ready() { # name, url
  for _ in $(seq 150); do
    curl -fsS "$2" >/dev/null 2>&1 && return 0
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "error: $1 did not become ready; last lines of $logs/$1.log:" >&2
  tail -n 20 "$logs/$1.log" >&2
  exit 1
}

for db in aggregator core_app; do
  if ! psql "$OSAGO_PG_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    say "creating database $db"
    psql -q "$OSAGO_PG_URL" -c "CREATE DATABASE $db"
  fi
done

# The smoke and browser runs export every service's spans to a collector of our own (as JSON
# lines in the logs folder, so the personal-data scan reads them too) and check the sample
# quote's trace there; `OTEL_EXPORTER_OTLP_ENDPOINT` set by the caller wins.
if [[ ${1:-} == --smoke || ${1:-} == --e2e ]] && [[ -z ${OTEL_EXPORTER_OTLP_ENDPOINT:-} ]]; then
  OTLP_ADDR="${OTLP_SINK_LISTEN:-127.0.0.1:4318}"
  say "starting the trace collector on $OTLP_ADDR"
  start otlp-sink "$bin/otlp-sink" serve --listen "$OTLP_ADDR" --out "$logs/exported-spans.log"
  export OTEL_EXPORTER_OTLP_ENDPOINT="http://$OTLP_ADDR" OTEL_BSP_SCHEDULE_DELAY=200
fi

say "starting the insurer sandbox on $SANDBOX_ADDR"
start sandbox "$bin/sandbox" --config sandbox/sandbox.toml --listen "$SANDBOX_ADDR"
wait_ready sandbox "http://$SANDBOX_ADDR/readyz"

say "starting the aggregator on $AGG_ADDR"
export AGGREGATOR_DATABASE_URL="$pg_base/aggregator" KAFKA_BROKERS="$OSAGO_KAFKA_BROKERS"
AGGREGATOR_PARTNER_TOKENS="core-app:$TOKEN" start aggregator "$bin/aggregator" serve --listen "$AGG_ADDR"
wait_ready aggregator "http://$AGG_ADDR/readyz"

for spec in examples/insurers/*.yaml; do
  name=$(basename "$spec" .yaml)
  start "poller-$name" "$bin/aggregator" poller --spec "$spec" --secrets-dir examples/secrets
done
say "started $(ls examples/insurers/*.yaml | wc -l) pollers"

say "starting core-app on $CORE_ADDR"
CORE_APP_DATABASE_URL="$pg_base/core_app" AGGREGATOR_URL="http://$AGG_ADDR" AGGREGATOR_TOKEN="$TOKEN" \
  start core-app "$bin/core-app" --listen "$CORE_ADDR"
wait_ready core-app "http://$CORE_ADDR/readyz"

# Pollers register within a moment; wait until all of them can take work.
want=$(ls examples/insurers/*.yaml | wc -l)
for _ in $(seq 100); do
  have=$(curl -fsS -H "Authorization: Bearer $TOKEN" "http://$AGG_ADDR/internal/v1/insurers" 2>/dev/null | grep -o '"name"' | wc -l || true)
  [[ $have -ge $want ]] && break
  sleep 0.1
done
say "$have of $want insurers ready"

cat <<MSG

    OSAGO platform        http://$CORE_ADDR/
    API                   http://$CORE_ADDR/openapi.json
    aggregator intake     http://$AGG_ADDR/internal/v1/insurers (partner token: $TOKEN)
    insurer sandbox       http://$SANDBOX_ADDR/_control/insurers
    logs                  $logs/
    Ctrl-C stops the platform; 'make infra-down' stops Postgres and Kafka.

MSG

# The sample quote, then its trace: the trace id core-app answered with must be in the logs of
# every service the quote went through (core-app twice: the request and the Kafka events).
smoke() {
  "$bin/osago" --url "http://$CORE_ADDR" quote --expect-offers 3 --timeout 120s | tee "$logs/../quote.txt"
  local trace
  trace=$(sed -n 's/^trace //p' "$logs/../quote.txt")
  [[ -n $trace ]] || { echo "error: core-app answered without x-trace-id" >&2; return 1; }
  sleep 1 # the last log lines are flushed
  for log in core-app aggregator poller-alfa poller-renins; do
    if ! grep -q "\"trace_id\":\"$trace\"" "$logs/$log.log"; then
      echo "error: trace $trace is not in $logs/$log.log" >&2
      return 1
    fi
  done
  grep -q "event applied.*$trace\|$trace.*event applied" "$logs/core-app.log" ||
    { echo "error: core-app consumed no event of trace $trace (Kafka header lost?)" >&2; return 1; }
  say "trace $trace: core-app → aggregator → pollers → Kafka → core-app, in every log"
  if [[ -f $logs/exported-spans.log ]]; then
    local tries
    # Spans leave in batches; the last ones (the stream's) follow within a moment.
    for tries in $(seq 30); do
      "$bin/otlp-sink" check --file "$logs/exported-spans.log" --trace "$trace" \
        --services core-app,aggregator,poller --spans request,task,event,stream >/dev/null 2>&1 && break
      sleep 0.2
    done
    "$bin/otlp-sink" check --file "$logs/exported-spans.log" --trace "$trace" \
      --services core-app,aggregator,poller --spans request,task,event,stream
  fi
}

case "${1:-}" in
  --smoke)
    smoke
    exit $? ;;
  --e2e)
    smoke || exit 1
    say "browser tests against http://$CORE_ADDR (screenshots in tests/e2e/artifacts/)"
    OSAGO_E2E_BASE_URL="http://$CORE_ADDR" node --test tests/e2e/quote.spec.mjs
    exit $? ;;
  --exec)
    shift
    OSAGO_CORE_URL="http://$CORE_ADDR" "$@"
    exit $? ;;
esac
wait -n "${pids[@]}"
echo "error: a process exited; see $logs/" >&2
exit 1

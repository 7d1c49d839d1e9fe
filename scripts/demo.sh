#!/usr/bin/env bash
# Runs the local platform in the foreground: the insurer sandbox on top of the running
# infrastructure (`make infra-up`). Ctrl-C stops the platform; the infrastructure stays up.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
listen="${SANDBOX_LISTEN:-127.0.0.1:9100}"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$target/debug/sandbox" --config sandbox/sandbox.toml --listen "$listen" &
pids+=($!)

for _ in $(seq 50); do curl -fsS "http://$listen/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
cat <<MSG

==> OSAGO platform (local)
    insurer sandbox   http://$listen/_control/insurers   (six insurers, three API styles)
    sandbox metrics   http://$listen/metrics
    Postgres          $(scripts/infra.sh env | sed -n 's/^export OSAGO_PG_URL=//p')
    Kafka             $(scripts/infra.sh env | sed -n 's/^export OSAGO_KAFKA_BROKERS=//p')
    Ctrl-C stops the platform; 'make infra-down' stops the infrastructure.

MSG
wait -n "${pids[@]}"

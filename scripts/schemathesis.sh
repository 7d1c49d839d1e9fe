#!/usr/bin/env bash
# schemathesis (property-based API testing, from PyPI) against core-app's /openapi.json:
# generated valid and invalid requests for every documented operation, and every answer
# checked (every check but one, see scripts/schemathesis.toml) — no 5xx, the status, content
# type, headers and body as the document says, so every error is application/problem+json,
# the only error shape the document has.
#
#   scripts/schemathesis.sh              start the local platform (scripts/demo.sh --exec,
#                                        needs `make infra-up build`), test it, stop it
#   scripts/schemathesis.sh --url URL    test a core-app that is already running
#   SCHEMATHESIS_MAX_EXAMPLES=500 scripts/schemathesis.sh    more cases per operation (50)
#
# schemathesis lives in a venv under ~/.cache/osago; reports (JUnit, and a cassette of
# every request and response) go to .demo/schemathesis/.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv="$HOME/.cache/osago/venv-schemathesis"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$version"; then
  echo "==> installing schemathesis $version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

if [[ ${1:-} == --url ]]; then
  OSAGO_CORE_URL=${2:?--url needs core-app\'s base URL}
elif [[ -z ${OSAGO_CORE_URL:-} ]]; then
  # demo.sh would take another platform's core-app on these ports for its own: refuse.
  for addr in "${CORE_APP_LISTEN:-127.0.0.1:8080}" "${AGGREGATOR_LISTEN:-127.0.0.1:8081}" "${SANDBOX_LISTEN:-127.0.0.1:9100}"; do
    if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
      echo "error: $addr is in use (another platform runs here); stop it, or test it with --url" >&2
      exit 1
    fi
  done
  # Thousands of requests from one address: lift the per-client limit (429) for the run.
  export CORE_APP_CLIENT_RPS=${CORE_APP_CLIENT_RPS:-100000} CORE_APP_CLIENT_BURST=${CORE_APP_CLIENT_BURST:-100000}
  exec scripts/demo.sh --exec "$0"
fi

reports=.demo/schemathesis
mkdir -p "$reports"
echo "==> schemathesis $version against $OSAGO_CORE_URL/openapi.json"
# Settings in scripts/schemathesis.toml (every check but positive_data_acceptance, and why);
# scripts/schemathesis_hooks.py turns half of the quote requests into valid ones with one
# generated field, so that requests get past validation to the aggregator and Postgres.
PYTHONPATH="$PWD/scripts" SCHEMATHESIS_HOOKS=schemathesis_hooks \
  timeout --kill-after=10 900 "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml --no-color \
  run "$OSAGO_CORE_URL/openapi.json" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" --request-timeout 10 --workers 2 \
  --generation-database "$HOME/.cache/osago/schemathesis/examples" \
  --report junit,vcr --report-dir "$reports"

#!/usr/bin/env bash
# Installs what the browser (e2e) tests need, unattended and idempotently:
#   - Debian's chromium (/usr/bin/chromium), driven by playwright-core;
#   - the npm dependencies of tests/e2e (npm ci, with npm's own cache).
# Playwright's own browser download does not work on our machines: never run
# `playwright install`; the tests launch /usr/bin/chromium via executablePath.
# Fast when everything is in place already (no network at all).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
E2E="$ROOT/tests/e2e"
CHROMIUM=/usr/bin/chromium

say() { printf '==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- chromium -------------------------------------------------------------
if [ -x "$CHROMIUM" ] && dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q 'install ok installed'; then
    say "chromium already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
else
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show chromium >/dev/null 2>&1; then
        say "apt-get update (chromium not in the package lists yet)"
        as_root apt-get update -qq
    fi
    say "installing Debian's chromium"
    if ! as_root apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-dejavu-core >/dev/null; then
        # Lists may be stale (a newer version was published): refresh once and retry.
        say "apt-get update and retry"
        as_root apt-get update -qq
        as_root apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-dejavu-core >/dev/null
    fi
    say "chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
fi

# --- npm dependencies of tests/e2e ---------------------------------------
command -v npm >/dev/null || { echo "npm is required (install Debian's nodejs and npm)" >&2; exit 1; }
cd "$E2E"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ] \
    || [ ! -f node_modules/playwright-core/package.json ]; then
    say "npm ci in tests/e2e"
    npm ci --no-audit --no-fund --prefer-offline --loglevel=error
    touch node_modules
else
    say "tests/e2e node_modules up to date"
fi
say "browser test dependencies ready"

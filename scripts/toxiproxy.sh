#!/usr/bin/env bash
# Toxiproxy, the TCP fault proxy of the fault-injection tests (aggregator/tests/faults_tcp.rs).
#
#   scripts/toxiproxy.sh           build toxiproxy-server from Go modules (once per machine) into
#                                  ~/.cache/osago/toxiproxy-<version>/bin and link it into .tools/bin/
#   scripts/toxiproxy.sh path      print the path of the linked binary (building it first if needed)
#
# The server comes from the Go module proxy only: `go install github.com/Shopify/toxiproxy/v2/cmd/server@v<version>`
# (no replace directives, so no wrapper module is needed). Idempotent: with the binary cached, it only
# checks the link and prints one line. Tests run the server themselves, each its own on a free port.
#
# Environment overrides: OSAGO_CACHE_DIR (~/.cache/osago), OSAGO_TOXIPROXY_VERSION (2.12.0).
set -euo pipefail

VERSION="${OSAGO_TOXIPROXY_VERSION:-2.12.0}"
MODULE=github.com/Shopify/toxiproxy/v2

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TOOLS_BIN="$REPO_ROOT/.tools/bin"
CACHE_DIR="${OSAGO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/osago}"
CACHE_BIN="$CACHE_DIR/toxiproxy-$VERSION/bin"
BINARY="$CACHE_BIN/toxiproxy-server"

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

pid_alive() {
  local pid=$1 state
  [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/stat ]] || return 1
  state="$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)"
  [[ -n $state && $state != Z && $state != X ]]
}

# The cached binary answers --version with the version we want.
cached() {
  [[ -x $BINARY ]] && "$BINARY" -version 2>/dev/null | grep -qF "$VERSION"
}

build() {
  command -v go >/dev/null || die "the Go toolchain is needed to build toxiproxy (apt-get install golang-go)"
  export GOFLAGS=-mod=mod
  export GOMODCACHE="${GOMODCACHE:-$CACHE_DIR/go/mod}"
  export GOCACHE="${GOCACHE:-$CACHE_DIR/go/build}"
  export CGO_ENABLED=0
  mkdir -p "$GOMODCACHE" "$GOCACHE" "$CACHE_DIR"
  # Machine-wide cache: two checkouts must not build into it at the same time.
  exec 9>"$CACHE_DIR/.toxiproxy-install.lock"
  flock 9
  if cached; then
    exec 9>&-
    return 0
  fi
  local out="$CACHE_BIN.tmp.$$" start=$SECONDS
  rm -rf "$out"
  mkdir -p "$out"
  say "building toxiproxy-server v$VERSION from Go modules into $CACHE_BIN (once per machine, a minute or two)"
  GOBIN="$out" go install -trimpath \
    -ldflags="-s -w -X $MODULE.Version=$VERSION" "$MODULE/cmd/server@v$VERSION" &
  local pid=$!
  while pid_alive "$pid"; do
    sleep 5
    if (((SECONDS - start) % 30 < 5)) && pid_alive "$pid"; then
      say "  … still building toxiproxy-server ($((SECONDS - start)) s)"
    fi
  done
  wait "$pid" || { rm -rf "$out"; die "go install $MODULE/cmd/server@v$VERSION failed"; }
  mv "$out/server" "$out/toxiproxy-server"
  rm -rf "$CACHE_BIN"
  mv "$out" "$CACHE_BIN"
  exec 9>&-
  cached || die "the built $BINARY does not report version $VERSION"
  say "built toxiproxy-server v$VERSION in $((SECONDS - start)) s"
}

install() {
  cached || build
  mkdir -p "$TOOLS_BIN"
  ln -sfn "$BINARY" "$TOOLS_BIN/toxiproxy-server"
}

case "${1:-}" in
"")
  install
  say "toxiproxy-server v$VERSION: $TOOLS_BIN/toxiproxy-server"
  ;;
path)
  install
  printf '%s\n' "$TOOLS_BIN/toxiproxy-server"
  ;;
*)
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac

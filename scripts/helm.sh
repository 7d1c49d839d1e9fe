#!/usr/bin/env bash
# Helm, built from Go modules (no binary downloads are reachable here).
#
#   scripts/helm.sh tools     build helm once per machine into ~/.cache/osago/helm-<version>/bin
#                             and link it into the git-ignored .tools/bin/ (idempotent)
#   scripts/helm.sh path      print the path of the helm binary (builds it first if needed)
#   scripts/helm.sh version   print the pinned version
#
# helm.sh/helm/v3 has no replace directives, so `go install helm.sh/helm/v3/cmd/helm@vX.Y.Z`
# works straight from the module proxy. Go's module and build caches live beside the
# Kubernetes tools' in ~/.cache/osago/go (shared with scripts/k8s.sh).
#
# Environment overrides: OSAGO_HELM_VERSION (v3.22.0)  OSAGO_CACHE_DIR (~/.cache/osago)
set -euo pipefail

HELM_VERSION="${OSAGO_HELM_VERSION:-v3.22.0}"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TOOLS_BIN="$REPO_ROOT/.tools/bin"
CACHE_DIR="${OSAGO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/osago}"
CACHE_BIN="$CACHE_DIR/helm-$HELM_VERSION/bin"

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

go_env() {
  command -v go >/dev/null || die "the Go toolchain is needed to build helm (apt-get install golang-go)"
  export GOFLAGS=-mod=mod
  export GOMODCACHE="${GOMODCACHE:-$CACHE_DIR/go/mod}"
  export GOCACHE="${GOCACHE:-$CACHE_DIR/go/build}"
  export CGO_ENABLED=0
  export GOBIN="$1"
  mkdir -p "$GOMODCACHE" "$GOCACHE"
}

# Runs "$@" in the background, printing a progress line every 30 s so a long build does not
# look like a hang.
with_progress() {
  local what=$1 start=$SECONDS last=$SECONDS
  shift
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    if ((SECONDS - last >= 30)) && kill -0 "$pid" 2>/dev/null; then
      last=$SECONDS
      say "  … still building $what ($((SECONDS - start)) s)"
    fi
  done
  wait "$pid" || die "building $what failed"
}

# The link-time settings helm's own Makefile uses: its version, and the Kubernetes version it
# assumes without a cluster (`helm template`, `helm lint`), from the client-go it is built with.
helm_ldflags() {
  local gomod client_go major minor
  gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f $gomod ]] || die "could not download helm.sh/helm/v3@$HELM_VERSION from the Go module proxy"
  client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")"
  [[ $client_go =~ ^v0\.([0-9]+)\. ]] || die "cannot tell the client-go version of helm $HELM_VERSION (got '$client_go')"
  major=1 minor="${BASH_REMATCH[1]}"
  local f="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  f+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  f+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  f+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  echo "$f"
}

build_helm() {
  # One build at a time on this machine (two clones, or make -j); the second one finds it built.
  mkdir -p "$CACHE_DIR"
  exec 9>"$CACHE_DIR/.helm-$HELM_VERSION.lock"
  flock 9
  # .key records what the cached binary was built from; a change of this script's flags rebuilds.
  local stamp="v2 $HELM_VERSION"
  if [[ -x $CACHE_BIN/helm && -f $CACHE_BIN/.key && "$(cat "$CACHE_BIN/.key")" == "$stamp" ]]; then
    return 0
  fi
  local out="$CACHE_BIN.tmp.$$"
  rm -rf "$out"
  mkdir -p "$out"
  trap 'rm -rf "$out"' EXIT
  go_env "$out"
  say "building helm $HELM_VERSION from Go modules into $CACHE_BIN (once per machine, a few minutes)"
  local start=$SECONDS ldflags
  say "  downloading modules"
  ldflags="$(helm_ldflags)"
  with_progress "helm $HELM_VERSION" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  "$out/helm" version --short >/dev/null || die "the helm just built does not run"
  echo "$stamp" >"$out/.key"
  mkdir -p "$(dirname "$CACHE_BIN")"
  rm -rf "$CACHE_BIN"
  mv "$out" "$CACHE_BIN"
  trap - EXIT
  say "built helm $HELM_VERSION in $((SECONDS - start)) s"
}

cmd_tools() {
  build_helm
  mkdir -p "$TOOLS_BIN"
  ln -sfn "$CACHE_BIN/helm" "$TOOLS_BIN/helm"
  say "tools: helm $("$TOOLS_BIN/helm" version --short) in $TOOLS_BIN"
}

main() {
  case "${1:-}" in
  tools) cmd_tools ;;
  path)
    cmd_tools
    echo "$TOOLS_BIN/helm"
    ;;
  version) echo "$HELM_VERSION" ;;
  *)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
  esac
}

main "$@"

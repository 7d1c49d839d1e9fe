#!/usr/bin/env bash
# A real Kubernetes API server on loopback for the operator's tests, the way Go "envtest" does it:
# etcd + kube-apiserver (no kubelet, no controller-manager), plus kubectl.
#
#   scripts/k8s.sh tools    build kube-apiserver, kubectl and etcd from Go modules (once per machine,
#                           cached in ~/.cache/osago/k8s-<version>/bin) and link them into .tools/bin/
#   scripts/k8s.sh up       start etcd + kube-apiserver (idempotent); returns when the API is ready;
#                           the last line printed is `export KUBECONFIG=<path>`
#   scripts/k8s.sh down     stop both (idempotent)
#   scripts/k8s.sh status   running/stopped; exit 0 only if the API server answers
#   scripts/k8s.sh env      export lines for eval: eval "$(scripts/k8s.sh env)"
#
# The binaries come from the Go module proxy only: k8s/kubernetes/go.mod requires k8s.io/kubernetes
# and replaces every staging module with its published twin; k8s/etcd is a one-line main around
# etcdmain. State (etcd data, certificates, keys, kubeconfig, logs) lives in <repo>/.infra/k8s/.
#
# The admin user is `osago-admin` (group system:masters) with a static token; the kubeconfig at
# .infra/k8s/kubeconfig uses it. RBAC is on, so impersonating a ServiceAccount
# (`kubectl --as=system:serviceaccount:NS:NAME`) shows exactly what that account may do.
#
# Environment overrides:
#   OSAGO_K8S_API_PORT (56443)  OSAGO_ETCD_PORT (52379)  OSAGO_ETCD_PEER_PORT (52380)
#   OSAGO_K8S_TIMEOUT (120, seconds to wait for the API)  OSAGO_CACHE_DIR (~/.cache/osago)
set -euo pipefail

# Kubernetes v1.Y.Z <-> k8s-openapi feature v1_Y in Cargo.toml; etcd as required by that release.
K8S_VERSION=1.36.3
ETCD_VERSION=3.6.8

API_PORT="${OSAGO_K8S_API_PORT:-56443}"
ETCD_PORT="${OSAGO_ETCD_PORT:-52379}"
ETCD_PEER_PORT="${OSAGO_ETCD_PEER_PORT:-52380}"
TIMEOUT="${OSAGO_K8S_TIMEOUT:-120}"
HOST=127.0.0.1

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
WRAPPERS="$REPO_ROOT/k8s"
TOOLS_BIN="$REPO_ROOT/.tools/bin"
STATE="$REPO_ROOT/.infra/k8s"
CACHE_DIR="${OSAGO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/osago}"
CACHE_BIN="$CACHE_DIR/k8s-$K8S_VERSION/bin"
KUBECONFIG_FILE="$STATE/kubeconfig"
ADMIN_TOKEN_FILE="$STATE/admin.token"

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

show_log_tail() {
  local file=$1
  if [[ -f $file ]]; then
    printf -- '---- last 30 lines of %s ----\n' "$file" >&2
    tail -n 30 "$file" >&2 || true
  fi
}

pid_alive() {
  local pid=$1 state
  [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/stat ]] || return 1
  state="$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)"
  [[ -n $state && $state != Z && $state != X ]]
}

# ---------------------------------------------------------------- tools

# What the cached binaries were built from: a change of a wrapper module rebuilds them.
tools_key() {
  cat "$WRAPPERS"/kubernetes/go.mod "$WRAPPERS"/kubernetes/go.sum "$WRAPPERS"/etcd/go.mod \
    "$WRAPPERS"/etcd/go.sum "$WRAPPERS"/etcd/main.go | sha256sum | cut -c1-16
}

go_env() {
  command -v go >/dev/null || die "the Go toolchain is needed to build the Kubernetes tools (apt-get install golang-go)"
  export GOFLAGS=-mod=mod
  export GOMODCACHE="${GOMODCACHE:-$CACHE_DIR/go/mod}"
  export GOCACHE="${GOCACHE:-$CACHE_DIR/go/build}"
  export CGO_ENABLED=0
  mkdir -p "$GOMODCACHE" "$GOCACHE"
}

# Runs "$@", printing a progress line every 30 s so a long link does not look like a hang.
with_progress() {
  local what=$1 start=$SECONDS
  shift
  "$@" &
  local pid=$!
  while pid_alive "$pid"; do
    sleep 5
    if (((SECONDS - start) % 30 < 5)) && pid_alive "$pid"; then
      say "  … still building $what ($((SECONDS - start)) s)"
    fi
  done
  wait "$pid" || die "building $what failed"
  say "  built $what in $((SECONDS - start)) s"
}

build_tools() {
  local key out
  key="$(tools_key)"
  if [[ -f $CACHE_BIN/.key && "$(cat "$CACHE_BIN/.key")" == "$key" ]] &&
    [[ -x $CACHE_BIN/kube-apiserver && -x $CACHE_BIN/kubectl && -x $CACHE_BIN/etcd ]]; then
    return 0
  fi
  go_env
  say "building Kubernetes v$K8S_VERSION (kube-apiserver, kubectl) and etcd v$ETCD_VERSION from Go modules"
  say "  into $CACHE_BIN (once per machine; kube-apiserver takes several minutes on 2 cores)"
  out="$CACHE_BIN.tmp"
  rm -rf "$out"
  mkdir -p "$out"
  local start=$SECONDS
  say "  downloading modules"
  (cd "$WRAPPERS/etcd" && go mod download) || die "downloading the etcd modules failed"
  (cd "$WRAPPERS/kubernetes" && go mod download) || die "downloading the Kubernetes modules failed"
  with_progress "etcd" bash -c "cd '$WRAPPERS/etcd' && go build -trimpath -ldflags='-s -w' -o '$out/etcd' ."
  local v=k8s.io/component-base/version c=k8s.io/client-go/pkg/version minor
  minor="$(cut -d. -f2 <<<"$K8S_VERSION")"
  local ldflags="-s -w"
  for p in $v $c; do
    ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  with_progress "kube-apiserver and kubectl" bash -c "cd '$WRAPPERS/kubernetes' && go build -trimpath \
    -ldflags='$ldflags' -o '$out/' k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl"
  echo "$key" >"$out/.key"
  rm -rf "$CACHE_BIN"
  mv "$out" "$CACHE_BIN"
  say "built the Kubernetes tools in $((SECONDS - start)) s"
}

cmd_tools() {
  build_tools
  mkdir -p "$TOOLS_BIN"
  local t
  for t in kube-apiserver kubectl etcd; do
    ln -sfn "$CACHE_BIN/$t" "$TOOLS_BIN/$t"
  done
  say "tools: $("$TOOLS_BIN/kubectl" version --client 2>/dev/null | head -1), etcd $("$TOOLS_BIN/etcd" --version | head -1 | awk '{print $3}') in $TOOLS_BIN"
}

main() {
  case "${1:-}" in
  tools) cmd_tools ;;
  *)
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
  esac
}

main "$@"

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
#   scripts/k8s.sh reset    stop both and delete all state (etcd data, keys, kubeconfig)
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

# ---------------------------------------------------------------- cluster

ETCD_PID="$STATE/etcd.pid"
API_PID="$STATE/kube-apiserver.pid"
ETCD_LOG="$STATE/etcd.log"
API_LOG="$STATE/kube-apiserver.log"
PKI="$STATE/pki"

api_ready() {
  [[ -f $ADMIN_TOKEN_FILE && -f $PKI/ca.crt ]] || return 1
  curl -fsS --max-time 3 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$ADMIN_TOKEN_FILE")" \
    "https://$HOST:$API_PORT/readyz" >/dev/null 2>&1
}

etcd_ready() {
  curl -fsS --max-time 3 "http://$HOST:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'
}

running() {
  [[ -f $1 ]] && pid_alive "$(cat "$1")"
}

# A CA, a serving certificate for 127.0.0.1/localhost, the service-account key pair, the admin token.
make_credentials() {
  mkdir -p "$PKI"
  chmod 700 "$STATE" "$PKI"
  if [[ ! -f $PKI/sa.pub ]]; then
    say "creating a CA, a serving certificate and the service-account key pair in $PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=osago-test-ca" \
      -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
      -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc" \
      "extendedKeyUsage=serverAuth" >"$PKI/apiserver.ext"
    openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 3650 -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  if [[ ! -s $ADMIN_TOKEN_FILE ]]; then
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ADMIN_TOKEN_FILE"
    chmod 600 "$ADMIN_TOKEN_FILE"
  fi
  local token
  token="$(cat "$ADMIN_TOKEN_FILE")"
  # token,user,uid,"groups": the admin is in system:masters; everyone else gets exactly what RBAC grants.
  printf '%s,osago-admin,osago-admin,"system:masters"\n' "$token" >"$STATE/tokens.csv"
  chmod 600 "$STATE/tokens.csv"
  {
    echo "apiVersion: v1"
    echo "kind: Config"
    echo "clusters:"
    echo "- name: osago-test"
    echo "  cluster:"
    echo "    server: https://$HOST:$API_PORT"
    echo "    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")"
    echo "users:"
    echo "- name: osago-admin"
    echo "  user:"
    echo "    token: $token"
    echo "contexts:"
    echo "- name: osago-test"
    echo "  context: {cluster: osago-test, user: osago-admin, namespace: default}"
    echo "current-context: osago-test"
  } >"$KUBECONFIG_FILE"
  chmod 600 "$KUBECONFIG_FILE"
}

start_etcd() {
  if running "$ETCD_PID" && etcd_ready; then return 0; fi
  stop_pid "$ETCD_PID" etcd
  say "starting etcd v$ETCD_VERSION on $HOST:$ETCD_PORT (log: $ETCD_LOG)"
  mkdir -p "$STATE/etcd"
  chmod 700 "$STATE/etcd"
  setsid "$TOOLS_BIN/etcd" --name osago-test --data-dir "$STATE/etcd" \
    --listen-client-urls "http://$HOST:$ETCD_PORT" --advertise-client-urls "http://$HOST:$ETCD_PORT" \
    --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster "osago-test=http://$HOST:$ETCD_PEER_PORT" --unsafe-no-fsync \
    --log-level warn >>"$ETCD_LOG" 2>&1 </dev/null 9>&- &
  echo $! >"$ETCD_PID"
  local deadline=$((SECONDS + TIMEOUT))
  until etcd_ready; do
    running "$ETCD_PID" || {
      show_log_tail "$ETCD_LOG"
      die "etcd exited"
    }
    ((SECONDS < deadline)) || {
      show_log_tail "$ETCD_LOG"
      die "etcd did not become healthy in ${TIMEOUT}s"
    }
    sleep 0.3
  done
}

start_apiserver() {
  if running "$API_PID" && api_ready; then return 0; fi
  stop_pid "$API_PID" kube-apiserver
  say "starting kube-apiserver v$K8S_VERSION on https://$HOST:$API_PORT (log: $API_LOG)"
  setsid "$TOOLS_BIN/kube-apiserver" \
    --etcd-servers "http://$HOST:$ETCD_PORT" \
    --bind-address "$HOST" --advertise-address "$HOST" --secure-port "$API_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --cert-dir "$STATE/cert-dir" \
    --token-auth-file "$STATE/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --allow-privileged=true \
    --disable-admission-plugins ServiceAccount \
    --enable-admission-plugins OwnerReferencesPermissionEnforcement \
    --enable-priority-and-fairness=false \
    --profiling=false \
    --v=1 >>"$API_LOG" 2>&1 </dev/null 9>&- &
  echo $! >"$API_PID"
  local deadline=$((SECONDS + TIMEOUT)) next=$((SECONDS + 10))
  until api_ready; do
    running "$API_PID" || {
      show_log_tail "$API_LOG"
      die "kube-apiserver exited"
    }
    ((SECONDS < deadline)) || {
      show_log_tail "$API_LOG"
      die "kube-apiserver was not ready in ${TIMEOUT}s"
    }
    if ((SECONDS >= next)); then
      say "  … waiting for kube-apiserver /readyz"
      next=$((SECONDS + 10))
    fi
    sleep 0.5
  done
}

stop_pid() {
  local file=$1 what=$2 pid
  [[ -f $file ]] || return 0
  pid="$(cat "$file")"
  if pid_alive "$pid"; then
    say "stopping $what (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      pid_alive "$pid" || break
      sleep 0.2
    done
    if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$file"
}

# Serialises up/down of concurrent callers (make, several test binaries).
with_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock 9
}

cmd_up() {
  [[ -x $TOOLS_BIN/kube-apiserver && -x $TOOLS_BIN/etcd && -x $TOOLS_BIN/kubectl ]] || cmd_tools
  with_lock
  make_credentials
  start_etcd
  start_apiserver
  say "Kubernetes API v$K8S_VERSION ready at https://$HOST:$API_PORT; admin kubeconfig $KUBECONFIG_FILE"
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
}

cmd_down() {
  with_lock
  stop_pid "$API_PID" kube-apiserver
  stop_pid "$ETCD_PID" etcd
}

cmd_status() {
  local rc=0
  if running "$ETCD_PID"; then
    echo "etcd: running, pid $(cat "$ETCD_PID"), http://$HOST:$ETCD_PORT, log $ETCD_LOG"
  else
    echo "etcd: stopped"
    rc=1
  fi
  if running "$API_PID" && api_ready; then
    echo "kube-apiserver: ready, pid $(cat "$API_PID"), https://$HOST:$API_PORT, log $API_LOG"
  else
    echo "kube-apiserver: not ready"
    rc=1
  fi
  echo "kubeconfig: $KUBECONFIG_FILE"
  return $rc
}

main() {
  case "${1:-}" in
  tools) cmd_tools ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_FILE" ;;
  reset)
    cmd_down
    rm -rf "$STATE"
    ;;
  *)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
    ;;
  esac
}

main "$@"

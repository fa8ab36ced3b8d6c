#!/usr/bin/env bash
# A throw-away Kubernetes control plane (etcd + kube-apiserver) on loopback, for the integration
# tests and for poking at by hand. hack/node.sh adds a node (kubelet, controller-manager,
# scheduler) to it when a test needs Pods to run.
#
#   hack/controlplane.sh up DIR [--watch-pid PID] [--service-accounts]
#                                                   start; prints the admin kubeconfig path last
#   hack/controlplane.sh down DIR                   stop (idempotent)
#
# DIR receives: kubeconfig (admin, group system:masters), kubeconfig-operator (user
# "dhan-operator", no rights but what RBAC grants it), kubeconfig-sa-NAMESPACE-NAME for each
# ServiceAccount identity in SERVICE_ACCOUNTS below, env (KUBECONFIG=...), *.log, pids, and
# audit.log: the apiserver's audit log of every request touching a Secret (who, verb, URI), so a
# test can show which Secrets an identity never asked for.
# With --watch-pid, a detached watcher stops everything once PID exits. With --service-accounts
# the ServiceAccount admission plugin is on, as in a real cluster: Pods get their ServiceAccount's
# token mounted (hack/node.sh's controller-manager creates the accounts and their tokens), and a
# Pod whose account or token does not exist yet is refused until it does. Without it, no Pod
# created before a node runs would be admitted.
# Binaries: $KUBEBUILDER_ASSETS/{kube-apiserver,etcd} when both exist there, else
# ${DHAN_OPERATOR_CACHE:-~/.cache/dhan-operator}/bin/kube-apiserver and etcd from PATH.
set -euo pipefail

# ServiceAccount identities (NAMESPACE:NAME) that get a static token, so a test can act as a
# ServiceAccount the way a pod would, although no token controller runs here: the token-auth file
# names the user system:serviceaccount:NAMESPACE:NAME with the groups the apiserver gives a real
# ServiceAccount token, so RBAC bindings to the ServiceAccount apply. tests/helm.rs installs the
# chart so that its ServiceAccounts are these.
SERVICE_ACCOUNTS="helm-cluster:dhan-operator helm-ns:dhan-operator helm-multi:dhan-operator"

die() { printf 'controlplane: %s\n' "$*" >&2; exit 1; }
usage() { die "usage: $0 up DIR [--watch-pid PID] [--service-accounts] | $0 down DIR"; }

find_binaries() {
  if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
    APISERVER="$KUBEBUILDER_ASSETS/kube-apiserver"
    ETCD="$KUBEBUILDER_ASSETS/etcd"
    return
  fi
  APISERVER="${DHAN_OPERATOR_CACHE:-$HOME/.cache/dhan-operator}/bin/kube-apiserver"
  [[ -x "$APISERVER" ]] || die "no kube-apiserver at $APISERVER; run hack/install-testbed.sh (or set KUBEBUILDER_ASSETS)"
  ETCD="$(command -v etcd)" || die "no etcd on PATH; run hack/install-testbed.sh (or set KUBEBUILDER_ASSETS)"
}

# A random loopback port nobody listens on, not among the ones already taken by this script,
# into the variable named $1 (not a subshell: TAKEN must remember it). Below the kernel's
# ephemeral range (32768 up by default), so an outgoing connection — the apiserver's own to etcd
# among them — cannot take it between this check and the bind.
TAKEN=" "
free_port() { # VAR
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    [[ "$TAKEN" == *" $p "* ]] && continue
    [[ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]] || continue
    TAKEN+="$p "
    printf -v "$1" '%s' "$p"
    return
  done
  die "no free port found"
}

kubeconfig() { # file user token server
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: $4
    certificate-authority: $DIR/certs/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@testbed
  context: {cluster: testbed, user: $2, namespace: default}
current-context: $2@testbed
EOF
}

# Running and not a zombie (servers get reparented, and a zombie still answers kill -0).
alive() { local stat; stat="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ "$stat" != Z* ]]; }

down() {
  [[ -f "$DIR/pids" ]] || return 0
  local pid pids
  pids="$(cat "$DIR/pids")"
  for pid in $pids; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in $pids; do alive "$pid" && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$DIR/pids"
}

up() {
  find_binaries
  [[ -f "$DIR/pids" ]] && die "$DIR/pids exists: already up? run '$0 down $DIR' first"
  mkdir -p "$DIR/certs"
  local start_ms=$(($(date +%s%N) / 1000000))

  # Credentials: our own CA and serving cert (so clients verify TLS), a service-account key,
  # and static bearer tokens.
  (
    cd "$DIR/certs"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=testbed-ca \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n' >apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
  )
  local admin_token operator_token
  admin_token="$(openssl rand -hex 24)"
  operator_token="$(openssl rand -hex 24)"
  cat >"$DIR/certs/tokens.csv" <<EOF
$admin_token,admin,admin-uid,"system:masters"
$operator_token,dhan-operator,dhan-operator-uid,"dhan-operator:testers"
EOF
  local sa sa_ns sa_name
  local -A sa_tokens
  for sa in $SERVICE_ACCOUNTS; do
    sa_ns="${sa%%:*}" sa_name="${sa#*:}"
    sa_tokens[$sa]="$(openssl rand -hex 24)"
    printf '%s,system:serviceaccount:%s:%s,sa-%s-%s-uid,"system:serviceaccounts,system:serviceaccounts:%s"\n' \
      "${sa_tokens[$sa]}" "$sa_ns" "$sa_name" "$sa_ns" "$sa_name" "$sa_ns" >>"$DIR/certs/tokens.csv"
  done

  # Secrets only, at Metadata level (no bodies: they would hold the data), once per request.
  cat >"$DIR/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  resources: [{group: "", resources: ["secrets"]}]
- level: None
EOF

  local etcd_port peer_port api_port
  free_port etcd_port; free_port peer_port; free_port api_port
  local etcd_url="http://127.0.0.1:$etcd_port" server="https://127.0.0.1:$api_port"

  setsid nohup "$ETCD" --name testbed --data-dir "$DIR/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "testbed=http://127.0.0.1:$peer_port" \
    </dev/null >"$DIR/etcd.log" 2>&1 &
  echo $! >>"$DIR/pids"

  # Jobs' ttlSecondsAfterFinished is behind an alpha gate before 1.21 (and the gate is gone after
  # 1.24): without it 1.20 silently drops the field from login Jobs.
  local gates=()
  if [[ "$("$APISERVER" --version 2>/dev/null)" =~ v1\.(1[0-9]|20)\. ]]; then
    gates=(--feature-gates TTLAfterFinished=true)
  fi

  # Without a controller-manager, the ServiceAccount admission plugin would reject every Pod
  # (no "default" service account is ever created): it is on only when asked for.
  local admission=(--disable-admission-plugins ServiceAccount)
  [[ -z "$SERVICE_ACCOUNT_ADMISSION" ]] || admission=(--enable-admission-plugins ServiceAccount)
  setsid nohup "$APISERVER" "${gates[@]}" \
    --etcd-servers "$etcd_url" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$DIR/certs" --tls-cert-file "$DIR/certs/apiserver.crt" --tls-private-key-file "$DIR/certs/apiserver.key" \
    --token-auth-file "$DIR/certs/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$DIR/certs/sa.key" --service-account-signing-key-file "$DIR/certs/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --allow-privileged \
    "${admission[@]}" \
    --kubelet-preferred-address-types InternalIP \
    --audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$DIR/audit.log" \
    </dev/null >"$DIR/kube-apiserver.log" 2>&1 &
  echo $! >>"$DIR/pids"

  if [[ -n "$WATCH_PID" ]]; then
    # Detached: outlives this script, stops the servers (and drops etcd's data) once PID is gone.
    # It quits quietly if the control plane is taken down by hand first.
    setsid nohup bash -c 'while kill -0 "$1" 2>/dev/null; do [[ -f "$3/pids" ]] || exit 0; sleep 1; done
                          "$2" down "$3"; rm -rf "$3/etcd"' \
      watcher "$WATCH_PID" "$(realpath "$0")" "$DIR" </dev/null >"$DIR/watcher.log" 2>&1 &
  fi

  kubeconfig "$DIR/kubeconfig" admin "$admin_token" "$server"
  kubeconfig "$DIR/kubeconfig-operator" dhan-operator "$operator_token" "$server"
  for sa in $SERVICE_ACCOUNTS; do
    sa_ns="${sa%%:*}" sa_name="${sa#*:}"
    kubeconfig "$DIR/kubeconfig-sa-$sa_ns-$sa_name" "sa-$sa_ns-$sa_name" "${sa_tokens[$sa]}" "$server"
  done
  echo "export KUBECONFIG=$DIR/kubeconfig" >"$DIR/env"

  local deadline=$((SECONDS + 60))
  until [[ "$(curl -fsS --cacert "$DIR/certs/ca.crt" -H "Authorization: Bearer $admin_token" \
                "$server/readyz" 2>/dev/null)" == ok ]]; do
    local pid crashed=0
    for pid in $(cat "$DIR/pids"); do alive "$pid" || crashed=1; done
    if ((crashed || SECONDS >= deadline)); then
      { echo "--- etcd.log"; tail -20 "$DIR/etcd.log"; echo "--- kube-apiserver.log"; tail -40 "$DIR/kube-apiserver.log"; } >&2
      down
      die "control plane did not become ready"
    fi
    sleep 0.2
  done
  printf 'controlplane: ready at %s in %d ms\n' "$server" "$(($(date +%s%N) / 1000000 - start_ms))" >&2
  echo "$DIR/kubeconfig"
}

[[ $# -ge 2 ]] || usage
CMD="$1"
DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
shift 2
WATCH_PID="" SERVICE_ACCOUNT_ADMISSION=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --watch-pid) [[ $# -ge 2 ]] || usage; WATCH_PID="$2"; shift 2 ;;
    --service-accounts) SERVICE_ACCOUNT_ADMISSION=1; shift ;;
    *) usage ;;
  esac
done
case "$CMD" in
  up) up ;;
  down) down ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# The main job end to end on this machine: a real kube-apiserver + etcd, the mock Dhan, the
# operator, and three sample accounts; when this machine can run a node (hack/node.sh check), a
# fourth account that logs in through a browser-login Job on it. Ends with
# `kubectl get dhanaccounts`; cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# DEMO_BIN: a directory with the binaries already built (tests/demo.rs passes cargo's).
if [[ -n "${DEMO_BIN:-}" ]]; then
  BIN="$DEMO_BIN"
else
  say "Building dhan-operator and dhan-mock"
  cargo build --quiet --bins
  BIN=target/debug
fi

WORK=$(mktemp -d /tmp/dhan-demo.XXXXXX)
PIDS=()
cleanup() {
  local status=$?
  if ((status != 0)) && [[ -s "$WORK/operator.log" ]]; then
    echo "--- the operator's last log lines ($WORK/operator.log):" >&2
    tail -25 "$WORK/operator.log" >&2
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  hack/node.sh down "$WORK/node" >/dev/null 2>&1 || true
  hack/controlplane.sh down "$WORK/cp" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say "Starting etcd + kube-apiserver on loopback"
export KUBECONFIG
KUBECONFIG=$(hack/controlplane.sh up "$WORK/cp" --watch-pid $$ | tail -n 1)
kubectl version 2>/dev/null | grep -i server || true

say "Installing the CRDs (DhanAccount, DhanNotifier, and the cluster-wide client-ID claims)"
kubectl apply -f crds/
kubectl wait --for=condition=Established --timeout=30s \
  crd/dhanaccounts.dhan-operator.dev crd/dhannotifiers.dhan-operator.dev \
  crd/dhanclientclaims.dhan-operator.dev crd/dhanoperatorinstalls.dhan-operator.dev

# A node runs the browser-login Jobs; its Pods reach the host (and the mock) at NODE_IP.
MOCK_HOST=127.0.0.1
BROWSER_FLAGS=()
if why=$(hack/node.sh check); then
  say "Starting a node: containerd, kubelet, controller-manager, scheduler"
  hack/node.sh up "$WORK/node" --control-plane "$WORK/cp" --operator-bin "$BIN/dhan-operator" \
    --watch-pid $$
  # shellcheck disable=SC1091
  source "$WORK/node/env"
  MOCK_HOST=$NODE_IP
  BROWSER_FLAGS=(--browser-logins --login-image "$OPERATOR_IMAGE" --chromium-image "$CHROMIUM_IMAGE")
  kubectl get nodes -o wide
else
  echo "no node on this machine ($why): the browser-login account is left out"
fi

say "Starting the mock Dhan server"
"$BIN/dhan-mock" --listen "$MOCK_HOST:0" --accounts hack/demo/mock-accounts.json \
  >"$WORK/mock.out" 2>"$WORK/mock.log" &
PIDS+=($!)
for _ in $(seq 100); do
  MOCK=$(sed -n 's/^dhan-mock listening on //p' "$WORK/mock.out")
  [[ -n "$MOCK" ]] && break
  sleep 0.1
done
echo "mock Dhan at $MOCK"

say "Starting the operator"
# The mock Dhan shares this machine's clock: no margin needed around midnight IST.
RUST_LOG=info "$BIN/dhan-operator" run --dhan-auth-url "$MOCK" --dhan-api-url "$MOCK" --midnight-margin 0s \
  --metrics-addr 127.0.0.1:0 "${BROWSER_FLAGS[@]}" 2>"$WORK/operator.log" &
PIDS+=($!)

say "Creating sample accounts (alice: PIN+TOTP, bob: Dhan Web token, carol: incomplete Secret)"
kubectl create namespace trading
kubectl create namespace research
# Bob logs in on Dhan Web and pastes the token into his Secret.
WEB_TOKEN=$(curl -fsS -X POST "$MOCK/__control/web-token" -H 'content-type: application/json' \
  -d '{"clientId":"1000000002"}' | jq -r .accessToken)
kubectl -n trading create secret generic bob-dhan --from-literal=accessToken="$WEB_TOKEN" >/dev/null
kubectl apply -f hack/demo/accounts.yaml

say "Waiting for the accounts to become Ready"
kubectl -n trading wait --for=condition=Ready dhanaccount/alice dhanaccount/bob --timeout=90s
kubectl -n research wait --for=jsonpath='{.status.phase}'=Failed dhanaccount/carol --timeout=60s 2>/dev/null \
  || sleep 3

if ((${#BROWSER_FLAGS[@]})); then
  say "Dave has only a Dhan app: a login Job on the node types his mobile, TOTP and PIN"
  kubectl apply -f hack/demo/browser-account.yaml
  for _ in $(seq 120); do
    [[ -n "$(kubectl -n trading get pods -l dhan-operator.dev/login-for=dave -o name)" ]] && break
    sleep 0.5
  done
  sleep 2
  kubectl -n trading get jobs,pods -o wide
  kubectl -n trading wait --for=condition=Ready dhanaccount/dave --timeout=180s
  kubectl -n trading get events --field-selector involvedObject.name=dave \
    -o custom-columns=REASON:.reason,MESSAGE:.message
fi

say "Asking for an immediate refresh of bob: Dhan's 2-minute mint limit still applies"
kubectl -n trading annotate dhanaccount/bob dhan-operator.dev/refresh-requested="$(date +%s)" --overwrite
sleep 2
kubectl -n trading get dhanaccount bob -o jsonpath='{.status.message}{"\n"}'

say "The token Secret a trading pod mounts (token redacted)"
kubectl -n trading get secret alice-token -o go-template='{{range $k, $v := .data}}{{$k}}: {{if eq $k "DHAN_ACCESS_TOKEN"}}<redacted, {{len $v}} base64 chars>{{else}}{{base64decode $v}}{{end}}{{"\n"}}{{end}}'

say "Carol's problem, as the operator reports it"
kubectl -n research get dhanaccount carol -o jsonpath='{.status.message}{"\n"}'

say "kubectl get dhanaccounts -A -o wide"
kubectl get dhanaccounts -A -o wide

say "kubectl dhan status -A (the plugin, $BIN/kubectl-dhan: copy it onto PATH)"
"$BIN/kubectl-dhan" status -A

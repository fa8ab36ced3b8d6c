#!/usr/bin/env bash
# A real Kubernetes node for the test bed's control plane (hack/controlplane.sh): containerd +
# runc + CNI bridge, a kubelet, kube-controller-manager (Job, Deployment, ReplicaSet,
# TTL-after-finished, garbage collector and node lifecycle controllers) and kube-scheduler, all 1.20 from the same Debian
# source tree as the apiserver (hack/install-testbed.sh builds them).
#
#   hack/node.sh check                         can this machine run the node? (exit 1 + why)
#   hack/node.sh up DIR --control-plane CPDIR [--operator-bin BIN] [--watch-pid PID]
#   hack/node.sh down DIR                      stop and clean up (idempotent)
#
# up imports the cached base images (hack/images.sh) and, with --operator-bin, an operator image
# around BIN; DIR/env then holds NODE_NAME, NODE_IP (where Pods reach the host: bind servers the
# Pods must reach there), OPERATOR_IMAGE, CHROMIUM_IMAGE and PAUSE_IMAGE.
#
# One node per machine: the kubelet writes host paths and sysctls of its own. Everything it
# changes outside DIR is recorded at up and undone at down, which a detached watcher also runs
# once the --watch-pid process is gone (a test binary that panicked included).
set -euo pipefail

HACK="$(cd "$(dirname "$0")" && pwd)"
CACHE_DIR="${DHAN_OPERATOR_CACHE:-$HOME/.cache/dhan-operator}"
BIN_DIR="$CACHE_DIR/bin"
# containerd's image store outlives a run, so the ~800 MB Chromium image is unpacked once.
CONTAINERD_ROOT="$CACHE_DIR/node/containerd"
ACTIVE="$CACHE_DIR/node/active"
NODE_NAME=dhan-node
BRIDGE=dhan0
# Pods and the host's side of the bridge; no route leads anywhere else.
SUBNET_PREFIX=10.231.0
NODE_IP=$SUBNET_PREFIX.1
# The `kubernetes` Service: the first address of hack/controlplane.sh's service range.
API_SERVICE_IP=10.0.0.1
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
# Host paths the kubelet, containerd's shims and CNI write whatever their configuration says.
HOST_PATHS=(/var/lib/kubelet /var/log/pods /var/log/containers /run/containerd /var/lib/cni /run/netns)

die() { printf 'node: %s\n' "$*" >&2; exit 1; }
log() { printf 'node: %s\n' "$*" >&2; }
usage() { die "usage: $0 check | up DIR --control-plane CPDIR [--operator-bin BIN] [--watch-pid PID] | down DIR"; }

# Running and not a zombie.
alive() { local stat; stat="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ "$stat" != Z* ]]; }

# Why this machine cannot run the node, or nothing.
why_not() {
  [[ "$(id -u)" == 0 ]] || { echo "not root: the kubelet and containerd need root"; return; }
  local c
  for c in cpu cpuacct cpuset memory devices freezer pids; do
    mountpoint -q "/sys/fs/cgroup/$c" || { echo "cgroup v1 controller $c is not mounted at /sys/fs/cgroup/$c (kubelet 1.20 with the cgroupfs driver needs cgroup v1)"; return; }
  done
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || { echo "no overlayfs in this kernel"; return; }
  unshare -Urnpm --fork true 2>/dev/null || { echo "cannot create user, network, pid and mount namespaces (unshare failed)"; return; }
  for c in containerd runc ctr umoci ip iptables; do
    command -v "$c" >/dev/null || { echo "$c is not installed; run hack/install-testbed.sh"; return; }
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] \
    || { echo "CNI plugins missing in /usr/lib/cni; run hack/install-testbed.sh"; return; }
  for c in kubelet kube-controller-manager kube-scheduler; do
    [[ -x "$BIN_DIR/$c" ]] || { echo "no $BIN_DIR/$c; run hack/install-testbed.sh"; return; }
  done
  [[ -s "$CACHE_DIR/images/headless-shell.oci.tar" && -s "$CACHE_DIR/images/pause.oci.tar" ]] \
    || { echo "base images missing in $CACHE_DIR/images; run hack/install-testbed.sh"; return; }
  return 0
}

start() { # NAME CMD... : a server in its own session, output to DIR/NAME.log, pid recorded
  local name="$1"
  shift
  setsid nohup "$@" </dev/null >"$DIR/$name.log" 2>&1 &
  echo "$! $name" >>"$DIR/pids"
}

write_containerd_config() {
  mkdir -p "$CONTAINERD_ROOT" "$DIR/containerd" "$DIR/cni/net.d" "$DIR/registry/_default"
  # Every pull goes to a closed loopback port: images come only from `ctr images import`, and
  # a missing image fails at once instead of reaching out.
  printf 'server = "http://127.0.0.1:9"\n[host."http://127.0.0.1:9"]\n  capabilities = ["pull", "resolve"]\n' \
    >"$DIR/registry/_default/hosts.toml"
  cat >"$DIR/containerd.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$DIR/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$DIR/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: sandboxes' default oom_score_adj of -998 makes runc fail.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$DIR/registry"
EOF
  cat >"$DIR/cni/net.d/10-dhan.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "dhan-node",
  "plugins": [{
    "type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false,
    "ipam": {
      "type": "host-local", "dataDir": "$DIR/cni/ipam",
      "ranges": [[{"subnet": "$SUBNET_PREFIX.0/24", "rangeStart": "$SUBNET_PREFIX.10", "rangeEnd": "$SUBNET_PREFIX.250"}]],
      "routes": [{"dst": "$API_SERVICE_IP/32", "gw": "$NODE_IP"}]
    }
  }]
}
EOF
}

write_kubelet_config() {
  mkdir -p "$DIR/kubelet" "$DIR/kubelet-plugins"
  cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
# Only the apiserver (for logs) reaches this port, on the bridge.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
# The kubelet's own iptables chains are not needed: the only Service traffic, to the apiserver,
# has its rule from service_to_apiserver.
makeIPTablesUtilChains: false
# Images come from ctr import and cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%"}
volumePluginDir: $DIR/kubelet-plugins
serializeImagePulls: false
EOF
}

ports() { # N: N free TCP ports from 20000, below the kernel's ephemeral range (32768 up)
  local p n=0
  while ((n < $1)); do
    p=$((20000 + RANDOM % 12000))
    [[ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]] || continue
    echo "$p"
    n=$((n + 1))
  done
}

record_host_state() {
  local s p c
  : >"$DIR/host-state"
  for s in "${SYSCTLS[@]}"; do echo "sysctl $s $(sysctl -n "$s")" >>"$DIR/host-state"; done
  for p in "${HOST_PATHS[@]}"; do [[ -e "$p" ]] && echo "existed $p" >>"$DIR/host-state"; done
  for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/k8s.io; do
    [[ -d "$c" ]] && echo "cgroup $c" >>"$DIR/host-state"
  done
  ls /run/netns 2>/dev/null | sed 's/^/netns /' >>"$DIR/host-state" || true
}

import_images() {
  local ctr=(ctr --address "$DIR/containerd.sock" -n k8s.io)
  eval "$("$HACK/images.sh" names)"
  local name file
  for name in PAUSE CHROMIUM; do
    local ref="${name}_IMAGE"
    ref="${!ref}"
    file="$CACHE_DIR/images/$(tr 'A-Z' 'a-z' <<<"$name" | sed 's/chromium/headless-shell/').oci.tar"
    # Imported once per image build: the store lives in the cache.
    if [[ "$("${ctr[@]}" images ls -q "name==$ref" 2>/dev/null)" != "$ref" || "$file" -nt "$CONTAINERD_ROOT/imported-$name" ]]; then
      log "importing $ref"
      "${ctr[@]}" images import --base-name "${ref%:*}" "$file" >/dev/null
      touch "$CONTAINERD_ROOT/imported-$name"
    fi
  done
  if [[ -n "$OPERATOR_BIN" ]]; then
    log "building and importing $OPERATOR_IMAGE around $OPERATOR_BIN"
    "$HACK/images.sh" operator "$OPERATOR_BIN" "$DIR/operator.oci.tar"
    "${ctr[@]}" images rm "$OPERATOR_IMAGE" >/dev/null 2>&1 || true
    "${ctr[@]}" images import --base-name "${OPERATOR_IMAGE%:*}" "$DIR/operator.oci.tar" >/dev/null
    rm -f "$DIR/operator.oci.tar"
  fi
}

# The one Service traffic the bed carries, kube-proxy's job in a cluster: Pods reach the
# apiserver (on loopback) at the `kubernetes` Service's address, as in-cluster clients do
# (KUBERNETES_SERVICE_HOST). A route on the Pods' side (the CNI config) and a DNAT to loopback
# on the host's side of the bridge; the rule is recorded and removed at down.
service_to_apiserver() {
  local port
  port="$(sed -n 's#^ *server: https://127.0.0.1:\([0-9]*\).*#\1#p' "$CP_DIR/kubeconfig" | head -1)"
  [[ -n "$port" ]] || die "no apiserver port in $CP_DIR/kubeconfig"
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
  local rule=(PREROUTING -i "$BRIDGE" -d "$API_SERVICE_IP" -p tcp --dport 443
              -j DNAT --to-destination "127.0.0.1:$port")
  iptables -t nat -A "${rule[@]}"
  echo "iptables-nat ${rule[*]}" >>"$DIR/host-state"
}

wait_until() { # SECONDS WHAT CMD...
  local deadline=$((SECONDS + $1)) what="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    local pid name
    while read -r pid name; do
      alive "$pid" || { tail -30 "$DIR/$name.log" >&2; down; die "$name exited while waiting for $what"; }
    done <"$DIR/pids"
    ((SECONDS < deadline)) || { down; die "timed out waiting for $what (logs in $DIR)"; }
    sleep 0.5
  done
}

node_ready() {
  [[ "$(kubectl --kubeconfig "$CP_DIR/kubeconfig" get node "$NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

up() {
  local why
  why="$(why_not)"
  [[ -z "$why" ]] || die "this machine cannot run a node: $why"
  [[ -f "$CP_DIR/kubeconfig" ]] || die "no control plane in $CP_DIR (hack/controlplane.sh up)"
  [[ -f "$DIR/pids" ]] && die "$DIR/pids exists: already up? run '$0 down $DIR' first"
  mkdir -p "$(dirname "$ACTIVE")"
  if [[ -f "$ACTIVE" ]]; then
    local other pid _name
    other="$(cat "$ACTIVE")"
    while read -r pid _name; do
      alive "$pid" && die "a node from $other runs already (pid $pid): one per machine"
    done < <(cat "$other/pids" 2>/dev/null)
    log "cleaning up after the node of $other"
    (DIR="$other" down)
  fi
  echo "$DIR" >"$ACTIVE"
  local start_s=$SECONDS
  record_host_state
  # From here on the host is changed: undo it on failure, and once the watched process is gone.
  trap 'log "up failed; cleaning up"; down' EXIT
  if [[ -n "$WATCH_PID" ]]; then
    setsid nohup bash -c 'while kill -0 "$1" 2>/dev/null; do [[ -f "$3/host-state" ]] || exit 0; sleep 1; done
                          "$2" down "$3"' \
      watcher "$WATCH_PID" "$HACK/node.sh" "$DIR" </dev/null >"$DIR/watcher.log" 2>&1 &
  fi

  # The bridge and its host address exist before any Pod, so servers can bind NODE_IP first.
  ip link add "$BRIDGE" type bridge 2>/dev/null || true
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  service_to_apiserver

  eval "$("$HACK/images.sh" names)"
  write_containerd_config
  start containerd containerd --config "$DIR/containerd.toml"
  wait_until 30 containerd ctr --address "$DIR/containerd.sock" version
  import_images

  local cp_kubeconfig="$CP_DIR/kubeconfig" gates=()
  if [[ "$("$BIN_DIR/kube-controller-manager" --version)" =~ v1\.(1[0-9]|20)\. ]]; then
    gates=(--feature-gates TTLAfterFinished=true)
  fi
  # serviceaccount and serviceaccount-token: every namespace's "default" account and a token
  # Secret per account, which the ServiceAccount admission plugin mounts into Pods when the
  # control plane has it on (hack/controlplane.sh --service-accounts).
  start kube-controller-manager "$BIN_DIR/kube-controller-manager" "${gates[@]}" \
    --kubeconfig "$cp_kubeconfig" --leader-elect=false --port 0 --secure-port 0 \
    --service-account-private-key-file "$CP_DIR/certs/sa.key" --root-ca-file "$CP_DIR/certs/ca.crt" \
    --controllers job,deployment,replicaset,ttl-after-finished,garbagecollector,nodelifecycle,serviceaccount,serviceaccount-token
  start kube-scheduler "$BIN_DIR/kube-scheduler" \
    --kubeconfig "$cp_kubeconfig" --leader-elect=false --port 0 --secure-port 0

  read -r KUBELET_PORT KUBELET_HEALTHZ_PORT < <(ports 2 | xargs)
  write_kubelet_config
  start kubelet "$BIN_DIR/kubelet" --config "$DIR/kubelet.yaml" \
    --kubeconfig "$cp_kubeconfig" --root-dir "$DIR/kubelet" --cert-dir "$DIR/kubelet/pki" \
    --container-runtime remote --container-runtime-endpoint "unix://$DIR/containerd.sock" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 2
  wait_until 90 "node $NODE_NAME Ready" node_ready
  trap - EXIT
  cat >"$DIR/env" <<EOF
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
OPERATOR_IMAGE=$OPERATOR_IMAGE
CHROMIUM_IMAGE=$CHROMIUM_IMAGE
PAUSE_IMAGE=$PAUSE_IMAGE
EOF
  log "$NODE_NAME Ready in $((SECONDS - start_s)) s (containerd $(containerd --version | awk '{print $3}'), kubelet $("$BIN_DIR/kubelet" --version | awk '{print $2}')); logs in $DIR"
}

stop_pids() { # NAME... (all when none)
  [[ -f "$DIR/pids" ]] || return 0
  local pid name wanted=" $* " stopped=()
  while read -r pid name; do
    [[ $# -eq 0 || "$wanted" == *" $name "* ]] || continue
    kill "$pid" 2>/dev/null || true
    stopped+=("$pid")
  done <"$DIR/pids"
  for _ in $(seq 50); do
    local any=0
    for pid in "${stopped[@]}"; do alive "$pid" && any=1; done
    ((any)) || break
    sleep 0.1
  done
  for pid in "${stopped[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

down() {
  [[ -f "$DIR/host-state" ]] || return 0
  # The kubelet first, so it restarts nothing; then every container and its shim.
  stop_pids kubelet kube-scheduler kube-controller-manager
  if [[ -S "$DIR/containerd.sock" ]]; then
    local ctr=(ctr --address "$DIR/containerd.sock" -n k8s.io) id
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $("${ctr[@]}" containers ls -q 2>/dev/null); do
      "${ctr[@]}" containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_pids containerd
  # Shims outlive containerd; ours are the ones serving this node's containerd address.
  local pid
  for pid in $(pgrep -f -- "-address $DIR/containerd.sock" || true); do
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$DIR/pids"

  # Mounts: Pod volumes, the kubelet's bind of its root dir, rootfs and shm of containers,
  # network namespaces; deepest first.
  local mnt
  for mnt in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^($DIR|$CONTAINERD_ROOT|/run/containerd|/var/lib/kubelet|/run/netns)/" | sort -r); do
    umount -l "$mnt" 2>/dev/null || true
  done
  local kind what value
  while read -r kind what value; do
    case "$kind" in
      sysctl) sysctl -qw "$what=$value" || true ;;
      # shellcheck disable=SC2086 # the rule's words, as recorded
      iptables-nat) iptables -t nat -D "$what" $value 2>/dev/null || true ;;
    esac
  done <"$DIR/host-state"
  local ns
  for ns in $(ls /run/netns 2>/dev/null); do
    grep -qx "netns $ns" "$DIR/host-state" || ip netns delete "$ns" 2>/dev/null || rm -f "/run/netns/$ns"
  done
  ip link delete "$BRIDGE" 2>/dev/null || true
  # cgroups the kubelet and containerd made: children before parents.
  local c top
  for c in /sys/fs/cgroup/*; do
    for top in "$c/kubepods" "$c/k8s.io"; do
      [[ -d "$top" ]] || continue
      grep -qx "cgroup $top" "$DIR/host-state" && continue
      find "$top" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
  done
  local p
  for p in "${HOST_PATHS[@]}"; do
    grep -qx "existed $p" "$DIR/host-state" || rm -rf "$p"
  done
  rm -f "$DIR/host-state"
  [[ "$(cat "$ACTIVE" 2>/dev/null)" == "$DIR" ]] && rm -f "$ACTIVE"
  rm -rf "$DIR/kubelet" "$DIR/containerd" "$DIR/cni/ipam"
  log "down: $DIR"
}

CMD="${1:-}"
case "$CMD" in
  check)
    why="$(why_not)"
    [[ -z "$why" ]] || { echo "$why"; exit 1; }
    exit 0
    ;;
  up | down) ;;
  *) usage ;;
esac
[[ $# -ge 2 ]] || usage
DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
shift 2
CP_DIR="" OPERATOR_BIN="" WATCH_PID=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --control-plane) [[ $# -ge 2 ]] || usage; CP_DIR="$(cd "$2" && pwd)"; shift 2 ;;
    --operator-bin) [[ $# -ge 2 ]] || usage; OPERATOR_BIN="$2"; shift 2 ;;
    --watch-pid) [[ $# -ge 2 ]] || usage; WATCH_PID="$2"; shift 2 ;;
    *) usage ;;
  esac
done
case "$CMD" in
  up) [[ -n "$CP_DIR" ]] || usage; up ;;
  down) down ;;
esac

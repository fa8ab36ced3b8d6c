#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian bookworm machine, idempotently:
#   - apt packages: etcd-server, chromium, and the toolchain to build kube-apiserver;
#   - a real kube-apiserver 1.20 built from Debian's source package, cached outside the repo,
#     with the kubelet, kube-controller-manager and kube-scheduler of a real node;
#   - the node's runtime (containerd, runc, CNI plugins) and its base images (hack/images.sh:
#     a headless-shell-compatible Chromium and a pause image, from Debian packages);
#   - promtool (from Debian's prometheus package, the binary alone) for tests/alerts.rs;
#   - real Helm for tests/helm.rs: the helm-sdkpy wheel (the official Helm library) in a Python
#     venv at $CACHE_DIR/helm-venv, driven by hack/helm.py (Debian has no helm package).
# Honours KUBEBUILDER_ASSETS: when it names a directory holding etcd and kube-apiserver,
# nothing is built.
set -euo pipefail

CACHE_DIR="${DHAN_OPERATOR_CACHE:-$HOME/.cache/dhan-operator}"
BIN_DIR="$CACHE_DIR/bin"
mkdir -p "$BIN_DIR"

log() { printf '[install-testbed] %s\n' "$*" >&2; }

need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
command -v openssl >/dev/null || need_apt+=(openssl)
# The real node (hack/node.sh) and its images (hack/images.sh).
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need_apt+=(containernetworking-plugins)
command -v umoci >/dev/null || need_apt+=(umoci)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v iptables >/dev/null || need_apt+=(iptables)
[[ -x /bin/busybox ]] || need_apt+=(busybox-static)
# hack/demo.sh reads the mock's answers with jq.
command -v jq >/dev/null || need_apt+=(jq)
# The operator's allocator (tikv-jemalloc-sys) builds jemalloc with configure and make.
command -v make >/dev/null || need_apt+=(make)
# python3 -m venv needs ensurepip, which Debian ships separately.
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3 python3-venv)

have_apiserver() {
  if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]]; then return 0; fi
  [[ -x "$BIN_DIR/kube-apiserver" ]]
}

if ! have_apiserver || [[ ! -x "$BIN_DIR/kubelet" || ! -x "$BIN_DIR/kube-controller-manager" || ! -x "$BIN_DIR/kube-scheduler" ]]; then
  command -v go >/dev/null || need_apt+=(golang-go)
  command -v rsync >/dev/null || need_apt+=(rsync)
  [[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]] || need_apt+=(golang-github-modern-go-reflect2-dev)
fi

export DEBIAN_FRONTEND=noninteractive
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# promtool evaluates the chart's alert rules (tests/alerts.rs). Only the binary is taken from
# Debian's prometheus package: installing it would set up a Prometheus server.
if [[ ! -x "$BIN_DIR/promtool" ]]; then
  log "extracting promtool from Debian's prometheus package into $BIN_DIR"
  promtool_tmp="$(mktemp -d)"
  (cd "$promtool_tmp" && { apt-get download prometheus >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  dpkg-deb -x "$promtool_tmp"/prometheus_*.deb "$promtool_tmp/root"
  install -m 0755 "$promtool_tmp/root/usr/bin/promtool" "$BIN_DIR/promtool"
  rm -rf "$promtool_tmp"
fi

# Helm, for real: helm-sdkpy bundles the official Helm library (a ~120 MB Go shared object) behind
# cffi. It declares Python >= 3.12 but works on Debian's 3.11, hence --ignore-requires-python.
# Pinned: tests/helm.rs and hack/helm.py were written against this version.
HELM_SDKPY_VERSION=0.1.32
CFFI_VERSION=2.1.1
HELM_VENV="$CACHE_DIR/helm-venv"
helm_venv_ok() {
  [[ -x "$HELM_VENV/bin/python" ]] && "$HELM_VENV/bin/python" - "$HELM_SDKPY_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import helm_sdkpy  # loads the shared library
sys.exit(version("helm-sdkpy") != sys.argv[1])
PY
}
if helm_venv_ok; then
  log "helm-sdkpy $HELM_SDKPY_VERSION ready in $HELM_VENV"
else
  log "installing helm-sdkpy $HELM_SDKPY_VERSION into $HELM_VENV"
  rm -rf "$HELM_VENV"
  python3 -m venv "$HELM_VENV"
  "$HELM_VENV/bin/pip" install --quiet --disable-pip-version-check --ignore-requires-python \
    "helm-sdkpy==$HELM_SDKPY_VERSION" "cffi==$CFFI_VERSION"
  helm_venv_ok || { log "helm-sdkpy does not load from $HELM_VENV"; exit 1; }
fi

# Kubernetes binaries, all built from Debian's kubernetes source package (1.20.2 with vendor/):
# kube-apiserver for every test, and a real node for the login-Job tests (hack/node.sh):
# kubelet, kube-controller-manager (Job controller, garbage collector, TTL controller) and
# kube-scheduler. One `make` builds them together so their shared packages compile once.
K8S_BINARIES=(kube-apiserver kubelet kube-controller-manager kube-scheduler)
missing_binaries() {
  local b
  for b in "${K8S_BINARIES[@]}"; do
    if [[ "$b" == kube-apiserver ]] && have_apiserver; then continue; fi
    [[ -x "$BIN_DIR/$b" ]] || echo "$b"
  done
}
"$(dirname "$0")/images.sh" base

mapfile -t MISSING < <(missing_binaries)
if ((${#MISSING[@]} == 0)); then
  log "kubernetes binaries ready in $BIN_DIR"
  exit 0
fi

# deb-src for the machine's own Debian mirror: copy the URI of the first `deb` entry that serves
# this release's main suite, so the repository names no package host of its own.
enable_deb_src() {
  local codename uri
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  uri="$(
    {
      # deb822 stanzas: print URIs of stanzas whose Types has deb and Suites has the codename.
      awk -v c="$codename" '
        /^[[:space:]]*$/ { if (t && s && u) { print u; done = 1; exit } t = s = 0; u = ""; next }
        /^Types:/  { for (i = 2; i <= NF; i++) if ($i == "deb") t = 1 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) s = 1 }
        /^URIs:/   { u = $2 }
        END        { if (!done && t && s && u) print u }
      ' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
      # one-line entries: deb [opts] URI SUITE COMPONENTS...
      sed -E 's/\[[^]]*\]//' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk -v c="$codename" '$1 == "deb" && $3 == c { print $2 }' || true
    } | head -1
  )"
  [[ -n "$uri" ]] || { log "no apt source for $codename found to derive a deb-src entry from"; exit 1; }
  log "enabling deb-src for $codename from the machine's apt source"
  printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" "$codename" >/etc/apt/sources.list.d/dhan-operator-src.sources
  apt-get update -qq
}

SRC_ROOT="$CACHE_DIR/src"
mkdir -p "$SRC_ROOT"
if ! ls "$SRC_ROOT"/kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  if ! grep -rqs '^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/ && \
     ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/; then
    enable_deb_src
  fi
  log "downloading Debian's kubernetes source package"
  (cd "$SRC_ROOT" && apt-get source --download-only kubernetes >/dev/null)
fi

TREE="$SRC_ROOT/tree"
if [[ ! -d "$TREE/cmd/kube-apiserver" ]]; then
  rm -rf "$TREE" && mkdir -p "$TREE"
  tar -xzf "$(ls "$SRC_ROOT"/kubernetes_*.orig.tar.gz | head -1)" -C "$TREE" --strip-components=1
fi

# Go >= 1.18 crashes reflect2 1.0.1 ("fatal error: fault" in mapiterinit) on the first custom
# object; Debian's 1.0.2 is the fix.
R2="$TREE/vendor/github.com/modern-go/reflect2"
rm -rf "$R2" && mkdir -p "$R2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2/. "$R2/"
find "$R2" -name '*_test.go' -delete

what=""
for b in "${MISSING[@]}"; do what+=" cmd/$b"; done
log "building${what} (5 to 12 minutes on 2 cores, once)"
(
  cd "$TREE"
  export GOPATH="$TREE/.go" CGO_ENABLED=0 GOFLAGS=-mod=vendor GO111MODULE=off
  mkdir -p .go/src/k8s.io
  ln -sfn ../../.. .go/src/k8s.io/kubernetes
  make WHAT="${what# }" >"$CACHE_DIR/build.log" 2>&1 || { tail -40 "$CACHE_DIR/build.log" >&2; exit 1; }
)
for b in "${MISSING[@]}"; do
  cp "$TREE/_output/bin/$b" "$BIN_DIR/$b.tmp"
  mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
done
rm -rf "$TREE"
log "built ${MISSING[*]} into $BIN_DIR"

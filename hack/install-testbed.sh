#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian bookworm machine, idempotently:
#   - apt packages: etcd-server, chromium, and the toolchain to build kube-apiserver;
#   - a real kube-apiserver 1.20 built from Debian's source package, cached outside the repo;
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
# python3 -m venv needs ensurepip, which Debian ships separately.
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3 python3-venv)

have_apiserver() {
  if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]]; then return 0; fi
  [[ -x "$BIN_DIR/kube-apiserver" ]]
}

if ! have_apiserver; then
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

if have_apiserver; then
  log "kube-apiserver ready"
  exit 0
fi

# Build kube-apiserver from Debian's kubernetes source package (1.20.2 with vendor/).
SRC_ROOT="$CACHE_DIR/src"
mkdir -p "$SRC_ROOT"
if ! ls "$SRC_ROOT"/kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  if ! grep -rqs 'deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/ && \
     ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/; then
    log "enabling deb-src for bookworm"
    cat >/etc/apt/sources.list.d/dhan-operator-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq
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

log "building kube-apiserver (about 5 minutes on 2 cores)"
(
  cd "$TREE"
  export GOPATH="$TREE/.go" CGO_ENABLED=0 GOFLAGS=-mod=vendor GO111MODULE=off
  mkdir -p .go/src/k8s.io
  ln -sfn ../../.. .go/src/k8s.io/kubernetes
  make WHAT=cmd/kube-apiserver >"$CACHE_DIR/build.log" 2>&1 || { tail -40 "$CACHE_DIR/build.log" >&2; exit 1; }
)
cp "$TREE/_output/bin/kube-apiserver" "$BIN_DIR/kube-apiserver.tmp"
mv "$BIN_DIR/kube-apiserver.tmp" "$BIN_DIR/kube-apiserver"
rm -rf "$TREE"
log "kube-apiserver built: $BIN_DIR/kube-apiserver"

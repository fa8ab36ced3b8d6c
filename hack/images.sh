#!/usr/bin/env bash
# Container images for the test bed's node, built from Debian packages without a registry or a
# container engine, as OCI archives that `ctr images import` takes:
#
#   hack/images.sh base                  the Chromium sidecar and the pause image, built once and
#                                        cached in $CACHE/images (hack/install-testbed.sh runs it)
#   hack/images.sh operator BIN OUT      the operator image around the binary BIN, into OUT
#   hack/images.sh names                 prints NAME=REFERENCE for every image
#
# Each image runs what its production counterpart runs, so a login Job on the bed is the Job a
# cluster gets from the chart:
#   - operator: like the Dockerfile's final stage on distroless/cc-debian12:nonroot: glibc,
#     libgcc, CA certificates and a passwd naming nonroot (65532); /dhan-operator as entrypoint,
#     `run` as command, user 65532:65532. The libraries are the ones the binary was linked
#     against on this machine.
#   - headless-shell: the contract of the chart's default chromedp/headless-shell image: its
#     entrypoint /headless-shell/run.sh forwards 0.0.0.0:9222 to 127.0.0.1:9223 with socat and
#     execs /headless-shell/headless-shell with --no-sandbox, --use-gl=angle,
#     --use-angle=swiftshader, --remote-debugging-address=0.0.0.0, --remote-debugging-port=9223
#     and then the container's args; no USER (the Pod's securityContext decides). Upstream ships
#     Chrome's headless_shell build; here it is Debian's chromium.
#   - pause: the sandbox image containerd starts for every Pod (busybox sleeping).
set -euo pipefail

CACHE_DIR="${DHAN_OPERATOR_CACHE:-$HOME/.cache/dhan-operator}"
IMAGE_DIR="$CACHE_DIR/images"
OPERATOR_IMAGE=dhan-operator.test/dhan-operator:bed
CHROMIUM_IMAGE=dhan-operator.test/headless-shell:bed
PAUSE_IMAGE=dhan-operator.test/pause:bed
# Bump when the recipe of a cached image changes, so existing caches rebuild it.
BASE_RECIPE=1

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Writes an OCI archive OUT holding one image REF made of the layer tarballs LAYER..., with the
# config set by the umoci `--config.*` options in CONFIG (an array name).
oci_archive() { # OUT REF CONFIG_ARRAY LAYER...
  local out="$1" ref="$2" layout tag
  local -n _config="$3"
  shift 3
  layout="$(mktemp -d "$IMAGE_DIR/layout.XXXXXX")"
  tag="${ref##*:}"
  rm -rf "$layout" && umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  local layer
  for layer in "$@"; do
    umoci raw add-layer --image "$layout:$tag" "$layer"
  done
  umoci config --image "$layout:$tag" --os linux --architecture amd64 --author dhan-operator-testbed "${_config[@]}"
  umoci gc --layout "$layout"
  tar -C "$layout" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$layout"
}

# The machine's own apt sources, for mmdebstrap: the repository names no package host.
apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -s "$f" ]] && grep -qE '^(deb |Types:.*\bdeb\b)' "$f" && echo "$f"
  done
  return 0
}

build_chromium() {
  local out="$IMAGE_DIR/headless-shell.oci.tar" work
  work="$(mktemp -d "$IMAGE_DIR/chromium.XXXXXX")"
  local codename
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  mapfile -t sources < <(apt_sources)
  ((${#sources[@]})) || die "no apt sources on this machine to build the Chromium image from"
  log "building $CHROMIUM_IMAGE: Debian $codename with chromium and socat (about a minute)"
  mmdebstrap --quiet --mode=root --variant=essential --include=chromium,socat,bash \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$codename" "$work/debian.tar" "${sources[@]}"

  # The headless-shell layer: the binary where upstream has it, and upstream's run.sh.
  mkdir -p "$work/shell/headless-shell"
  ln -s /usr/lib/chromium/chromium "$work/shell/headless-shell/headless-shell"
  cat >"$work/shell/headless-shell/run.sh" <<'EOF'
#!/bin/bash

set -ex

exec socat TCP4-LISTEN:9222,fork TCP4:127.0.0.1:9223 &

exec /headless-shell/headless-shell \
  --no-sandbox \
  --use-gl=angle \
  --use-angle=swiftshader \
  --remote-debugging-address=0.0.0.0 \
  --remote-debugging-port=9223 \
  $@
EOF
  chmod 755 "$work/shell/headless-shell/run.sh"
  tar --owner=0 --group=0 -C "$work/shell" -cf "$work/shell.tar" .

  local -a config=(
    --config.entrypoint /headless-shell/run.sh
    --config.env 'PATH=/headless-shell:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --config.env 'LANG=en-US.UTF-8'
    --config.exposedports 9222/tcp --config.exposedports 9223/tcp
  )
  oci_archive "$out" "$CHROMIUM_IMAGE" config "$work/debian.tar" "$work/shell.tar"
  rm -rf "$work"
}

build_pause() {
  local out="$IMAGE_DIR/pause.oci.tar" work
  work="$(mktemp -d "$IMAGE_DIR/pause.XXXXXX")"
  log "building $PAUSE_IMAGE from busybox-static"
  mkdir -p "$work/root/bin"
  cp /bin/busybox "$work/root/bin/busybox"
  tar --owner=0 --group=0 -C "$work/root" -cf "$work/root.tar" .
  # Sleeps as PID 1 holding the Pod's namespaces; containerd kills sandboxes with SIGKILL.
  local -a config=(--config.entrypoint /bin/busybox --config.cmd sleep --config.cmd 2147483647
                   --config.user 65535:65535)
  oci_archive "$out" "$PAUSE_IMAGE" config "$work/root.tar"
  rm -rf "$work"
}

base() {
  mkdir -p "$IMAGE_DIR"
  local stamp="$IMAGE_DIR/recipe"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$BASE_RECIPE" ]]; then
    rm -f "$IMAGE_DIR"/*.oci.tar
  fi
  [[ -s "$IMAGE_DIR/pause.oci.tar" ]] || build_pause
  [[ -s "$IMAGE_DIR/headless-shell.oci.tar" ]] || build_chromium
  echo "$BASE_RECIPE" >"$stamp"
  log "base images ready in $IMAGE_DIR"
}

# The operator image: a distroless-like base (its own layer) and the binary.
operator() { # BIN OUT
  local bin="$1" out="$2" work
  [[ -x "$bin" ]] || die "no operator binary at $bin"
  mkdir -p "$IMAGE_DIR"
  work="$(mktemp -d "$IMAGE_DIR/operator.XXXXXX")"
  local root="$work/base"
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot" "$root/root"
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/home/nonroot"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  # The shared libraries the binary loads, at the paths the loader looks for them.
  local lib
  for lib in $(ldd "$bin" | grep -oE '/[^ ]+'); do
    cp --parents -L "$lib" "$root/"
  done
  tar --numeric-owner -C "$root" -cf "$work/base.tar" .
  mkdir -p "$work/app"
  cp "$bin" "$work/app/dhan-operator"
  tar --owner=0 --group=0 -C "$work/app" -cf "$work/app.tar" .
  local -a config=(
    --config.entrypoint /dhan-operator --config.cmd run --config.user 65532:65532
    --config.workingdir /
    --config.env 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --config.env 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'
    --config.exposedports 8080/tcp
  )
  oci_archive "$out" "$OPERATOR_IMAGE" config "$work/base.tar" "$work/app.tar"
  rm -rf "$work"
}

case "${1:-}" in
  base) base ;;
  operator) [[ $# -eq 3 ]] || die "usage: $0 operator BIN OUT"; operator "$2" "$3" ;;
  names)
    echo "OPERATOR_IMAGE=$OPERATOR_IMAGE"
    echo "CHROMIUM_IMAGE=$CHROMIUM_IMAGE"
    echo "PAUSE_IMAGE=$PAUSE_IMAGE"
    ;;
  *) die "usage: $0 base | operator BIN OUT | names" ;;
esac

#!/usr/bin/env bash
# Container images for the test bed's node, built from Debian packages without a registry or a
# container engine, as OCI archives that `ctr images import` takes:
#
#   hack/images.sh base                  the Chromium sidecar and the pause image, built once and
#                                        cached in $CACHE/images (hack/install-testbed.sh runs it)
#   hack/images.sh operator BIN OUT [--kubectl-dhan BIN] [--ref REF] [--version V] [--revision R]
#                  [--source URL] [--strip]  the operator image around the binary BIN, into OUT
#                                        (`make image` runs it on the release build)
#   hack/images.sh names                 prints NAME=REFERENCE for every image
#
# Each image runs what its production counterpart runs, so a login Job on the bed is the Job a
# cluster gets from the chart:
#   - operator: the production image, the Dockerfile's final stage made without a container
#     engine: on a distroless/cc-debian12:nonroot-like base (glibc, libgcc, CA certificates, a
#     passwd naming nonroot; no shell, no package manager) only /dhan-operator (entrypoint,
#     `run` as command) and /kubectl-dhan, user 65532:65532, OCI labels with version, revision
#     and source. The tests build it around their own binary; the chart runs it.
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
OPERATOR_BASE_RECIPE=2

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
for tool in umoci mmdebstrap python3; do
  command -v "$tool" >/dev/null \
    || die "$tool is not installed (apt-get install umoci mmdebstrap; hack/install-testbed.sh installs them)"
done

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
  umoci config --image "$layout:$tag" --os linux --architecture "$(dpkg --print-architecture)" --author dhan-operator "${_config[@]}"
  umoci gc --layout "$layout"
  # The full name too, which `ctr images import` (k3s, containerd) names the image by.
  python3 - "$layout/index.json" "$ref" <<'PY'
import json, sys
path, ref = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for manifest in index["manifests"]:
    manifest.setdefault("annotations", {})["io.containerd.image.name"] = ref
json.dump(index, open(path, "w"))
PY
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

# The operator image's base, like distroless/cc-debian12 (nonroot): glibc and libgcc unpacked
# from Debian's packages of this machine's release (no maintainer scripts: the image has no shell
# to run them), the CA bundle built from Debian's ca-certificates, their copyright files, a
# passwd naming nonroot (65532) and /tmp. Built once per release and recipe into OUT.
operator_base() { # OUT
  local out="$1" work codename
  work="$(mktemp -d "$IMAGE_DIR/operator-base.XXXXXX")"
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  mapfile -t sources < <(apt_sources)
  ((${#sources[@]})) || die "no apt sources on this machine to build the operator image from"
  log "building the operator image's base: libc6, libgcc-s1 and ca-certificates of Debian $codename"
  local -a unpack=(mmdebstrap --quiet --mode=root --variant=extract
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/lintian/*')
  "${unpack[@]}" --include=libc6,libgcc-s1 "$codename" "$work/libs" "${sources[@]}"
  "${unpack[@]}" --include=ca-certificates "$codename" "$work/ca" "${sources[@]}"

  local root="$work/root"
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot" "$root/lib64" \
    "$root/usr/share/doc/ca-certificates"
  # Only what the packages ship, not the unpacking's scaffolding (apt and dpkg state, /dev).
  cp -a "$work/libs/lib" "$work/libs/usr" "$root/"
  # Character-set converters for iconv, which nothing in the image calls (8 MB).
  rm -rf "$root/usr/share/lintian" "$root/usr/lib/x86_64-linux-gnu/gconv" "$root/usr/lib/aarch64-linux-gnu/gconv"
  [[ -e "$root/lib64/ld-linux-x86-64.so.2" || ! -e "$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ]] \
    || ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
  # update-ca-certificates' result with every certificate enabled (Debian's default).
  cat "$work/ca"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
  cp "$work/ca/usr/share/doc/ca-certificates/copyright" "$root/usr/share/doc/ca-certificates/"
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/home/nonroot"
  cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  # No shell, no package manager: what a shell could be made of is not there.
  [[ ! -e "$root/bin/sh" && ! -e "$root/usr/bin/sh" ]] || die "the base has a shell"
  tar --sort=name --mtime=@0 --numeric-owner -C "$root" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

# The operator image (`make image`): the base above and a layer with the binaries.
#   operator BIN OUT [--kubectl-dhan BIN] [--ref REF] [--version V] [--revision R] [--source URL]
#            [--strip]
operator() {
  local bin="$1" out="$2" kubectl_dhan="" ref="$OPERATOR_IMAGE" version="" revision="" source="" strip=""
  shift 2
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --kubectl-dhan) kubectl_dhan="$2"; shift 2 ;;
      --ref) ref="$2"; shift 2 ;;
      --version) version="$2"; shift 2 ;;
      --revision) revision="$2"; shift 2 ;;
      --source) source="$2"; shift 2 ;;
      --strip) strip=1; shift ;;
      *) die "operator: unknown option $1" ;;
    esac
  done
  [[ -x "$bin" ]] || die "no operator binary at $bin"
  mkdir -p "$IMAGE_DIR"
  local base="$IMAGE_DIR/operator-base-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")-$OPERATOR_BASE_RECIPE.tar"
  [[ -s "$base" ]] || operator_base "$base"
  local work
  work="$(mktemp -d "$IMAGE_DIR/operator.XXXXXX")"
  mkdir -p "$work/app"
  cp "$bin" "$work/app/dhan-operator"
  [[ -z "$kubectl_dhan" ]] || cp "$kubectl_dhan" "$work/app/kubectl-dhan"
  # Symbols only make the image bigger (panics still name their place).
  [[ -z "$strip" ]] || strip --strip-unneeded "$work/app"/*
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/app" -cf "$work/app.tar" .
  local -a config=(
    --config.entrypoint /dhan-operator --config.cmd run --config.user 65532:65532
    --config.workingdir /
    --config.env 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --config.env 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'
    --config.exposedports 8080/tcp
    --config.label 'org.opencontainers.image.title=dhan-operator'
    --config.label 'org.opencontainers.image.description=Keeps Dhan access tokens alive in Kubernetes Secrets'
    --config.label 'org.opencontainers.image.licenses=Apache-2.0'
  )
  [[ -z "$version" ]] || config+=(--config.label "org.opencontainers.image.version=$version")
  [[ -z "$revision" ]] || config+=(--config.label "org.opencontainers.image.revision=$revision")
  [[ -z "$source" ]] || config+=(--config.label "org.opencontainers.image.source=$source")
  oci_archive "$out" "$ref" config "$base" "$work/app.tar"
  rm -rf "$work"
}

case "${1:-}" in
  base) base ;;
  operator) [[ $# -ge 3 ]] || die "usage: $0 operator BIN OUT [--kubectl-dhan BIN] [--ref REF] [--version V] [--revision R] [--source URL]"; shift; operator "$@" ;;
  names)
    echo "OPERATOR_IMAGE=$OPERATOR_IMAGE"
    echo "CHROMIUM_IMAGE=$CHROMIUM_IMAGE"
    echo "PAUSE_IMAGE=$PAUSE_IMAGE"
    ;;
  *) die "usage: $0 base | operator BIN OUT [options] | names" ;;
esac

#!/usr/bin/env bash
# The krew plugin manifest of a release (`kubectl krew install --manifest=dhan.yaml`, or for
# krew-index): hack/krew-manifest.sh VERSION SHA256SUMS URL_BASE > dhan.yaml, where SHA256SUMS
# lists the `make plugin-archive` archives (kubectl-dhan_VERSION_linux_ARCH.tar.gz).
set -euo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 VERSION SHA256SUMS URL_BASE" >&2; exit 2; }
version="$1" sums="$2" base="$3"
sha() { awk -v f="kubectl-dhan_${version}_linux_$1.tar.gz" '$2 == f {print $1}' "$sums"; }
cat <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: dhan
spec:
  version: v$version
  homepage: https://github.com/dhan-operator/dhan-operator
  shortDescription: Dhan tokens kept by dhan-operator - status, expiry, refresh
  description: |
    Shows every DhanAccount's phase, token expiry and next refresh, requests refreshes, and
    inspects tokens without printing them. Needs dhan-operator in the cluster.
  platforms:
YAML
for arch in amd64 arm64; do
  digest="$(sha "$arch")"
  [[ -n "$digest" ]] || { echo "no linux/$arch archive in $sums" >&2; exit 1; }
  cat <<YAML
    - selector:
        matchLabels: {os: linux, arch: $arch}
      uri: $base/kubectl-dhan_${version}_linux_$arch.tar.gz
      sha256: $digest
      files:
        - {from: kubectl-dhan, to: .}
        - {from: LICENSE, to: .}
      bin: kubectl-dhan
YAML
done

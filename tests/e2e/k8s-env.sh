# Shared by build.sh and start.sh: which Kubernetes, and where its binaries are cached.
# shellcheck shell=bash
K8S_DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
K8S_DEB_UPSTREAM="1.20.5+really1.20.2"
_e2e_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_patch_hash="$(find "$_e2e_dir/patches" -name '*.patch' -type f -print0 2>/dev/null \
  | sort -z | xargs -0 -r cat | sha256sum | cut -c1-12)"
K8S_PATCH_HASH="$_patch_hash"
K8S_BIN="${GSCHED_K8S_CACHE:-/var/cache/gsched}/k8s-v1.20.2-$_patch_hash"
export K8S_BIN K8S_PATCH_HASH

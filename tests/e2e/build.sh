#!/usr/bin/env bash
# Builds kube-apiserver and kube-scheduler v1.20.2 from Debian bookworm's `kubernetes`
# source package (the full upstream tree with vendor/), offline, with Debian's golang-1.19-go,
# the way Debian's own rules do. No registry ships these binaries, so this is the only way to
# get a real control plane on these machines.
#
# The two binaries are cached outside the clone, keyed by the patches applied on top
# (tests/e2e/patches/*.patch), and the build is skipped when they are there:
#   ${GSCHED_K8S_CACHE:-/var/cache/gsched}/k8s-v1.20.2-<patch hash>/{kube-apiserver,kube-scheduler}
# Prints that directory on its last line. Needs root the first time (apt-get).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/e2e/k8s-env.sh
. "$here/k8s-env.sh"

if [ -x "$K8S_BIN/kube-apiserver" ] && [ -x "$K8S_BIN/kube-scheduler" ]; then
  echo "k8s binaries cached in $K8S_BIN"
  echo "$K8S_BIN"
  exit 0
fi

log() { echo "[build $(date -u +%H:%M:%S)] $*"; }
die() { echo "build.sh: $*" >&2; exit 1; }

# --- toolchain and source ---------------------------------------------------------------
need=()
[ -x /usr/lib/go-1.19/bin/go ] || need+=(golang-1.19-go)
command -v rsync >/dev/null || need+=(rsync)
command -v make >/dev/null || need+=(make)
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
command -v patch >/dev/null || need+=(patch)
src_list=/etc/apt/sources.list.d/gsched-bookworm-src.sources
if [ ! -f "$src_list" ]; then
  [ "$(id -u)" = 0 ] || die "not root: cannot add the bookworm deb-src entry ($src_list)"
  cat >"$src_list" <<'SRC'
# Added by gsched tests/e2e/build.sh: Debian's kubernetes source package for the e2e tests.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fresh_lists=1
fi
if [ ${#need[@]} -gt 0 ] || [ "${fresh_lists:-0}" = 1 ]; then
  [ "$(id -u)" = 0 ] || die "not root: cannot install ${need[*]:-the deb-src lists}"
  log "apt-get update; installing: ${need[*]:-nothing}"
  apt-get update -qq || die "apt-get update failed"
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
      >/dev/null || die "apt-get install ${need[*]} failed"
  fi
fi

work="${GSCHED_K8S_WORK:-/var/tmp/gsched-k8s-build}"
mkdir -p "$work"
cd "$work"
tree="$work/kubernetes-$K8S_DEB_UPSTREAM"
# A tree patched with another set of patches is extracted afresh and built again (about
# as long as the first build: the code generators and most packages run again).
if [ -f "$tree/.gsched-extracted" ] && [ "$(cat "$tree/.gsched-patches" 2>/dev/null)" != "$K8S_PATCH_HASH" ]; then
  log "patch set changed: extracting the source again"
  rm -rf "$tree"
fi
if [ ! -f "$tree/.gsched-extracted" ]; then
  rm -rf "$tree"
  if ! ls kubernetes_"$K8S_DEB_UPSTREAM"*.dsc >/dev/null 2>&1; then
    log "apt-get source kubernetes=$K8S_DEB_VERSION"
    apt-get source -qq --download-only "kubernetes=$K8S_DEB_VERSION" \
      || die "apt-get source kubernetes=$K8S_DEB_VERSION failed (is the deb-src entry there?)"
  fi
  log "dpkg-source -x"
  dpkg-source -q -x kubernetes_*.dsc "$tree" >/dev/null || die "dpkg-source -x failed"
  touch "$tree/.gsched-extracted"
fi

# --- gsched's patches: backports of two kube-scheduler 1.20 fixes (see each file) ---------
if [ ! -f "$tree/.gsched-patches" ]; then
  for p in "$here"/patches/*.patch; do
    [ -e "$p" ] || continue
    log "patch $(basename "$p")"
    patch -d "$tree" -p1 --forward --quiet <"$p" || die "patch $(basename "$p") did not apply"
  done
  echo "$K8S_PATCH_HASH" >"$tree/.gsched-patches"
fi

# --- build, GOPATH mode like debian/rules -------------------------------------------------
mkdir -p "$work/.go/src/k8s.io"
ln -sfn "$tree" "$work/.go/src/k8s.io/kubernetes"
cd "$work/.go/src/k8s.io/kubernetes"
export GOPATH="$work/.go" GOCACHE="$work/.gocache" GO111MODULE=off CGO_ENABLED=0
export PATH="/usr/lib/go-1.19/bin:$PATH"
unset GOFLAGS
export KUBE_GIT_VERSION="v1.20.2" KUBE_GIT_TREE_STATE=clean
log "make WHAT=\"cmd/kube-apiserver cmd/kube-scheduler\" (go $(go version | cut -d' ' -f3))"
make WHAT="cmd/kube-apiserver cmd/kube-scheduler" || die "make failed"

out="$(find _output -type f -name kube-scheduler -perm -u+x | head -1)"
[ -n "$out" ] || die "make finished but no kube-scheduler under _output"
bindir="$(dirname "$out")"
tmp="$K8S_BIN.tmp.$$"
mkdir -p "$tmp"
cp "$bindir/kube-apiserver" "$bindir/kube-scheduler" "$tmp/"
rm -rf "$K8S_BIN"
mv "$tmp" "$K8S_BIN"
log "binaries in $K8S_BIN"
echo "$K8S_BIN"

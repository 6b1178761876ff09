#!/usr/bin/env bash
# Prints the folder of the envtest binaries (etcd, kube-apiserver, kube-controller-manager) on
# stdout, for `export KUBEBUILDER_ASSETS="$(scripts/ensure-envtest.sh)"`. Progress and
# errors go to stderr.
# Order: KUBEBUILDER_ASSETS when it already holds the three binaries; else
# ../shared/envtest/unpack.sh beside the repository (how CI provides them). When neither is
# there it prints nothing and says, for each missing binary, where it comes from (etcd and
# kube-apiserver: setup-envtest; kube-controller-manager: the Kubernetes server release
# archive); the real-API-server tests then skip, except under CI=true, where this fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "ensure-envtest: $*" >&2; }
has_binaries() {
  [[ -n "$1" && -x "$1/etcd" && -x "$1/kube-apiserver" && -x "$1/kube-controller-manager" ]]
}

if has_binaries "${KUBEBUILDER_ASSETS:-}"; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

unpack="$(pwd)/../shared/envtest/unpack.sh"
if [[ -x "$unpack" ]]; then
  if ! dir="$("$unpack")"; then
    log "error: $unpack failed (see above); cannot provide KUBEBUILDER_ASSETS"
    exit 1
  fi
  if ! has_binaries "$dir"; then
    log "error: $unpack printed $dir, which lacks etcd, kube-apiserver or kube-controller-manager"
    exit 1
  fi
  echo "$dir"
  exit 0
fi

# Where each binary comes from, for a machine without ../shared/envtest. The version the
# tests are known to run against is Kubernetes 1.36 (etcd 3.4 or newer).
missing=()
for binary in etcd kube-apiserver kube-controller-manager; do
  [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$binary" ]] || missing+=("$binary")
done
where() {
  case "$1" in
    etcd | kube-apiserver)
      echo "  $1: setup-envtest (go install sigs.k8s.io/controller-runtime/tools/setup-envtest@latest; setup-envtest use 1.36 -p path prints a folder holding etcd and kube-apiserver)" ;;
    kube-controller-manager)
      echo "  kube-controller-manager: not in setup-envtest's archives; from the Kubernetes server release archive, https://dl.k8s.io/v1.36.2/kubernetes-server-linux-amd64.tar.gz (kubernetes/server/bin/kube-controller-manager)" ;;
  esac
}
explain() {
  log "missing ${missing[*]} (KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-unset}; no $unpack). Put all three in one folder and set KUBEBUILDER_ASSETS to it:"
  for binary in "${missing[@]}"; do where "$binary" >&2; done
}
if [[ "${CI:-}" == true ]]; then
  explain
  log "error: the real-API-server tests cannot run without them (CI=true)"
  exit 1
fi
explain
log "the real-API-server tests will skip"

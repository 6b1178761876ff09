#!/usr/bin/env bash
# Prints the folder of the envtest binaries (etcd, kube-apiserver, kube-controller-manager) on
# stdout, for `export KUBEBUILDER_ASSETS="$(scripts/ensure-envtest.sh)"`. Progress and
# errors go to stderr.
# Order: KUBEBUILDER_ASSETS when it already holds the three binaries; else
# ../shared/envtest/unpack.sh beside the repository (how CI provides them). When neither is
# there it prints nothing: the real-API-server tests then skip with a line saying how to get
# the binaries, except under CI=true, where this script fails instead.
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

how="get them with \`setup-envtest use 1.36 -p path\` (etcd, kube-apiserver) plus kube-controller-manager from the Kubernetes 1.36 release archive, and set KUBEBUILDER_ASSETS to their folder"
if [[ "${CI:-}" == true ]]; then
  log "error: no envtest binaries: KUBEBUILDER_ASSETS is unset or incomplete and $unpack does not exist; $how"
  exit 1
fi
log "no envtest binaries (KUBEBUILDER_ASSETS unset, no $unpack): the real-API-server tests will skip; $how"

#!/usr/bin/env bash
# Registry test: the images and the chart pushed to a real OCI registry on loopback (Debian's
# docker-registry, the CNCF Distribution registry; installed with apt when missing) with
# `scripts/images.sh --push REGISTRY --chart`, then
#   - the chart installed from oci://127.0.0.1:<port>/paysys on the real API server, every
#     image reference of the operator and of a reconciled PaymentSystem's children pointing
#     at that registry (operator/tests/real_apiserver/registry.rs),
#   - an image pulled back from the registry with podman and run,
#   - bad input: a push to a registry that is down, and to one that refuses writes (read-only),
#     each stops with one line naming the registry, a non-zero exit and no local tag for it.
# Builds the images from the debug binaries (as scripts/test-containers.sh does). Needs podman
# + runc and the envtest binaries (KUBEBUILDER_ASSETS); a skip is a failure under CI=true.
# About 2 minutes on a 2-core machine once the binaries are built (most of it the vfs copies
# of the four images).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/containers-env.sh

podman_or_skip "the registry test"
use_private_podman
if ! command -v docker-registry >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing docker-registry (apt)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
  elif [[ "${CI:-}" == true ]]; then
    echo "error: the registry test needs docker-registry (apt-get install -y docker-registry)" >&2
    exit 1
  else
    echo "skipping the registry test: docker-registry missing (apt-get install -y docker-registry)" >&2
    exit 0
  fi
fi
if ! KUBEBUILDER_ASSETS="$(scripts/ensure-envtest.sh)" || [[ -z "$KUBEBUILDER_ASSETS" ]]; then
  [[ "${CI:-}" == true ]] && exit 1 # ensure-envtest.sh said why
  echo "skipping the registry test: no envtest binaries (see above)" >&2
  exit 0
fi
export KUBEBUILDER_ASSETS
HELM="$(scripts/ensure-helm.sh)"
export HELM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d)
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
TAG="$VERSION-registry-$$"
SERVICES=(payments-api risk-engine paysys-operator paysys-feed)
registries=()
cleanup() {
  local status=$?
  for pid in "${registries[@]}"; do kill "$pid" 2>/dev/null || true; done
  for service in "${SERVICES[@]}"; do
    podman rmi "ghcr.io/paysys/$service:$TAG" >/dev/null 2>&1 || true
  done
  podman images --format '{{.Repository}}:{{.Tag}}' | grep -F ":$TAG" | xargs -r podman rmi >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
fail() { echo "error: registry test: $*" >&2; exit 1; }

# Starts a registry on a free loopback port (extra config lines in $2); sets STARTED to its
# host:port (not printed: in a $(...) subshell the cleanup would not learn its pid).
start_registry() { # name [extra-yaml]
  local port dir="$WORK/$1"
  port=$(free_port)
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<YAML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $dir/data}
${2:-}
http:
  addr: 127.0.0.1:$port
YAML
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  registries+=($!)
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && { STARTED="127.0.0.1:$port"; return 0; }
    sleep 0.1
  done
  cat "$dir/log" >&2
  fail "docker-registry did not start on 127.0.0.1:$port"
}

started=$SECONDS
cargo build --quiet --locked -p payments-api -p risk-engine -p paysys-operator -p paysys-feed
start_registry main
REGISTRY="$STARTED/paysys"
echo "== pushing the images and the chart to $REGISTRY (tag $TAG)"
scripts/images.sh --prebuilt debug --tag "$TAG" --push "$REGISTRY" --chart | tee "$WORK/pushed"
for service in "${SERVICES[@]}"; do
  grep -q "^$REGISTRY/$service:$TAG@sha256:[0-9a-f]\{64\}$" "$WORK/pushed" \
    || fail "no digest printed for $service"
done
grep -qx "oci://$REGISTRY/paysys:$TAG" "$WORK/pushed" || fail "the chart was not reported pushed"
# What the registry holds, asked of the registry itself.
tags=$(curl -sf "http://${REGISTRY%%/*}/v2/paysys/payments-api/tags/list")
[[ "$tags" == *"\"$TAG\""* ]] || fail "the registry does not list payments-api:$TAG ($tags)"
podman images --format '{{.Repository}}' | grep -qF "${REGISTRY%%/*}" \
  && fail "images.sh left local tags for $REGISTRY"

echo "== the chart from oci://$REGISTRY/paysys on the real API server"
PAYSYS_TEST_REGISTRY="$REGISTRY" PAYSYS_TEST_REGISTRY_TAG="$TAG" \
  cargo test --quiet --locked -p paysys-operator --test real_apiserver \
  registry::the_chart_from_an_oci_registry_points_every_pod_at_that_registry -- --exact

echo "== an image pulled back from the registry and run"
podman rmi "ghcr.io/paysys/risk-engine:$TAG" >/dev/null
podman pull --quiet --tls-verify=false "$REGISTRY/risk-engine:$TAG" >/dev/null
# Without configuration the service starts, says what is missing and exits 1: the binary ran.
out=$(podman run --rm "$REGISTRY/risk-engine:$TAG" 2>&1) && fail "risk-engine ran without AMQP_URL"
[[ "$out" == *"AMQP_URL: must be set"* ]] || fail "the pulled risk-engine did not run: $out"
podman rmi "$REGISTRY/risk-engine:$TAG" >/dev/null

echo "== bad input: a registry that is down, and one that refuses writes"
# The one line naming the registry, a non-zero exit, and no image named after it.
expect_refused() { # registry what
  local status=0 err
  scripts/images.sh --prebuilt debug --tag "$TAG" --push "$1" payments-api \
    >/dev/null 2>"$WORK/err" || status=$?
  # Besides the error, only the size table of the image built before the push may show.
  err=$(grep -v '^image \|^payments-api \|^base images' "$WORK/err" || true)
  [[ $status != 0 ]] || fail "a push to $2 succeeded"
  [[ $(wc -l <<<"$err") == 1 && "$err" == error:*"${1%%/*}"* ]] \
    || fail "a push to $2 did not fail with one line naming it: $err"
  podman images --format '{{.Repository}}' | grep -qF "${1%%/*}" \
    && fail "a failed push to $2 left a local tag"
  echo "$2: $err"
}
expect_refused "127.0.0.1:$(free_port)/paysys" "a registry that is down"
start_registry readonly '  maintenance: {readonly: {enabled: true}}'
READONLY="$STARTED"
expect_refused "$READONLY/paysys" "a read-only registry"
echo "registry test passed in $((SECONDS - started)) s"

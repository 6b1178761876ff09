#!/usr/bin/env bash
# Plays the operator's pods with `podman kube play` and takes the original demo's POST through
# them. Called by the real-API-server test `kube_play` (operator/tests/real_apiserver), which
# reconciles a PaymentSystem and exports, into DIR:
#   pods.yaml          the API and risk-engine Pods (their Deployments' pod templates, made
#                      playable; see that test for each change and why)
#   configmaps/*.yaml  the ConfigMaps they mount, Secret volumes included (for --configmap;
#                      podman makes a volume of each, named as the ConfigMap)
#   secrets/*.json     Secrets read by secretKeyRef: podman 4.3 wants a JSON map of base64
#                      values (a Secret's `data`) in a podman secret of that name
# and sets KUBE_PLAY_TAG (image tag to build), KUBE_PLAY_API_PORT, KUBE_PLAY_RISK_PORT,
# KUBE_PLAY_KEY (the operator-generated API key), KUBE_PLAY_API_POD, KUBE_PLAY_RISK_POD (pod
# names) and KUBE_PLAY_VHOST (a RabbitMQ virtual host of the test's own, created here and
# deleted after).
#
# The service binaries must be built (cargo build --workspace; scripts/test.sh does). Skips
# with one line without podman, except under CI=true.
set -euo pipefail
DIR=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
source scripts/containers-env.sh
source scripts/containers/demo.sh
source scripts/containers/checks.sh

podman_or_skip "the kube play test"
use_private_podman
: "${KUBE_PLAY_TAG:?}" "${KUBE_PLAY_API_PORT:?}" "${KUBE_PLAY_RISK_PORT:?}" "${KUBE_PLAY_KEY:?}" "${KUBE_PLAY_VHOST:?}"
: "${KUBE_PLAY_API_POD:?}" "${KUBE_PLAY_RISK_POD:?}"

secrets=()
cleanup() {
  local status=$?
  if [[ $status != 0 ]]; then
    for pod in "$KUBE_PLAY_API_POD" "$KUBE_PLAY_RISK_POD"; do
      echo "--- pod $pod" >&2
      for container in $(podman ps -aq --filter "pod=$pod"); do
        podman inspect --format '{{.Name}}: {{.State.Status}} {{.State.Error}}' "$container" >&2 || true
        podman logs --tail 20 "$container" >&2 2>/dev/null || true
      done
    done
  fi
  podman kube down "$DIR/pods.yaml" >/dev/null 2>&1 || true
  # A play that failed half-way leaves pods kube down does not know.
  podman pod rm -f "$KUBE_PLAY_API_POD" "$KUBE_PLAY_RISK_POD" >/dev/null 2>&1 || true
  for file in "$DIR"/configmaps/*.yaml; do
    podman volume rm -f "$(basename "$file" .yaml)" >/dev/null 2>&1 || true
  done
  for secret in "${secrets[@]}"; do podman secret rm "$secret" >/dev/null 2>&1 || true; done
  podman rmi "ghcr.io/paysys/payments-api:$KUBE_PLAY_TAG" "ghcr.io/paysys/risk-engine:$KUBE_PLAY_TAG" >/dev/null 2>&1 || true
  timeout 30 rabbitmqctl delete_vhost "$KUBE_PLAY_VHOST" >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT

scripts/images.sh --prebuilt debug --tag "$KUBE_PLAY_TAG" payments-api risk-engine
podman image prune -f >/dev/null

# The broker side of "external": a virtual host of this test's own on the local RabbitMQ.
timeout 30 rabbitmqctl add_vhost "$KUBE_PLAY_VHOST" >/dev/null
timeout 30 rabbitmqctl set_permissions -p "$KUBE_PLAY_VHOST" guest '.*' '.*' '.*' >/dev/null

for file in "$DIR"/secrets/*.json; do
  [[ -e "$file" ]] || continue
  name=$(basename "$file" .json)
  podman secret rm "$name" >/dev/null 2>&1 || true
  podman secret create "$name" "$file" >/dev/null
  secrets+=("$name")
done

# Without systemd podman cannot schedule the probes as healthchecks; it says so, twice per
# container, and plays on.
config_maps=()
for file in "$DIR"/configmaps/*.yaml; do config_maps+=(--configmap "$file"); done
if ! output=$(podman kube play "${config_maps[@]}" "$DIR/pods.yaml" 2>&1); then
  fail "podman kube play: $output"
fi
grep -v 'unable to get systemd connection' <<<"$output" | grep -iE 'error|warn' >&2 || true
await_ok "http://127.0.0.1:$KUBE_PLAY_RISK_PORT/readyz" 60 "risk engine pod" || fail "risk engine pod not ready"
await_ok "http://127.0.0.1:$KUBE_PLAY_API_PORT/readyz" 60 "API pod" || fail "API pod not ready"
echo "ok: the API and risk engine pods answer /readyz"
# The pods' security contexts (runAsNonRoot, readOnlyRootFilesystem, drop ALL, no privilege
# escalation), as the kernel applied them.
for pod in "$KUBE_PLAY_API_POD" "$KUBE_PLAY_RISK_POD"; do
  check_process "$(podman ps --format '{{.Names}}' --filter "pod=$pod" | grep -v -- '-infra$' | head -1)"
done

id=$(demo_post "http://127.0.0.1:$KUBE_PLAY_API_PORT" "$KUBE_PLAY_KEY") || fail "POST with the operator's key"
outcome=$(demo_await_decision "http://127.0.0.1:$KUBE_PLAY_API_PORT" "$KUBE_PLAY_KEY" "$id") || fail "decision"
logs=$(for c in $(podman ps -q --filter "pod=$KUBE_PLAY_RISK_POD"); do podman logs "$c" 2>&1; done)
grep -q "$id" <<<"$logs" || fail "the risk engine pod's log does not name payment $id"
echo "ok: payment $id: 201 with the operator-generated key, then $outcome in the risk engine pod"

#!/usr/bin/env bash
# Container tests: builds the service images from the debug binaries that scripts/test.sh
# built (stripped, on a runtime base assembled from Debian packages when no registry is
# reachable), then runs each image the way the chart runs it (non-root, read-only root
# filesystem, every capability dropped, no privilege escalation) against the local PostgreSQL
# and RabbitMQ, checks the probes and the `healthcheck` subcommand, and takes the original
# demo's POST through the API and risk engine containers to a decision.
#
# Needs podman + runc (installed with apt when missing and root). Without them it skips with
# one line, except under CI=true, where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source scripts/containers-env.sh
source scripts/containers/demo.sh
source scripts/containers/checks.sh

podman_or_skip "container tests"
use_private_podman
ensure_postgres
ensure_rabbitmq

RUN="containers-$$"
DB="paysys_test_$RUN"
DB="${DB//-/_}"
PREFIX="paysys-test_$RUN"
KEY="container-key-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# A tag of this run's own: another run on the same machine cannot swap the images under it.
TAG="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-test-$$"
SERVICES=(payments-api risk-engine paysys-operator paysys-feed)
containers=()
cleanup() {
  local status=$?
  if [[ $status != 0 ]]; then
    for c in "${containers[@]}"; do echo "--- logs of $c" >&2; podman logs --tail 30 "$c" >&2 || true; done
  fi
  for c in "${containers[@]}"; do podman rm -f -t 2 "$c" >/dev/null 2>&1 || true; done
  for service in "${SERVICES[@]}"; do podman rmi "ghcr.io/paysys/$service:$TAG" >/dev/null 2>&1 || true; done
  psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT

echo "== images (stripped debug binaries; see docs/development.md for why not release)"
# The same build as scripts/test.sh's (a no-op after it): building a subset of the packages
# would unify features differently and recompile.
cargo build --quiet --locked --workspace --all-targets
scripts/images.sh --prebuilt debug --tag "$TAG"
# Builds leave their intermediate stage behind; vfs stores each as a full copy.
podman image prune -f >/dev/null


# The image runs no shell and its configuration names a non-root numeric user.
check_image() { # image
  local user files
  user=$(podman image inspect --format '{{.Config.User}}' "$1")
  [[ "$user" == 65532:65532 ]] || fail "$1 runs as '$user', not 65532:65532"
  local container
  container=$(podman create "$1")
  files=$(podman export "$container" | tar -t)
  podman rm -f "$container" >/dev/null
  if grep -Eq '(^|/)(s?bin/)?(sh|bash|dash|ash|busybox)$' <<<"$files"; then
    fail "$1 contains a shell: $(grep -E '(^|/)(sh|bash|dash|ash|busybox)$' <<<"$files" | head -3)"
  fi
  echo "ok: $1 has no shell and runs as 65532"
}

# Runs IMAGE as the chart does (name, then env KEY=VALUE...); host networking on these machines.
run_hardened() { # name image env...
  local name="$RUN-$1" image=$2 args=()
  shift 2
  local kv
  for kv in "$@"; do args+=(-e "$kv"); done
  podman run -d --name "$name" --read-only --cap-drop ALL --security-opt no-new-privileges \
    --user 65532:65532 "${args[@]}" "$image" >/dev/null
  containers+=("$name")
}


# /healthz and /readyz answer 200 and the binary's healthcheck subcommand agrees.
check_probes() { # name port binary
  await_ok "http://127.0.0.1:$2/readyz" 60 "$1" || fail "$1 never became ready"
  curl -sf -o /dev/null "http://127.0.0.1:$2/healthz" || fail "$1: /healthz"
  podman exec "$1" "/usr/local/bin/$3" healthcheck || fail "$1: $3 healthcheck"
  echo "ok: $1 answers /healthz, /readyz and '$3 healthcheck'"
}

for service in "${SERVICES[@]}"; do check_image "ghcr.io/paysys/$service:$TAG"; done

psql "$DATABASE_URL" -qc "CREATE DATABASE $DB"
API_PORT=$(free_port)
RISK_PORT=$(free_port)
run_hardened risk-engine "ghcr.io/paysys/risk-engine:$TAG" \
  "AMQP_URL=$AMQP_URL" "AMQP_PREFIX=$PREFIX" "PORT=$RISK_PORT"
run_hardened payments-api "ghcr.io/paysys/payments-api:$TAG" \
  "DATABASE_URL=${DATABASE_URL%/*}/$DB" "AMQP_URL=$AMQP_URL" "AMQP_PREFIX=$PREFIX" \
  "API_KEYS=demo=$KEY" "PORT=$API_PORT"
check_probes "$RUN-risk-engine" "$RISK_PORT" risk-engine
check_probes "$RUN-payments-api" "$API_PORT" payments-api
check_process "$RUN-risk-engine"
check_process "$RUN-payments-api"

# The operator: probes and hardening. Its kubeconfig names an API server that is not there
# (reconciling on a real one is the kube-play test's part): it must still start and answer.
OPERATOR_PORT=$(free_port)
KUBECONFIG_DIR=$(mktemp -d)
cat >"$KUBECONFIG_DIR/config" <<KUBE
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
KUBE
chmod 644 "$KUBECONFIG_DIR/config"
podman run -d --name "$RUN-operator" --read-only --cap-drop ALL --security-opt no-new-privileges \
  --user 65532:65532 -v "$KUBECONFIG_DIR/config:/kube/config:ro" -e KUBECONFIG=/kube/config \
  -e LEADER_ELECTION=false -e "HTTP_PORT=$OPERATOR_PORT" "ghcr.io/paysys/paysys-operator:$TAG" >/dev/null
containers+=("$RUN-operator")
await_ok "http://127.0.0.1:$OPERATOR_PORT/readyz" 60 operator || fail "operator never became ready"
curl -sf -o /dev/null "http://127.0.0.1:$OPERATOR_PORT/healthz" || fail "operator /healthz"
echo "ok: $RUN-operator answers /healthz and /readyz"
check_process "$RUN-operator"
rm -rf "$KUBECONFIG_DIR"

echo "== the original demo's POST through the containers"
id=$(demo_post "http://127.0.0.1:$API_PORT" "$KEY") || fail "POST"
outcome=$(demo_await_decision "http://127.0.0.1:$API_PORT" "$KEY" "$id") || fail "decision"
podman logs "$RUN-risk-engine" 2>&1 | grep -q "Payment $id $outcome" ||
  fail "the risk engine's log does not show 'Payment $id $outcome'"
echo "ok: payment $id: 201, then $outcome by the risk engine container"

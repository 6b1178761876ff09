#!/usr/bin/env bash
# Compose test: docker-compose.yml brought up with podman-compose (PyPI) and the override
# scripts/containers/compose.standins.yml (PostgreSQL and RabbitMQ from local stand-in images
# built from Debian packages; host networking), until every service's healthcheck passes,
# including the services' own `healthcheck` subcommand. Then the README's verify steps: the
# POST answers 201, the decision shows in the risk engine's log, and GET returns it.
#
# Builds the two service images from the debug binaries (as scripts/test-containers.sh does).
# Needs podman + runc like that test: a skip is a failure under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/containers-env.sh
source scripts/containers/demo.sh
source scripts/containers/checks.sh

podman_or_skip "the compose test"
use_private_podman
# podman-compose from the project venv (scripts/python-tools.txt), never a global pip.
TOOLS="$(scripts/ensure-tools.sh)"
PATH="$TOOLS:$PATH"
ENGINE=podman
source scripts/containers/bases.sh
postgres_standin >/dev/null
rabbitmq_standin >/dev/null
# Images of this run's own tag (docker-compose.yml names them by PAYSYS_VERSION).
TAG="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-compose-$$"
cargo build --quiet --locked --workspace --all-targets
scripts/images.sh --prebuilt debug --tag "$TAG" payments-api risk-engine
podman image prune -f >/dev/null

# docker-compose.yml's own variables, so each server gets a free port on the shared network.
secret() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
PROJECT="paysys-test-compose-$$"
KEY="compose-key-$(secret)"
POSTGRES_PASSWORD="pg-$(secret)"
RABBITMQ_PASSWORD="mq-$(secret)"
export POSTGRES_USER=paysys POSTGRES_DB=paysys POSTGRES_PASSWORD RABBITMQ_USER=paysys RABBITMQ_PASSWORD
STANDIN_POSTGRES_PORT=$(free_port)
STANDIN_RABBITMQ_PORT=$(free_port)
STANDIN_RABBITMQ_DIST_PORT=$(free_port)
STANDIN_RISK_PORT=$(free_port)
API_PORT=$(free_port)
STANDIN_RABBITMQ_NODENAME="$PROJECT@localhost"
export STANDIN_POSTGRES_PORT STANDIN_RABBITMQ_PORT STANDIN_RABBITMQ_DIST_PORT STANDIN_RISK_PORT \
  API_PORT STANDIN_RABBITMQ_NODENAME
export DATABASE_URL="postgres://paysys:$POSTGRES_PASSWORD@127.0.0.1:$STANDIN_POSTGRES_PORT/paysys"
export AMQP_URL="amqp://paysys:$RABBITMQ_PASSWORD@127.0.0.1:$STANDIN_RABBITMQ_PORT/%2f"
export API_KEYS="demo=$KEY" PAYSYS_VERSION="$TAG"
compose=(podman-compose --project-name "$PROJECT" -f docker-compose.yml -f scripts/containers/compose.standins.yml)

LOG=$(mktemp)
cleanup() {
  local status=$?
  if [[ $status != 0 ]]; then
    echo "--- podman-compose up" >&2; tail -40 "$LOG" >&2
    for service in postgres rabbitmq risk-engine payments-api; do
      echo "--- logs of $service" >&2
      "${compose[@]}" logs --tail 20 "$service" >&2 2>/dev/null || true
    done
  fi
  "${compose[@]}" down -v -t 5 >/dev/null 2>&1 || true
  podman rmi "ghcr.io/paysys/payments-api:$TAG" "ghcr.io/paysys/risk-engine:$TAG" >/dev/null 2>&1 || true
  [[ -n "${UP:-}" ]] && wait "$UP" 2>/dev/null
  rm -f "$LOG"
  exit "$status"
}
trap cleanup EXIT

echo "== podman-compose up (project $PROJECT)"
"${compose[@]}" up -d --no-build >"$LOG" 2>&1 &
UP=$!

# Without systemd, podman schedules no healthcheck timers: run each service's healthcheck
# until all four pass (podman-compose waits on them for the depends_on conditions).
healthy=()
for ((i = 0; i < 90 && ${#healthy[@]} < 4; i++)); do
  healthy=()
  for service in postgres rabbitmq risk-engine payments-api; do
    container=$(podman ps -q --filter "label=io.podman.compose.project=$PROJECT" \
      --filter "label=com.docker.compose.service=$service" | head -1)
    [[ -n "$container" ]] && podman healthcheck run "$container" >/dev/null 2>&1 && healthy+=("$service")
  done
  ((${#healthy[@]} == 4)) || sleep 2
done
((${#healthy[@]} == 4)) || fail "healthy after 3 minutes: ${healthy[*]:-none}"
echo "ok: postgres, rabbitmq, risk-engine and payments-api pass their healthchecks"
wait "$UP" || fail "podman-compose up failed"
UP=""

echo "== the README's verify steps"
id=$(demo_post "http://127.0.0.1:$API_PORT" "$KEY") || fail "POST"
outcome=$(demo_await_decision "http://127.0.0.1:$API_PORT" "$KEY" "$id") || fail "GET"
"${compose[@]}" logs risk-engine 2>&1 | grep -q "Payment $id $outcome" ||
  fail "the risk engine's log does not show 'Payment $id $outcome'"
echo "ok: payment $id: 201, 'Payment $id $outcome' in the risk engine's log, GET shows $outcome"

#!/usr/bin/env bash
# The one command that runs every test: builds the workspace and runs all tests against a
# real PostgreSQL and RabbitMQ (found via DATABASE_URL / AMQP_URL or 127.0.0.1, started
# locally when absent and installed). Usage: scripts/test.sh [extra cargo test args]
set -Eeuo pipefail
cd "$(dirname "$0")/.."
# No step fails silently: name the command that stopped the run (-E: also inside functions).
trap 'echo "error: scripts/test.sh stopped at line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR
source scripts/services.sh
# Leave the machine as the run found it, passed or failed: the test databases, queues and
# virtual hosts of this run are dropped at exit (those of an interrupted earlier run are
# dropped below, before the tests). Names are the tests' own (`paysys_test_*`, `paysys-test_*`).
trap clean_test_leftovers EXIT

ensure_postgres
ensure_rabbitmq
check_rabbitmq_alarms
check_rabbitmq_vhosts
clean_test_leftovers
check_rabbitmq_file_handles

# A build and test run writes about 8 GB (target/); RabbitMQ blocks publishers when its disk
# runs short, which would stall the tests that publish.
free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
if [[ "$free_gb" -lt 8 ]]; then
  echo "warning: only ${free_gb} GB free on $(pwd); a run needs about 8 GB" >&2
fi

# The GitHub workflows (.github/workflows) pass actionlint.
scripts/check-workflows.sh

# Chart checks need helm; fetch it into .cache when it is not on PATH.
if [[ -x scripts/ensure-helm.sh ]]; then
  HELM="$(scripts/ensure-helm.sh)"
  export HELM
fi

# The chart's alerts are checked with promtool, and scraped by a real Prometheus.
scripts/ensure-prometheus.sh

# A real Kubernetes control plane for the operator's tests (envtest convention).
if KUBEBUILDER_ASSETS="$(scripts/ensure-envtest.sh)" && [[ -n "$KUBEBUILDER_ASSETS" ]]; then
  export KUBEBUILDER_ASSETS
  echo "envtest: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
elif [[ "${CI:-}" == true ]]; then
  exit 1 # ensure-envtest.sh said why
else
  unset KUBEBUILDER_ASSETS
fi

# The data feed's interop and Spark tests need Python with pinned pyspark/pyarrow/cryptography
# (and Java). Outside CI a failure here only makes those tests skip with a line saying why.
if PAYSYS_PYTHON="$(scripts/ensure-python.sh)"; then
  export PAYSYS_PYTHON
elif [[ "${CI:-}" == "true" ]]; then
  echo "test.sh: scripts/ensure-python.sh failed (see above)" >&2
  exit 1
fi

# The risk model's training package: its own pinned venv (scripts/ensure-model-python.sh).
MODEL_PYTHON="$(scripts/ensure-model-python.sh)"

# sqlx-cli checks that the committed offline data of the compile-checked queries is current.
scripts/ensure-sqlx-cli.sh >/dev/null

# PAYSYS_SETUP_ONLY=1 stops here, after every set-up step (scripts/check-fresh-debian.sh).
if [[ "${PAYSYS_SETUP_ONLY:-}" == 1 ]]; then
  echo "test.sh: set-up done (PAYSYS_SETUP_ONLY=1)"
  exit 0
fi

cargo build --locked --workspace --all-targets

# The API fuzzed from its own OpenAPI document (schemathesis, bounded), and the queries'
# offline data (services/payments-api/.sqlx) checked against a freshly migrated database.
# Skipped when extra arguments select a subset of the tests.
if [[ $# -eq 0 ]]; then
  scripts/sqlx-prepare.sh --check
  scripts/fuzz-api.sh "${FUZZ_EXAMPLES:-25}"
fi

# Each test bounds its own waits; this is the last guard, so that a test that still hangs
# fails the run with the servers' state instead of running until CI kills it. cargo prints
# "has been running for over 60 seconds" for the tests that were stuck.
test_timeout="${PAYSYS_TEST_TIMEOUT:-20m}"
status=0
# --no-fail-fast: one run reports every failing test binary, not only the first.
timeout --kill-after=30s "$test_timeout" cargo test --locked --workspace --no-fail-fast "$@" || status=$?
if [[ $status -eq 124 || $status -eq 137 ]]; then
  echo "error: cargo test did not finish within $test_timeout (PAYSYS_TEST_TIMEOUT)" >&2
  report_service_state
  exit 1
elif [[ $status -ne 0 ]]; then
  # Failures that come from the machine (a broker that went down, a full disk) show here.
  report_service_state
  exit "$status"
fi

# The training package (pytest; its Spark tests run Spark in local mode). Skipped with the
# containers when extra arguments select a subset of the tests.
if [[ $# -eq 0 ]]; then
  "$MODEL_PYTHON" -m pytest services/paysys-model/tests -q -p no:cacheprovider
fi

# The images built from these binaries, run as the chart runs them, and the Compose stack
# (podman; see the two scripts). Skipped when extra arguments select a subset of the tests.
if [[ $# -eq 0 ]]; then
  scripts/test-containers.sh
  scripts/test-compose.sh
  # Images and chart through a real OCI registry on loopback, installed on the real API
  # server (about 2 minutes).
  scripts/test-registry.sh
fi

#!/usr/bin/env bash
# Runs the benchmarks together and writes a markdown report (default docs/benchmarks.md).
# Every figure comes with a yardstick measured in the same run on the same machine, and the
# report prints the ratios, so it means the same on a slower or busier machine:
# - created payments/s at 16/64/256 clients against pgbench's ceiling for the same
#   payment + outbox insert transaction at the same client counts;
# - one payer paying over and over (the README's body) next to distinct payers;
# - end to end (open loop, real processes) at half the measured capacity (201 -> decision
#   latency) and at the full measured capacity for BENCH_SUSTAINED_SECONDS (does the
#   undecided backlog grow?), then at twice the capacity.
# Usage: scripts/bench-report.sh [report path]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres
ensure_rabbitmq
# On a machine shared with other test runs, BENCH_KEEP_LEFTOVERS=1 leaves their databases be.
[[ -n "${BENCH_KEEP_LEFTOVERS:-}" ]] || clean_test_leftovers

REPORT="${1:-docs/benchmarks.md}"
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
SUSTAINED_SECONDS="${BENCH_SUSTAINED_SECONDS:-60}"
WORK=$(mktemp -d)
PGBENCH_DB="paysys_bench_pgbench_$$"
cleanup() {
  psql "$DATABASE_URL" -qAtc "DROP DATABASE IF EXISTS $PGBENCH_DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PGBENCH=$(command -v pgbench || pg_bin pgbench || true)
if [[ -z "$PGBENCH" ]]; then
  echo "error: pgbench not found; it measures the ceiling every ratio is taken against." >&2
  echo "  Install it: apt-get install -y postgresql-contrib (Debian: it comes with postgresql-client)" >&2
  exit 1
fi

echo "building release binaries" >&2
cargo build --quiet --release -p payments-api -p risk-engine -p paysys-system-tests
cargo bench --quiet --no-run -p payments-api --bench create_payments >/dev/null 2>&1
cargo bench --quiet --no-run -p risk-engine --bench throughput >/dev/null 2>&1

value() { grep -m1 "^$2" "$1" | awk '{print $(NF-1)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { # ratio op target
  awk -v r="$1" -v t="$3" -v op="$2" 'BEGIN {
    ok = (op == ">=") ? (r >= t) : (r <= t); print (ok ? "met" : "**not met**") }'
}
create() { # name clients payers
  echo "create benchmark: $2 clients, $3 payers" >&2
  BENCH_CLIENTS=$2 BENCH_USERS=$3 BENCH_SECONDS=$SECONDS_PER_RUN \
    cargo bench --quiet -p payments-api --bench create_payments >"$WORK/create-$1.txt" 2>&1
}

# 1. The yardstick: PostgreSQL alone, same schema, same transaction, same client counts.
psql "$DATABASE_URL" -qAtc "CREATE DATABASE $PGBENCH_DB" >/dev/null
PGBENCH_URL=$(sed -E "s#/[^/?]*(\?|$)#/$PGBENCH_DB\1#" <<<"$DATABASE_URL")
for migration in services/payments-api/migrations/*.sql; do
  psql "$PGBENCH_URL" -qX -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done
# The server's connection limit caps the clients (half of it, leaving room for the rest).
MAX_PG_CLIENTS=$(( $(psql "$DATABASE_URL" -Atc 'show max_connections') / 2 ))
pgbench_clients() { echo $(( $1 < MAX_PG_CLIENTS ? $1 : MAX_PG_CLIENTS )); }
for clients in 16 64 256; do
  echo "pgbench: $(pgbench_clients "$clients") clients" >&2
  "$PGBENCH" -n -M prepared -c "$(pgbench_clients "$clients")" -j 2 -T "$SECONDS_PER_RUN" \
    -f scripts/bench/pgbench-payment.sql "$PGBENCH_URL" >"$WORK/pgbench-$clients.txt" 2>&1 ||
    { echo "pgbench failed at $clients clients:" >&2; tail -3 "$WORK/pgbench-$clients.txt" >&2; }
done
pgbench_tps() { grep -m1 '^tps' "$WORK/pgbench-$1.txt" | awk '{printf "%.0f", $3}'; }

# 2. The API: distinct payers at each client count, one payer at 64.
for clients in 16 64 256; do create "$clients" "$clients" 10000; done
create hot 64 1

echo "risk engine throughput" >&2
cargo bench --quiet -p risk-engine --bench throughput >"$WORK/risk.txt" 2>&1

# 3. End to end at shares of the measured capacity (created/s, 64 clients, distinct payers).
CAPACITY=$(value "$WORK/create-64.txt" throughput | cut -d. -f1)
HALF=$((CAPACITY / 2))
echo "end to end at half the capacity: $HALF payments/s" >&2
BENCH_RATE=$HALF BENCH_SECONDS=$SECONDS_PER_RUN target/release/e2e-bench >"$WORK/e2e-half.txt" 2>&1
echo "end to end at the capacity for ${SUSTAINED_SECONDS}s: $CAPACITY payments/s" >&2
BENCH_RATE=$CAPACITY BENCH_SECONDS=$SUSTAINED_SECONDS target/release/e2e-bench >"$WORK/e2e-full.txt" 2>&1
OVERLOAD=$((CAPACITY * 2))
echo "overload: $OVERLOAD payments/s offered" >&2
BENCH_RATE=$OVERLOAD BENCH_SECONDS=$SECONDS_PER_RUN target/release/e2e-bench >"$WORK/overload.txt" 2>&1

created() { value "$WORK/create-$1.txt" throughput | cut -d. -f1; }
p99() { value "$WORK/create-$1.txt" 'latency p99'; }
HOT_RATIO=$(ratio "$(created hot)" "$(created 64)")
HOT_P99_RATIO=$(ratio "$(p99 hot)" "$(p99 64)")
CEILING_RATIO=$(ratio "$(created 64)" "$(pgbench_tps 64)")
HALF_P99=$(grep -m1 '^201 -> decided p99' "$WORK/e2e-half.txt" | awk '{print $(NF-1)}')
GROWTH=$(grep -m1 '^backlog growth' "$WORK/e2e-full.txt" | awk '{print $3}')
FULL_ACCEPTED=$(grep -m1 '^accepted' "$WORK/e2e-full.txt" | awk '{print $NF}')

{
  echo "# Benchmark report"
  echo
  echo "Written by \`scripts/bench-report.sh\` on $(date -u +%Y-%m-%d). Everything (load generator,"
  echo "services, PostgreSQL, RabbitMQ) runs on one machine, so absolute figures depend on it and"
  echo "on whatever else it runs; the ratios below are taken between runs of this same report."
  echo
  echo "- CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "- Memory: $(free -g | awk '/Mem:/ {print $2}') GiB, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- PostgreSQL: $(psql "$DATABASE_URL" -Atc 'show server_version' 2>/dev/null || echo unknown)" \
       "(fsync $(psql "$DATABASE_URL" -Atc 'show fsync' 2>/dev/null), synchronous_commit $(psql "$DATABASE_URL" -Atc 'show synchronous_commit' 2>/dev/null))," \
       "RabbitMQ: $(rabbitmqctl version 2>/dev/null || echo unknown), rustc $(rustc --version | cut -d' ' -f2)"
  echo
  echo "## Ratios and targets"
  echo
  echo "| measure | this run | target | |"
  echo "|---|---|---|---|"
  echo "| one payer / distinct payers, created/s at 64 clients | $HOT_RATIO | ≥ 0.90 | $(verdict "$HOT_RATIO" '>=' 0.90) |"
  echo "| one payer / distinct payers, p99 at 64 clients | $HOT_P99_RATIO | ≤ 1.5 | $(verdict "$HOT_P99_RATIO" '<=' 1.5) |"
  echo "| created/s / pgbench ceiling, 64 clients | $CEILING_RATIO | ≥ 0.80 | $(verdict "$CEILING_RATIO" '>=' 0.80) |"
  echo "| 201 → decision p99 at half the capacity ($HALF/s) | $HALF_P99 ms | ≤ 20 ms | $(verdict "$HALF_P99" '<=' 20) |"
  echo "| undecided backlog growth at the capacity ($CAPACITY/s offered, ${SUSTAINED_SECONDS} s; last third / first third) | $GROWTH | flat (≤ 1.5) | $(verdict "$GROWTH" '<=' 1.5) |"
  echo
  echo "## Creating payments against PostgreSQL's ceiling"
  echo
  echo "\`cargo bench -p payments-api --bench create_payments\`: closed loop (each client sends its"
  echo "next request when the previous answer arrives), ${SECONDS_PER_RUN} s measured. The ceiling is"
  echo "\`pgbench\` with the same number of clients, each transaction inserting one payment and its"
  echo "outbox row into the same schema ([scripts/bench/pgbench-payment.sql](../scripts/bench/pgbench-payment.sql))."
  echo "The API does more per payment (the audit event, velocity, HTTP, JSON, authentication) and"
  echo "shares the two cores with the load generator."
  echo
  echo "| clients | payers | created/s | pgbench tps (clients) | ratio | p50 ms | p90 ms | p99 ms | max ms | non-201 | outbox drained after | every 201 durable |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for run in 16 64 256 hot; do
    f="$WORK/create-$run.txt"
    clients=${run/hot/64}
    payers=$([[ $run == hot ]] && echo "1 (the README's body)" || echo 10000)
    echo "| $clients | $payers | $(created "$run") | $(pgbench_tps "$clients") ($(pgbench_clients "$clients")) | $(ratio "$(created "$run")" "$(pgbench_tps "$clients")") |" \
         "$(value "$f" 'latency p50') | $(value "$f" 'latency p90') | $(value "$f" 'latency p99') | $(value "$f" 'latency max') |" \
         "$(grep -m1 '^non-201' "$f" | awk '{print $NF}') | $(grep -m1 '^outbox drained' "$f" | awk '{print $4" ms"}') |" \
         "$(grep -m1 '^durable' "$f" | awk '{print $2}') |"
  done
  echo
  if command -v wrk >/dev/null; then
    echo "The README's load test with \`wrk\` (installed here), against an API started as in"
    echo "[Running it locally](../README.md#running-it-locally):"
  else
    echo "The README's load test with \`wrk\` (\`apt-get install wrk\`), against an API started as in"
    echo "[Running it locally](../README.md#running-it-locally):"
  fi
  echo
  echo '```sh'
  echo 'API_KEY=demo-key-change-me-0123456789 wrk -t2 -c64 -d10s -s scripts/bench/wrk-payment.lua http://localhost:5000/payments'
  echo '```'
  echo
  echo "## Risk engine (\`cargo bench -p risk-engine --bench throughput\`)"
  echo
  echo '```'
  grep -v '^\s*$' "$WORK/risk.txt" | grep -iv 'warning\|compiling\|finished\|running' || true
  echo '```'
  echo
  echo "## End to end at half the measured capacity ($HALF payments/s, \`target/release/e2e-bench\`)"
  echo
  echo "Open loop (requests at a fixed rate, whatever the answers), 1 API and 1 risk engine as"
  echo "processes connected straight to PostgreSQL and RabbitMQ; latency from the payment's creation"
  echo "to the decision being visible through \`GET\`, measured after a 2 s warm-up at the same rate"
  echo "(as the closed-loop runs above). The rate is half of what 64 closed-loop clients achieved"
  echo "above, so it is the same share of this machine on any machine."
  echo
  echo '```'
  grep -v '^\s*$' "$WORK/e2e-half.txt"
  echo '```'
  echo
  echo "## End to end at the measured capacity for ${SUSTAINED_SECONDS} s ($CAPACITY payments/s offered)"
  echo
  echo "Does the decision path (relay → risk engine → decision consumer, one replica each) keep"
  echo "up with admission? The undecided backlog is sampled every second; it must not grow over"
  echo "the run. The open-loop generator and the risk engine share the two cores with"
  echo "the API, so the API admits less here than in the closed-loop runs ($FULL_ACCEPTED accepted);"
  echo "the excess is answered \`503\` + \`Retry-After\` at once."
  echo
  echo '```'
  grep -v '^\s*$' "$WORK/e2e-full.txt"
  echo '```'
  echo
  echo "## Twice the capacity ($OVERLOAD payments/s offered)"
  echo
  cat <<'TEXT'
Offered twice what the API sustains, it sheds the excess at once with `503` + `Retry-After`
(`MAX_IN_FLIGHT`, and `MAX_UNDECIDED` when decisions fall behind) instead of queueing it: no
request hangs, HTTP latency and memory stay bounded, and every accepted payment is still
decided.
TEXT
  echo
  echo '```'
  grep -v '^\s*$' "$WORK/overload.txt"
  echo '```'
} >"$REPORT"
echo "wrote $REPORT" >&2

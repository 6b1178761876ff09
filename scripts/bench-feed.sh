#!/usr/bin/env bash
# Data feed benchmark (issue 10): export rows/s beside a plain COPY ... TO STDOUT of the same
# rows, and the report on DataFusion beside the PySpark job in Spark local mode, on the same
# files, at 1 M and 4 M payments; peak RSS of export and report at both sizes.
# Usage: nice -n 10 scripts/bench-feed.sh [SIZES...]   (default: 1000000 4000000; REPEAT=3,
# FEED_BIN=path to skip the release build)
# Prints a Markdown table, then the ratios the targets are about, each against its target:
# export rows/s as a share of COPY's (>= 50 %), DataFusion's speed-up over PySpark (>= 5x),
# and the growth of each peak RSS from the first size to the others (<= 20 %).
# Needs PostgreSQL (found or started like the tests), Java 17 and the pinned Python
# (scripts/ensure-python.sh). Builds the release binary. Uses ~4 GB of disk at 4 M rows
# (table + Parquet + outputs) and deletes everything it made when done.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres >&2

SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(1000000 4000000)
# Payments spread over this many days: every day file is larger than one row group (128 Ki
# rows) at both sizes, so a flat peak RSS shows that memory does not follow the table size.
DAYS=5
# Runs of COPY and of the export per size (medians compared).
REPEAT=${REPEAT:-3}

PYTHON="$(scripts/ensure-python.sh)"
# FEED_BIN: a release binary built already (say which commit when recording its figures).
if [[ -n "${FEED_BIN:-}" ]]; then
  FEED="$(realpath "$FEED_BIN")"
else
  cargo build --release --locked -p paysys-feed --bin paysys-feed >&2
  FEED="$(pwd)/target/release/paysys-feed"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/paysys-bench-feed.XXXXXX")"
DB="paysys_bench_feed_$$"
ADMIN_URL="$DATABASE_URL"
DB_URL="${ADMIN_URL%/*}/$DB"
cleanup() {
  rm -rf "$WORK"
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql "$ADMIN_URL" -qc "CREATE DATABASE $DB"
for migration in services/payments-api/migrations/*.sql; do
  psql "$DB_URL" -q -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done
"$FEED" keygen >"$WORK/key"
printf 'currency,rate\nUSD,4.0\nEUR,3.7\nJPY,0.025\n' >"$WORK/rates.csv"

# Seconds with millisecond precision of running "$@"; peak RSS (KiB) of the command in
# $WORK/rss. Output of the command goes to $WORK/log.
measure() {
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$WORK/rss" "$@" >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; return 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l | xargs printf '%.2f'
}
mib() { echo "$(cat "$WORK/rss") / 1024" | bc -l | xargs printf '%.1f'; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
# "met" when the bc condition $1 holds.
verdict() { if [[ $(echo "$1" | bc -l) == 1 ]]; then echo met; else echo "NOT met"; fi; }

# Adds payments up to $1 rows: amounts in 5 currencies (GBP has no rate), decided ones with a
# decision document like the API stores, spread evenly over $DAYS days.
# VACUUM settles the table (hint bits, visibility map) before anything is timed: otherwise
# autovacuum and the first reader do that work during whichever run comes first.
fill() {
  psql "$DB_URL" -q -v ON_ERROR_STOP=1 <<SQL
INSERT INTO payments (id, principal, amount_minor, currency, user_id, payee_id, payment_method_id,
    status, velocity_window_seconds, velocity_count, velocity_total_minor, decision, created_at)
SELECT gen_random_uuid(), 'bench', 1 + (i * 7919) % 500000,
       (ARRAY['USD', 'EUR', 'ILS', 'GBP', 'JPY'])[1 + i % 5],
       gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),
       CASE WHEN i % 3 = 0 THEN 'pending' ELSE 'approved' END, 3600, 0, 0,
       CASE WHEN i % 3 = 0 THEN NULL ELSE jsonb_build_object('outcome', 'approved',
            'decided_at', timestamptz '2026-10-01' + i * interval '1 second') END,
       timestamptz '2026-10-01' + (i % $DAYS) * interval '1 day' + (i / $DAYS) * interval '10 ms'
FROM generate_series((SELECT count(*) FROM payments) + 1, $1) i;
VACUUM (ANALYZE) payments;
SQL
}

COLUMNS="id, amount_minor, currency, user_id, payee_id, status, decision->>'outcome',
  (decision->>'decided_at')::timestamptz, created_at"
LAST_DAY=$(date -d "2026-10-01 + $((DAYS - 1)) days" +%F)
results=()
ratios=()
export_rss=()
report_rss=()
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for rows in "${SIZES[@]}"; do
  echo "== $rows payments" >&2
  fill "$rows"
  # COPY and export alternate $REPEAT times (a neighbour's load hits both alike); the
  # medians are compared, and the export's peak RSS is the largest of its runs.
  copies=() exports=() export_mib=0
  for _ in $(seq "$REPEAT"); do
    copies+=("$(measure psql "$DB_URL" -qc "COPY (SELECT $COLUMNS FROM payments) TO STDOUT")")
    rm -rf "$WORK/feed"
    exports+=("$(measure "$FEED" export --database-url "$DB_URL" --out "$WORK/feed" \
      --key-file "$WORK/key" --from 2026-10-01 --to "$LAST_DAY")")
    export_mib=$(printf '%s\n' "$export_mib" "$(mib)" | sort -g | tail -1)
  done
  copy_s=$(median "${copies[@]}")
  export_s=$(median "${exports[@]}")
  echo "COPY s: ${copies[*]}; export s: ${exports[*]}" >&2
  parquet_mb=$(du -sm "$WORK/feed" | cut -f1)
  report_args=("$WORK/feed" --rates "$WORK/rates.csv" --to ILS --key-file "$WORK/key" --format parquet)
  rm -rf "$WORK/df" "$WORK/spark"
  df_s=$(measure "$FEED" report "${report_args[@]}" --out "$WORK/df")
  df_mib=$(mib)
  spark_s=$(measure env PYSPARK_PYTHON="$PYTHON" SPARK_LOCAL_IP=127.0.0.1 \
    "$PYTHON" services/paysys-feed/spark/report.py "${report_args[@]}" --out "$WORK/spark")
  # The two engines' converted totals must agree before their times mean anything.
  df_total=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["converted_total_minor"])' "$WORK/df/summary.json")
  spark_total=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["converted_total_minor"])' "$WORK/spark/summary.json")
  [[ "$df_total" == "$spark_total" ]] || { echo "DataFusion $df_total != Spark $spark_total" >&2; exit 1; }
  copy_share=$(echo "100 * $copy_s / $export_s" | bc -l)
  speedup=$(echo "$spark_s / $df_s" | bc -l)
  ratios+=("$(printf '%s rows: export at %.0f %% of COPY (target >= 50 %%: %s); DataFusion %.1fx faster than PySpark (target >= 5x: %s)' \
    "$rows" "$copy_share" "$(verdict "$copy_share >= 50")" "$speedup" "$(verdict "$speedup >= 5")")")
  export_rss+=("$export_mib")
  report_rss+=("$df_mib")
  results+=("$(printf '| %s | %s | %.0f | %s | %.0f | %.0f %% | %s | %s | %s | %s | %.1f× | %s |' \
    "$rows" "$copy_s" "$(echo "$rows / $copy_s" | bc -l)" "$export_s" \
    "$(echo "$rows / $export_s" | bc -l)" "$(echo "100 * $copy_s / $export_s" | bc -l)" \
    "$export_mib" "$parquet_mb" "$df_s" "$spark_s" "$(echo "$spark_s / $df_s" | bc -l)" "$df_mib")")
  rm -rf "$WORK/df" "$WORK/spark"
done

echo "data feed benchmark, $(date -u '+%F %H:%M UTC'): $(nproc) cores, PostgreSQL $(psql "$DB_URL" -Atc 'SHOW server_version'), $DAYS days, report with rates and key, $REPEAT runs of COPY and export, niceness $(nice)"
echo "load average (1, 5, 15 min) before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| payments | COPY s | COPY rows/s | export s | export rows/s | export vs COPY | export peak RSS MiB | Parquet MB | report DataFusion s | report PySpark s | DataFusion speed-up | report peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${results[@]}"
echo
printf '%s\n' "${ratios[@]}"
for i in "${!SIZES[@]}"; do
  [[ $i -gt 0 ]] || continue
  for what in export report; do
    if [[ $what == export ]]; then first=${export_rss[0]} this=${export_rss[$i]}; else first=${report_rss[0]} this=${report_rss[$i]}; fi
    growth=$(echo "100 * ($this - $first) / $first" | bc -l)
    printf '%s peak RSS, %s rows vs %s rows: %+.0f %% (target <= 20 %%: %s)\n' \
      "$what" "${SIZES[$i]}" "${SIZES[0]}" "$growth" "$(verdict "$growth <= 20")"
  done
done

#!/usr/bin/env bash
# Runs the whole paysys as local processes: no Docker, no Kubernetes.
#
#   scripts/run-local.sh [--debug] [--no-build] [--keep-servers]
#
# Finds or starts PostgreSQL and RabbitMQ exactly as the test command does (scripts/services.sh:
# DATABASE_URL / AMQP_URL when set, else 127.0.0.1, started locally when installed), creates
# the database `paysys`, builds and starts risk-engine (port RISK_PORT, 8080) and payments-api
# (port API_PORT, 5000), waits until the API is ready, prints its URL, an API key and a curl to
# paste, then follows both logs. Ctrl-C stops the two services and any server it started.
#
#   --debug         debug build instead of release (faster to build, slower to run)
#   --no-build      use the binaries already built
#   --keep-servers  leave PostgreSQL / RabbitMQ running on exit even if this script started them
#
# Every other setting is the services' own environment, inherited as is: API_KEYS (default: a
# fresh random key), RISK_MODE, RISK_RULES_FILE, LOG_FORMAT, RUST_LOG, ... (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
keep_servers=0
for arg in "$@"; do
  case "$arg" in
    --debug) profile=debug ;;
    --no-build) build=0 ;;
    --keep-servers) keep_servers=1 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

API_PORT="${API_PORT:-5000}"
RISK_PORT="${RISK_PORT:-8080}"
# Remember whether the caller chose a database: then it is used as given, never rewritten.
user_database_url="${DATABASE_URL:-}"

source scripts/services.sh

log() { echo "run-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

for port in "$API_PORT" "$RISK_PORT"; do
  listening 127.0.0.1 "$port" && die "port $port is already in use (set API_PORT / RISK_PORT, or stop what listens there)"
done

# --- servers: note which ones this script starts, so that exactly those are stopped on exit.
started_postgres=0
started_rabbitmq=0
listening "$(url_host "$DATABASE_URL")" "$(url_port "$DATABASE_URL" 5432)" || started_postgres=1
listening "$(url_host "$AMQP_URL")" "$(url_port "$AMQP_URL" 5672)" || started_rabbitmq=1

pids=()
stopping=0
cleanup() {
  local status=$?
  ((stopping)) && return
  stopping=1
  trap - INT TERM
  if ((${#pids[@]})); then
    log "stopping payments-api and risk-engine (SIGTERM, graceful)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local i
    for ((i = 0; i < 150; i++)); do
      kill -0 "${pids[@]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if ((!keep_servers)); then
    if ((started_rabbitmq)) && command -v rabbitmqctl >/dev/null 2>&1; then
      log "stopping the RabbitMQ this script started"
      timeout 60 rabbitmqctl stop >/dev/null 2>&1 || true
    fi
    if ((started_postgres)); then
      log "stopping the PostgreSQL this script started"
      local pg_ctl as=()
      [[ $(id -u) == 0 ]] && as=(runuser -u postgres --)
      if pg_ctl=$(pg_bin pg_ctl); then
        "${as[@]}" "$pg_ctl" -D "$PAYSYS_CACHE/postgres/data" -m fast -w stop >/dev/null 2>&1 || true
      fi
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_postgres
ensure_rabbitmq

# --- database: the default server gets its own database `paysys`, like a deployment.
if [[ -z "$user_database_url" ]]; then
  if psql=$(pg_bin psql); then
    if [[ -z $("$psql" "$DATABASE_URL" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'paysys'") ]]; then
      log "creating database paysys"
      "$psql" "$DATABASE_URL" -qc 'CREATE DATABASE paysys' >/dev/null
    fi
    DATABASE_URL="${DATABASE_URL%/*}/paysys"
  else
    log "psql not found: using the database of DATABASE_URL ($(url_host "$DATABASE_URL")) as is"
  fi
fi
export DATABASE_URL AMQP_URL

# --- build
if [[ "$profile" == release ]]; then cargo_profile=(--release); else cargo_profile=(); fi
if ((build)); then
  log "building payments-api and risk-engine ($profile)"
  cargo build --locked "${cargo_profile[@]}" -p payments-api -p risk-engine
fi
bin_dir="${CARGO_TARGET_DIR:-target}/$profile"
for bin in payments-api risk-engine; do
  [[ -x "$bin_dir/$bin" ]] || die "$bin_dir/$bin is missing (run without --no-build)"
done

# --- credentials: a fresh random key unless the caller configured authentication.
if [[ -z "${API_KEYS:-}" && -z "${API_KEYS_FILE:-}" && -z "${JWT_ALGORITHM:-}" ]]; then
  API_KEYS="local=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')"
  export API_KEYS
fi
# The first key of API_KEYS, to print a request that works.
demo_key=""
if [[ -n "${API_KEYS:-}" ]]; then
  first="${API_KEYS%%,*}"
  demo_key="${first#*=}"
fi

# --- start: each service's output goes to its log file and, prefixed, to this terminal.
log_dir="${PAYSYS_CACHE}/run-local"
mkdir -p "$log_dir"
start() { # name port
  local name=$1 port=$2
  : >"$log_dir/$name.log"
  PORT="$port" "$bin_dir/$name" > >(tee -a "$log_dir/$name.log" | sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}
start risk-engine "$RISK_PORT"
start payments-api "$API_PORT"

# GET a path on 127.0.0.1 and print the status code, with bash alone (curl may be absent).
http_status() { # port path
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
  IFS=' ' read -r -t 2 _ line _ <&3 || line=""
  exec 3<&- 3>&-
  echo "$line"
}

ready=0
for ((i = 0; i < 600; i++)); do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a service exited during start-up; see its log above (and $log_dir)"
  done
  if [[ $(http_status "$API_PORT" /readyz 2>/dev/null) == 200 ]]; then ready=1; break; fi
  sleep 0.1
done
((ready)) || die "payments-api was not ready on port $API_PORT within 60 s (GET /readyz); see $log_dir"

url="http://localhost:$API_PORT"
cat >&2 <<EOF

================================================================================
 paysys is running
   payments API  $url   (OpenAPI: $url/openapi.json, metrics: $url/metrics)
   risk engine   http://localhost:$RISK_PORT/metrics
   database      $(url_host "$DATABASE_URL"):$(url_port "$DATABASE_URL" 5432)/${DATABASE_URL##*/}
   logs          $log_dir/
EOF
if [[ -n "$demo_key" ]]; then
  cat >&2 <<EOF
   API key       $demo_key

 Create a payment (the original demo's request):

   curl -X POST $url/payments -H "Content-Type: application/json" \\
     -H "Authorization: $demo_key" \\
     -d '{"amount": 70.5, "currency": "USD", "userId": "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10", "payeeId": "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d", "paymentMethodId": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"}'
EOF
else
  echo "   authentication: as configured (API_KEYS_FILE / JWT)" >&2
fi
cat >&2 <<EOF

 Ctrl-C stops everything this script started.
================================================================================

EOF

# Follow the logs until Ctrl-C / SIGTERM or until a service exits. Ctrl-C reaches the services
# too (same process group): they stop gracefully and exit 0, and bash then resumes here rather
# than in its INT trap, so a clean exit of a service means "stopping"; anything else is a crash.
set +e
wait -n "${pids[@]}"
status=$?
set -e
((status == 0)) || die "a service exited with status $status; see its log above (and $log_dir)"
log "a service stopped; stopping the rest"

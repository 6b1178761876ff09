# shellcheck shell=bash
# Finds or starts the PostgreSQL and RabbitMQ the tests (and the local run) need.
# Sourced by scripts/test.sh and scripts/run-local.sh. Honours DATABASE_URL and AMQP_URL;
# defaults to the servers on 127.0.0.1. Starts local servers only when nothing listens and
# the server programs are installed; otherwise stops with what to install or start.

: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/postgres}"
: "${AMQP_URL:=amqp://guest:guest@127.0.0.1:5672/%2f}"
export DATABASE_URL AMQP_URL

PAYSYS_CACHE="${PAYSYS_CACHE:-$(pwd)/.cache}"

# host and port of a URL like scheme://user:pass@host:port/rest
url_host() { local r="${1#*://}"; r="${r##*@}"; r="${r%%/*}"; r="${r%%\?*}"; echo "${r%%:*}"; }
url_port() {
  local r="${1#*://}"; r="${r##*@}"; r="${r%%/*}"; r="${r%%\?*}"
  if [[ "$r" == *:* ]]; then echo "${r##*:}"; else echo "$2"; fi
}

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() { # host port seconds what
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    listening "$1" "$2" && return 0
    sleep 0.1
  done
  echo "error: $4 did not start listening on $1:$2 within $3 s" >&2
  return 1
}

pg_bin() { # finds a PostgreSQL server program
  command -v "$1" 2>/dev/null && return 0
  local candidate
  for candidate in /usr/lib/postgresql/*/bin/"$1"; do
    [[ -x "$candidate" ]] && { echo "$candidate"; return 0; }
  done
  return 1
}

ensure_postgres() {
  local host port
  host=$(url_host "$DATABASE_URL"); port=$(url_port "$DATABASE_URL" 5432)
  if listening "$host" "$port"; then
    echo "PostgreSQL: using $host:$port"
    return 0
  fi
  if [[ "$host" != 127.0.0.1 && "$host" != localhost ]]; then
    echo "error: PostgreSQL at $host:$port (DATABASE_URL) is not reachable; start it or fix DATABASE_URL" >&2
    return 1
  fi
  local initdb pg_ctl
  if ! initdb=$(pg_bin initdb) || ! pg_ctl=$(pg_bin pg_ctl); then
    cat >&2 <<MSG
error: nothing listens on $host:$port and PostgreSQL is not installed.
  Install it:  apt-get install -y postgresql     (Debian/Ubuntu)
  or start one and point DATABASE_URL at it, e.g. postgres://postgres@127.0.0.1:5432/postgres
MSG
    return 1
  fi
  local dir="$PAYSYS_CACHE/postgres"
  # PostgreSQL refuses to run as root: run it as the 'postgres' user when we are root. That
  # user cannot reach a clone under /root (mode 700), so its data then lives outside the
  # clone, in a folder named after it.
  local as=()
  if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    as=(runuser -u postgres --)
    mkdir -p "$dir"
    if ! "${as[@]}" test -x "$dir"; then
      dir="/var/tmp/paysys-postgres-$(printf '%s' "$PAYSYS_CACHE" | md5sum | cut -c1-12)"
    fi
  fi
  echo "PostgreSQL: starting a private server in $dir on port $port"
  mkdir -p "$dir"
  [[ ${#as[@]} -eq 0 ]] || chown -R postgres "$dir"
  if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    "${as[@]}" "$initdb" -A trust -U postgres -D "$dir/data" >"$dir/initdb.log" 2>&1
  fi
  "${as[@]}" "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "-p $port -k $dir -c listen_addresses=$host -c max_connections=200" -w start >/dev/null
  wait_for "$host" "$port" 30 PostgreSQL
}

ensure_rabbitmq() {
  local host port
  host=$(url_host "$AMQP_URL"); port=$(url_port "$AMQP_URL" 5672)
  if listening "$host" "$port"; then
    echo "RabbitMQ: using $host:$port"
    return 0
  fi
  if [[ "$host" != 127.0.0.1 && "$host" != localhost ]]; then
    echo "error: RabbitMQ at $host:$port (AMQP_URL) is not reachable; start it or fix AMQP_URL" >&2
    return 1
  fi
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    cat >&2 <<MSG
error: nothing listens on $host:$port and RabbitMQ is not installed.
  Install it:  apt-get install -y rabbitmq-server     (Debian/Ubuntu)
  or start one and point AMQP_URL at it, e.g. amqp://guest:guest@127.0.0.1:5672/%2f
MSG
    return 1
  fi
  echo "RabbitMQ: starting rabbitmq-server -detached"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_for "$host" "$port" 60 RabbitMQ
}

# Removes databases and queues that earlier test runs left behind (tests never share names,
# so this is housekeeping, not isolation). It matters: each quorum queue holds about three of
# RabbitMQ's file handles, and a few hundred left behind exhaust them (the limit follows
# `ulimit -n`, 1024 by default), after which the broker accepts no connection at all.
# Every command in a loop reads /dev/null: rabbitmqctl would swallow the rest of the list.
clean_test_leftovers() {
  if command -v psql >/dev/null 2>&1; then
    psql "$DATABASE_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'paysys\_test\_%'" 2>/dev/null |
      while read -r db; do psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" </dev/null >/dev/null 2>&1 || true; done
  fi
  if command -v rabbitmqctl >/dev/null 2>&1 && [[ $(url_host "$AMQP_URL") =~ ^(127.0.0.1|localhost)$ ]]; then
    delete_rabbitmq_topology "paysys-test_"
    # Virtual hosts of the tests that make their own (contract, kube play, clean start; each
    # holds message stores and their files). paysys-clean-start_ is the older name of the last.
    # rabbitmqctl fails where it cannot reach the node (another user's Erlang cookie, a
    # broker in another root): nothing to clean then, and no reason to stop the run.
    { timeout 60 rabbitmqctl list_vhosts -q name 2>/dev/null || true; } | { grep -E '^paysys-(test|clean-start)_' || true; } |
      while read -r v; do timeout 10 rabbitmqctl delete_vhost "$v" </dev/null >/dev/null 2>&1 || true; done
  fi
  return 0
}

# Deletes every queue and exchange of the local broker's "/" whose name starts with $1, in
# one call (one rabbitmqctl per name takes minutes). Nothing when the broker is elsewhere.
delete_rabbitmq_topology() {
  command -v rabbitmqctl >/dev/null 2>&1 || return 0
  [[ $(url_host "$AMQP_URL") =~ ^(127.0.0.1|localhost)$ ]] || return 0
  local prefix="$1"
  timeout 120 rabbitmqctl eval '
    Prefix = <<"'"$prefix"'">>,
    Test = fun(Name) -> binary:longest_common_prefix([Name, Prefix]) =:= byte_size(Prefix) end,
    Qs = [Q || Q <- rabbit_amqqueue:list(<<"/">>), Test(element(4, amqqueue:get_name(Q)))],
    [rabbit_amqqueue:delete(Q, false, false, <<"paysys-test-cleanup">>) || Q <- Qs],
    Xs = [X || X <- rabbit_exchange:list_names(), Test(element(4, X))],
    [rabbit_exchange:delete(X, false, <<"paysys-test-cleanup">>) || X <- Xs],
    {length(Qs), length(Xs)}.' </dev/null >/dev/null 2>&1 || true
}

# Fails, saying why, when the local RabbitMQ has a resource alarm: under a memory or disk
# alarm it stops reading from every publisher, and tests that publish would wait forever.
check_rabbitmq_alarms() {
  command -v rabbitmq-diagnostics >/dev/null 2>&1 || return 0
  [[ $(url_host "$AMQP_URL") =~ ^(127.0.0.1|localhost)$ ]] || return 0
  local alarms
  alarms=$(timeout 30 rabbitmq-diagnostics -q alarms 2>/dev/null) || return 0
  if grep -qiE 'memory|disk' <<<"$alarms"; then
    cat >&2 <<MSG
error: RabbitMQ has a resource alarm and blocks every publisher:
$alarms
  A disk alarm means less free space than its limit (df -h below); free some and retry.
$(df -h . 2>/dev/null)
MSG
    return 1
  fi
  return 0
}

# Fails, saying why, when the local RabbitMQ has few file handles left: it accepts no new
# connection once they are gone, and a message store that cannot open a file crashes and takes
# its virtual host down (INTERNAL_ERROR on every connection). The process's own count of open
# files is the truth: RabbitMQ's file_handle_cache does not see the quorum queues' segment
# files (about three per queue). Its count is the fallback where /proc is not readable.
check_rabbitmq_file_handles() {
  command -v rabbitmqctl >/dev/null 2>&1 || return 0
  [[ $(url_host "$AMQP_URL") =~ ^(127.0.0.1|localhost)$ ]] || return 0
  local info used limit beam
  beam=$(pgrep -f 'beam.smp.*rabbit' 2>/dev/null | head -1)
  if [[ -n "$beam" && -r "/proc/$beam/limits" ]] && used=$(ls "/proc/$beam/fd" 2>/dev/null | wc -l) && ((used > 0)); then
    limit=$(awk '/Max open files/ {print $4}' "/proc/$beam/limits")
  else
    info=$(timeout 30 rabbitmqctl eval 'file_handle_cache:info([total_used, total_limit]).' </dev/null 2>/dev/null) || return 0
    used=$(sed -n 's/.*total_used,\([0-9]*\).*/\1/p' <<<"$info")
    limit=$(sed -n 's/.*total_limit,\([0-9]*\).*/\1/p' <<<"$info")
  fi
  [[ "$used" =~ ^[0-9]+$ && "$limit" =~ ^[0-9]+$ ]] || return 0
  echo "RabbitMQ: $used of $limit open files in use before the tests"
  if (( used * 10 > limit * 6 )); then
    cat >&2 <<MSG
error: RabbitMQ already uses $used of its $limit file handles; the tests need about 300 more
  and it accepts no connection once they are gone. Each quorum queue holds about three, each
  virtual host a few: delete the queues and virtual hosts nobody needs (rabbitmqctl
  list_queues, list_vhosts), or raise the broker's limit (its ulimit -n, e.g. LimitNOFILE in
  its systemd unit).
MSG
    return 1
  fi
  return 0
}

# Fails, saying why, when a virtual host of the local RabbitMQ is down: the broker then
# refuses every connection to it with INTERNAL_ERROR ("vhost ... is down"), which no test can
# explain. A vhost goes down when its message store crashed (no file handles or disk left, for
# instance); `rabbitmqctl restart_vhost` brings it back, so try that once before giving up.
check_rabbitmq_vhosts() {
  command -v rabbitmqctl >/dev/null 2>&1 || return 0
  [[ $(url_host "$AMQP_URL") =~ ^(127.0.0.1|localhost)$ ]] || return 0
  local down
  down=$(rabbitmq_vhosts_down) || return 0
  [[ -z "$down" ]] && return 0
  echo "RabbitMQ: virtual hosts down: $down; restarting them (rabbitmqctl restart_vhost)" >&2
  local v
  for v in $down; do timeout 60 rabbitmqctl restart_vhost -p "$v" </dev/null >&2 2>&1 || true; done
  down=$(rabbitmq_vhosts_down) || return 0
  if [[ -n "$down" ]]; then
    cat >&2 <<MSG
error: RabbitMQ's virtual hosts $down are down and did not restart; every connection to them
  fails with INTERNAL_ERROR. Its log says why ($(rabbitmq_log_file)); look for the message
  store's crash (file handles, disk). Restarting the broker clears it.
MSG
    report_service_state
    return 1
  fi
}

# The names of the local broker's virtual hosts that are not running (nothing when all are).
rabbitmq_vhosts_down() {
  timeout 30 rabbitmqctl eval '
    Down = [V || V <- rabbit_vhost:list_names(), not rabbit_vhost_sup_sup:is_vhost_alive(V)],
    io:format("~s", [lists:join(" ", [binary_to_list(V) || V <- Down])]).' </dev/null 2>/dev/null |
    sed -n '1s/ok$//p'
}

rabbitmq_log_file() {
  ls -t /var/log/rabbitmq/*.log 2>/dev/null | grep -v upgrade | head -1
}

# What the servers looked like when a run stopped: printed when the tests overran or failed.
report_service_state() {
  echo "--- state of the machine and the servers ---" >&2
  df -h . /tmp >&2 2>/dev/null || true
  uptime >&2 || true
  if command -v rabbitmq-diagnostics >/dev/null 2>&1; then
    echo "RabbitMQ alarms:" >&2
    timeout 30 rabbitmq-diagnostics -q alarms >&2 2>&1 || true
    echo "RabbitMQ file handles (each quorum queue holds about three):" >&2
    timeout 30 rabbitmqctl eval 'file_handle_cache:info([total_used, total_limit, sockets_used]).' </dev/null >&2 2>&1 || true
    echo "RabbitMQ open files (the process's own count, then its limit):" >&2
    local beam
    beam=$(pgrep -f 'beam.smp.*rabbit' | head -1)
    [[ -n "$beam" ]] && { ls "/proc/$beam/fd" 2>/dev/null | wc -l; grep 'open files' "/proc/$beam/limits"; } >&2 2>/dev/null
    echo "RabbitMQ virtual hosts down: $(rabbitmq_vhosts_down || echo unknown)" >&2
    local log
    log=$(rabbitmq_log_file)
    if [[ -r "$log" ]]; then
      echo "RabbitMQ log, last errors ($log):" >&2
      grep -E '\[(error|critical)\]' "$log" |
        grep -iE 'vhost.*(down|crash|fail|stop)|msg_store|emfile|enfile|enospc|eacces|system_limit' | tail -15 | cut -c1-300 >&2 || true
    fi
    echo "RabbitMQ test queues (name, messages, consumers), first 20:" >&2
    timeout 30 rabbitmqctl list_queues -q name messages consumers 2>/dev/null | grep '^paysys-test_' | head -20 >&2 || true
  fi
  if command -v psql >/dev/null 2>&1; then
    echo "PostgreSQL connections by state:" >&2
    psql "$DATABASE_URL" -Atc "SELECT state, count(*) FROM pg_stat_activity GROUP BY 1" >&2 2>&1 || true
  fi
}

#!/usr/bin/env bash
# Writes services/payments-api/.sqlx/, the offline data with which `sqlx::query!` and friends check every SQL
# statement at build time, from a scratch database migrated to the current schema; with
# `--check`, fails instead when it is not what the code and migrations make (the test
# command runs that). Usage: scripts/sqlx-prepare.sh [--check]
# Needs PostgreSQL (DATABASE_URL, or 127.0.0.1:5432 as postgres) and sqlx-cli
# (scripts/ensure-sqlx-cli.sh installs it).
set -Eeuo pipefail
cd "$(dirname "$0")/.."

check=()
case "${1:-}" in
  --check) check=(--check) ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

SQLX="$(scripts/ensure-sqlx-cli.sh)"
admin_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db="paysys_sqlx_prepare_$$"
url="${admin_url%/*}/$db"
drop() { psql "$admin_url" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
trap drop EXIT
psql "$admin_url" -qAtc "CREATE DATABASE $db" >/dev/null

"$SQLX" migrate run --source services/payments-api/migrations --database-url "$url" >/dev/null
# Beside the crate (not at the workspace root) so that any workspace building it, the fuzz
# targets' included, finds it.
if ! (cd services/payments-api &&
  PATH="$(dirname "$SQLX"):$PATH" DATABASE_URL="$url" cargo sqlx prepare "${check[@]}" -- --all-targets --locked); then
  if [[ ${#check[@]} -gt 0 ]]; then
    echo "error: .sqlx/ is not current: a query or a migration changed; run scripts/sqlx-prepare.sh and commit services/payments-api/.sqlx/" >&2
  fi
  exit 1
fi

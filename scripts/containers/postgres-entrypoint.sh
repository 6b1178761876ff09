#!/bin/bash
# Entrypoint of the local PostgreSQL stand-in (scripts/containers/bases.sh), doing what the
# official postgres image's does with the same variables: POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB, PGDATA (PGPORT too, as PostgreSQL reads it). Extra arguments go to postgres.
set -euo pipefail
: "${POSTGRES_USER:=postgres}" "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA

if [[ $(id -u) == 0 ]]; then
  # A fresh volume belongs to root: hand it to postgres, then drop root for good.
  mkdir -p "$PGDATA" /run/postgresql
  chown -R postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
    echo "error: POSTGRES_PASSWORD must be set (as for the official image)" >&2
    exit 1
  fi
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --locale=C --encoding=UTF8 \
    --auth-local=trust --auth-host=scram-sha-256 --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") >/dev/null
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [[ "$POSTGRES_DB" != postgres ]]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql "$@"

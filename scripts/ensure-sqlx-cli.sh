#!/usr/bin/env bash
# Prints the path of a `sqlx` CLI (sqlx-cli, the version of the workspace's sqlx) on stdout;
# progress goes to stderr, so callers can do  SQLX="$(scripts/ensure-sqlx-cli.sh)".
# Order: the cached build in .cache/tools/sqlx-cli; else `cargo install` it there from
# crates.io (about 3 minutes on 2 cores; PostgreSQL and rustls only, no OpenSSL).
# Exits non-zero with a message when it cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep in step with the workspace's sqlx (Cargo.toml): the newest sqlx-cli of its minor
# version. The query data is written by the workspace's own macros (the CLI only runs them
# and checks the result), so 0.9.0's CLI prepares for sqlx 0.9.1, which has no CLI release.
VERSION="0.9.0"
ROOT="${PAYSYS_CACHE:-$(pwd)/.cache}/tools/sqlx-cli"
CACHED="$ROOT/bin/sqlx"

log() { echo "ensure-sqlx-cli: $*" >&2; }

if [[ -x "$CACHED" ]] && [[ "$("$CACHED" --version 2>/dev/null)" == *" $VERSION" ]]; then
  echo "$CACHED"
  exit 0
fi

log "installing sqlx-cli $VERSION into $ROOT (cargo install, a few minutes)"
# Its own target directory: the workspace's would be rebuilt with other features.
if ! cargo install sqlx-cli --version "$VERSION" --locked --quiet \
  --no-default-features --features postgres,rustls \
  --root "$ROOT" --target-dir "$ROOT/build" >&2; then
  log "error: cargo install sqlx-cli $VERSION failed (see above); it needs crates.io"
  exit 1
fi
rm -rf "$ROOT/build"
echo "$CACHED"

#!/usr/bin/env bash
# Prints the bin folder of the project venv holding the scripts' Python command-line tools
# (scripts/python-tools.txt: schemathesis, podman-compose), so callers can do
#   PATH="$(scripts/ensure-tools.sh):$PATH"
# The venv is .cache/python-tools, made when missing or when the pins changed; pip's own cache
# makes later runs fast. Never a global pip install: stock Debian 12 and Ubuntu 24.04 refuse it
# (PEP 668, "externally-managed-environment"). Progress goes to stderr; exits non-zero with
# the one thing to install when python3 or its venv module is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS="scripts/python-tools.txt"
VENV="${PAYSYS_CACHE:-$(pwd)/.cache}/python-tools"
STAMP="$VENV/.requirements"

log() { echo "ensure-tools: $*" >&2; }

if [[ -x "$VENV/bin/python" ]] && cmp -s "$REQUIREMENTS" "$STAMP"; then
  echo "$VENV/bin"
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
  log "error: python3 is missing (Debian/Ubuntu: apt-get install python3 python3-venv)"
  exit 1
fi
log "making $VENV with $(sed 's/#.*//' "$REQUIREMENTS" | tr -s ' \n' ' ')"
rm -rf "$VENV"
if ! python3 -m venv "$VENV" >&2; then
  rm -rf "$VENV"
  log "error: python3 cannot make a venv (Debian/Ubuntu: apt-get install python3-venv)"
  exit 1
fi
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" >&2; then
  log "error: pip could not install $REQUIREMENTS into $VENV (see above)"
  exit 1
fi
cp "$REQUIREMENTS" "$STAMP"
echo "$VENV/bin"

#!/usr/bin/env bash
# Prints the path of a Python interpreter that has the data feed's pinned packages
# (services/paysys-feed/spark/requirements.txt: pyspark, pyarrow, cryptography), so callers can do
#   PYTHON="$(scripts/ensure-python.sh)"
# The packages go into a venv under .cache/python-feed, made when missing or when the pins
# changed; pip's own cache makes later runs fast. Progress goes to stderr. Exits non-zero with
# the reason (no python3, no venv module, pip failure) so callers can fail or skip clearly.
# Spark also needs a Java runtime (17+); on Debian: apt-get install openjdk-17-jre-headless.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS="services/paysys-feed/spark/requirements.txt"
VENV="${PAYSYS_CACHE:-$(pwd)/.cache}/python-feed"
STAMP="$VENV/.requirements"

log() { echo "ensure-python: $*" >&2; }

if [[ -x "$VENV/bin/python" ]] && cmp -s "$REQUIREMENTS" "$STAMP"; then
  echo "$VENV/bin/python"
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
  log "python3 is missing (Debian: apt-get install python3 python3-venv)"
  exit 1
fi
log "making $VENV with $(tr '\n' ' ' < <(grep -v '^#' "$REQUIREMENTS"))"
rm -rf "$VENV"
if ! python3 -m venv "$VENV" >&2; then
  log "python3 cannot make a venv (Debian: apt-get install python3-venv)"
  exit 1
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" >&2
cp "$REQUIREMENTS" "$STAMP"
echo "$VENV/bin/python"

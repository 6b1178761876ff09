#!/usr/bin/env bash
# Prints the path of a Python interpreter that has the risk model's training package and its
# pinned packages (services/paysys-model/requirements.txt: lightgbm, scikit-learn, numpy,
# pyarrow, pyspark, pytest and what they need), so callers can do
#   PYTHON="$(scripts/ensure-model-python.sh)"
#   "$PYTHON" -m paysys_model train --feed FEED --out MODEL_DIR
# The packages go into a venv under .cache/python-model (never a global pip), made when missing
# or when the pins changed; pip's own cache makes later runs fast. The venv finds the package
# through a .pth file naming this checkout's services/paysys-model. Progress goes to stderr.
# Exits non-zero with a one-line reason (no python3, no venv module, pip failure) so callers
# can fail or skip clearly. The Spark preparation also needs Java 17+
# (Debian: apt-get install openjdk-17-jre-headless).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS="services/paysys-model/requirements.txt"
PACKAGE_DIR="$(pwd)/services/paysys-model"
VENV="${PAYSYS_CACHE:-$(pwd)/.cache}/python-model"
STAMP="$VENV/.requirements"

log() { echo "ensure-model-python: $*" >&2; }

# The .pth file puts this checkout's package on the venv's path (rewritten when a shared
# PAYSYS_CACHE venv is used from another checkout).
link_package() {
  local site
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  if [[ "$(cat "$site/paysys-model.pth" 2>/dev/null)" != "$PACKAGE_DIR" ]]; then
    echo "$PACKAGE_DIR" > "$site/paysys-model.pth"
  fi
}

if [[ -x "$VENV/bin/python" ]] && cmp -s "$REQUIREMENTS" "$STAMP"; then
  link_package
  echo "$VENV/bin/python"
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
  log "python3 is missing (Debian: apt-get install python3 python3-venv)"
  exit 1
fi
log "making $VENV with $(grep -v '^#' "$REQUIREMENTS" | tr '\n' ' ')"
rm -rf "$VENV"
if ! python3 -m venv "$VENV" >&2; then
  log "python3 cannot make a venv (Debian: apt-get install python3-venv)"
  exit 1
fi
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$REQUIREMENTS" >&2; then
  log "pip could not install $REQUIREMENTS (is PyPI reachable?)"
  exit 1
fi
link_package
cp "$REQUIREMENTS" "$STAMP"
echo "$VENV/bin/python"

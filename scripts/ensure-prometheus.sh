#!/usr/bin/env bash
# Makes sure `promtool` and `prometheus` (Debian's `prometheus` package, 2.42) are on PATH: the
# monitoring tests check the chart's alerts with promtool and scrape the real processes with a
# real Prometheus. Installs the package with apt when missing and running as root; otherwise
# exits non-zero with the one line that says what to install.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-prometheus: installing Debian's prometheus package (promtool, prometheus)" >&2
  apt-get update -qq >/dev/null
  # --no-install-recommends: the exporters it recommends would start nothing here, but are not needed.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=120 prometheus >/dev/null
  # No systemd here, so the package starts no server; stop one anyway if a service manager did.
  if command -v promtool >/dev/null 2>&1; then
    exit 0
  fi
fi
echo "ensure-prometheus: promtool and prometheus are missing: apt-get install -y prometheus (Debian/Ubuntu, as root)" >&2
exit 1

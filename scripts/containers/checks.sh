# shellcheck shell=bash
# Checks shared by the container tests (sourced).

fail() { echo "FAIL: $*" >&2; exit 1; }

# What the kernel says about the container's main process: its user, capabilities, root mount.
check_process() { # name
  local pid
  pid=$(podman inspect --format '{{.State.Pid}}' "$1")
  grep -Eq '^Uid:\s+65532\s+65532\s+65532\s+65532$' "/proc/$pid/status" || fail "$1 is not running as 65532"
  grep -Eq '^CapEff:\s+0+$' "/proc/$pid/status" || fail "$1 has capabilities: $(grep CapEff "/proc/$pid/status")"
  grep -Eq '^NoNewPrivs:\s+1$' "/proc/$pid/status" || fail "$1 may gain privileges"
  awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | grep -Eq '(^|,)ro(,|$)' || fail "$1: root filesystem is writable"
  echo "ok: $1 runs as 65532, no capabilities, no new privileges, read-only /"
}

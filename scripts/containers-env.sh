# shellcheck shell=bash
# A container engine for the container tests and scripts/images.sh, on machines without a
# Docker engine or registry access (like CI's): Debian's podman with a private configuration.
# Sourced. Every setting comes through two environment variables, so plain `podman`,
# `podman-compose` and `podman kube play` all see it:
#   CONTAINERS_CONF          vfs-friendly engine settings: runc, cgroupfs, no default ulimits
#                            or pids limit (refused on these machines), host networking
#   CONTAINERS_STORAGE_CONF  image storage under $PAYSYS_CONTAINERS_DIR/storage, kept between
#                            runs on the same machine so local base images are built once
# Set PAYSYS_CONTAINERS_DIR to keep it elsewhere (default ~/.cache/paysys-containers: outside
# the work tree, so a fresh clone on the same machine reuses it).

PAYSYS_CONTAINERS_DIR="${PAYSYS_CONTAINERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/paysys-containers}"

# Installs podman and runc with apt when missing (root on Debian/Ubuntu); otherwise says how.
ensure_podman() {
  if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; then
    return 0
  fi
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing podman and runc (apt)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
    return 0
  fi
  echo "podman and runc are not installed: apt-get install -y podman runc (Debian/Ubuntu, as root)" >&2
  return 1
}

# For a test script: returns when podman is usable; otherwise exits, with success (a one-line
# skip saying how to get podman) except under CI=true, where a skipped test is a failure.
podman_or_skip() { # what
  ensure_podman && return 0
  if [[ "${CI:-}" == true ]]; then
    echo "error: $1 cannot run without podman (CI=true)" >&2
    exit 1
  fi
  echo "skipping $1: podman and runc missing (apt-get install -y podman runc)" >&2
  exit 0
}

# Points podman at the private configuration and storage (created on first use).
use_private_podman() {
  local conf="$PAYSYS_CONTAINERS_DIR/conf"
  mkdir -p "$conf" "$PAYSYS_CONTAINERS_DIR/storage" "$PAYSYS_CONTAINERS_DIR/run"
  cat >"$conf/containers.conf" <<CONF
[containers]
# Setting rlimits and a pids cgroup is refused inside these machines' sandboxes.
default_ulimits = []
pids_limit = 0
# No bridge networking (no iptables/netavark here): containers share the host's loopback.
netns = "host"

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
CONF
  cat >"$conf/storage.conf" <<CONF
[storage]
# vfs: no overlay filesystem inside the sandbox. It copies whole layers: keep images few.
driver = "vfs"
graphroot = "$PAYSYS_CONTAINERS_DIR/storage"
runroot = "$PAYSYS_CONTAINERS_DIR/run"
CONF
  export CONTAINERS_CONF="$conf/containers.conf"
  export CONTAINERS_STORAGE_CONF="$conf/storage.conf"
  export CONTAINER_ENGINE=podman
}

#!/usr/bin/env bash
# Checks the README's set-up on a stock Debian 12: builds a Debian 12 root with debootstrap
# (system Python, nothing else preinstalled), copies this checkout into it, runs the README's
# "Requirements" commands there (chroot), then `scripts/test.sh` up to the end of its set-up
# steps (PAYSYS_SETUP_ONLY=1: servers found or started, helm, envtest, Python venvs), and
# reports what it found. The chroot shares the host's network: its PostgreSQL is a private one
# started on port 55432, but RabbitMQ is the host's when one listens on 5672 (a second broker
# cannot take that port). Not part of every CI run: it downloads about 300 MB of packages and
# takes 10 to 20 minutes. Needs root and a reachable Debian mirror.
#   scripts/check-fresh-debian.sh [ROOTFS]   (default .cache/fresh-debian; reused when present)
# Rust: rustup's installer comes from sh.rustup.rs; where that is unreachable (no general
# internet), the host's Rust 1.95.0 toolchain is copied in instead, and the report says so.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOTFS="$(realpath -m "${1:-.cache/fresh-debian}")"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
REPORT="$ROOTFS.report"
say() { echo "check-fresh-debian: $*" | tee -a "$REPORT" >&2; }

[[ $(id -u) == 0 ]] || { echo "error: run as root (debootstrap and chroot)" >&2; exit 1; }
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
: >"$REPORT"
if [[ ! -x "$ROOTFS/usr/bin/apt-get" ]]; then
  say "debootstrap bookworm into $ROOTFS from $MIRROR"
  debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.debootstrap.log" 2>&1 \
    || { say "error: debootstrap failed (see $ROOTFS.debootstrap.log)"; exit 1; }
fi
say "stock root: python3 $(chroot "$ROOTFS" sh -c 'command -v python3 || echo absent'), cargo $(chroot "$ROOTFS" sh -c 'command -v cargo || echo absent')"

mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
for fs in proc sys dev dev/pts; do
  mkdir -p "$ROOTFS/$fs"
  mount --bind "/$fs" "$ROOTFS/$fs" || { say "error: cannot mount /$fs into the root"; exit 1; }
  mounts+=("$ROOTFS/$fs")
done
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# The host's trusted certificates (a machine behind a TLS-inspecting proxy trusts its CA
# there): the network's trust, not a set-up step, so the chroot gets it too.
cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$ROOTFS/etc/host-ca.crt"
trust=(SSL_CERT_FILE=/etc/host-ca.crt NODE_EXTRA_CA_CERTS=/etc/host-ca.crt PIP_CERT=/etc/host-ca.crt
  REQUESTS_CA_BUNDLE=/etc/host-ca.crt CURL_CA_BUNDLE=/etc/host-ca.crt)

# The checkout as a fresh clone would have it (committed files only).
rm -rf "$ROOTFS/root/paysys" && mkdir -p "$ROOTFS/root/paysys"
git archive HEAD | tar -x -C "$ROOTFS/root/paysys"

# The README's Requirements: the first ```sh block after the heading.
setup=$(awk '/^## Requirements/ {on=1} on && /^```sh/ {code=1; next} code && /^```/ {exit} code {print}' README.md)
[[ -n "$setup" ]] || { say "error: README.md has no sh block under ## Requirements"; exit 1; }
say "running the README's Requirements in the chroot:"
sed 's/^/    /' <<<"$setup" | tee -a "$REPORT" >&2
# Line by line, so that each failing step is named (continuations joined first).
joined=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' <<<"$setup")
rust_from_host=""
while IFS= read -r step; do
  [[ -z "${step// /}" ]] && continue
  if chroot "$ROOTFS" env -i "${trust[@]}" HOME=/root PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive bash -o pipefail -c "cd /root/paysys && $step" >>"$ROOTFS.steps.log" 2>&1; then
    say "ok: ${step:0:100}"
  elif [[ "$step" == *rustup* ]]; then
    say "FAILED: ${step:0:100} (no general internet here?); copying the host's Rust $(rustc --version | cut -d' ' -f2) toolchain instead"
    rust_from_host=1
  else
    say "FAILED: ${step:0:100} (see $ROOTFS.steps.log)"
  fi
done <<<"$joined"
if [[ -n "$rust_from_host" ]]; then
  mkdir -p "$ROOTFS/root/.rustup/toolchains" "$ROOTFS/root/.cargo/bin"
  rm -rf "$ROOTFS/root/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu"
  cp -aL "$HOME/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu" "$ROOTFS/root/.rustup/toolchains/"
  cp -a "$HOME/.cargo/bin/rustup" "$ROOTFS/root/.cargo/bin/"
  for tool in cargo rustc rustfmt cargo-clippy clippy-driver rustdoc; do
    ln -sf rustup "$ROOTFS/root/.cargo/bin/$tool"
  done
  printf 'version = "12"\ndefault_toolchain = "1.95.0-x86_64-unknown-linux-gnu"\nprofile = "minimal"\nauto_self_update = "disable"\n' >"$ROOTFS/root/.rustup/settings.toml"
fi
say "cargo in the chroot: $(chroot "$ROOTFS" env HOME=/root PATH=/root/.cargo/bin:/usr/bin:/bin bash -c 'cd /root/paysys && cargo --version' 2>&1 | tail -1)"

say "running PAYSYS_SETUP_ONLY=1 scripts/test.sh in the chroot"
if chroot "$ROOTFS" env -i "${trust[@]}" HOME=/root PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  PAYSYS_SETUP_ONLY=1 DATABASE_URL=postgres://postgres@127.0.0.1:55432/postgres \
  bash -c 'cd /root/paysys && scripts/test.sh' >"$ROOTFS.test.log" 2>&1; then
  say "ok: scripts/test.sh got past every set-up step"
else
  say "FAILED: scripts/test.sh stopped during set-up: $(grep -v '^\s*$' "$ROOTFS.test.log" | tail -3 | tr '\n' ' ')"
fi
say "report: $REPORT (logs: $ROOTFS.steps.log, $ROOTFS.test.log)"
# Leave the servers the test command started in the chroot stopped.
chroot "$ROOTFS" bash -c 'rabbitmqctl stop >/dev/null 2>&1; for d in /root/paysys/.cache/postgres*/; do [ -d "$d" ] && su postgres -c "/usr/lib/postgresql/*/bin/pg_ctl -D $d stop -m fast" >/dev/null 2>&1; done' || true

#!/usr/bin/env bash
# Builds the service images (payments-api, risk-engine, paysys-operator, paysys-feed) from the
# one Dockerfile with podman or docker, tagged ghcr.io/paysys/<service>:<workspace version>,
# then prints their sizes and fails if a runtime image reaches its limit: SIZE_LIMIT_MB (50; the operator, which types every child kind including the CloudNativePG and
# RabbitMQ clusters, is 43.5 MB from its stripped debug binary),
# or FEED_SIZE_LIMIT_MB (200) for paysys-feed, which embeds a query engine (DataFusion; its
# stripped debug binary is 161 MB).
#
#   scripts/images.sh [--prebuilt PROFILE] [--local-bases] [--tag TAG] [SERVICE...]
#
#   --tag TAG           tag instead of the workspace version (the tests use a tag per run)
#   --prebuilt PROFILE  copy target/PROFILE/<service> (stripped) into the image instead of
#                       compiling in the Dockerfile's build stage (PROFILE: debug or release;
#                       the binaries must be built already, e.g. by scripts/test.sh)
#   --local-bases       use a runtime base assembled from Debian packages (no registry
#                       needed; scripts/containers/bases.sh). The default when the public
#                       registry cannot be reached. Needs --prebuilt: the Rust build image has
#                       no local stand-in.
#
# Engine: $CONTAINER_ENGINE, else docker when its daemon answers, else podman. On machines
# like CI's, `source scripts/containers-env.sh; use_private_podman` first (the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/containers/bases.sh

SERVICES=(payments-api risk-engine paysys-operator paysys-feed)
SIZE_LIMIT_MB="${SIZE_LIMIT_MB:-50}"
FEED_SIZE_LIMIT_MB="${FEED_SIZE_LIMIT_MB:-200}"
PROFILE=""
BASES=""
TAG=""
selected=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prebuilt) PROFILE="$2"; shift 2 ;;
    --local-bases) BASES=local; shift ;;
    --tag) TAG="$2"; shift 2 ;;
    --real-bases) BASES=real; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) selected+=("$1"); shift ;;
  esac
done
[[ ${#selected[@]} -gt 0 ]] || selected=("${SERVICES[@]}")

if [[ -z "${CONTAINER_ENGINE:-}" ]]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    CONTAINER_ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then
    CONTAINER_ENGINE=podman
  else
    echo "error: neither a Docker daemon nor podman found (apt-get install -y podman runc)" >&2
    exit 1
  fi
fi
ENGINE="$CONTAINER_ENGINE"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
TAG="${TAG:-$VERSION}"

if [[ -z "$BASES" ]]; then
  # The registry of the default runtime image answers (even 401) when it can be reached.
  if curl -s -o /dev/null --max-time 5 https://gcr.io/v2/; then BASES=real; else BASES=local; fi
  echo "base images: $BASES" >&2
fi

build_args=()
if [[ "$BASES" == local ]]; then
  if [[ -z "$PROFILE" ]]; then
    echo "error: without a registry the Rust build image cannot be pulled: build the binaries" \
      "(cargo build) and pass --prebuilt debug or --prebuilt release" >&2
    exit 2
  fi
  base=$(runtime_base) || exit 1
  build_args+=(--build-arg "RUNTIME_IMAGE=$base")
  [[ "$ENGINE" == podman ]] && build_args+=(--pull=never)
fi

context=.
if [[ -n "$PROFILE" ]]; then
  # A context with only the stripped binaries: seconds to send, nothing compiled.
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  mkdir "$context/bin"
  for service in "${selected[@]}"; do
    binary="target/$PROFILE/$service"
    [[ -x "$binary" ]] || { echo "error: $binary missing: cargo build ${PROFILE/debug/} -p ... first" >&2; exit 1; }
    strip -o "$context/bin/$service" "$binary"
  done
  build_args+=(--build-arg BINARIES=prebuilt)
fi

failed=0
printf '%-18s %8s\n' image "size MB" >&2
for service in "${selected[@]}"; do
  image="ghcr.io/paysys/$service:$TAG"
  "$ENGINE" build --quiet "${build_args[@]}" --build-arg "VERSION=$VERSION" \
    -f Dockerfile --target "$service" -t "$image" "$context" >/dev/null
  bytes=$("$ENGINE" image inspect --format '{{.Size}}' "$image")
  mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1000000 }')
  printf '%-18s %8s\n' "$service" "$mb" >&2
  limit=$SIZE_LIMIT_MB
  [[ "$service" == paysys-feed ]] && limit=$FEED_SIZE_LIMIT_MB
  if ((bytes >= limit * 1000000)); then
    echo "error: $image is $mb MB, over the ${limit} MB limit" >&2
    failed=1
  fi
done
exit "$failed"

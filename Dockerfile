# syntax=docker/dockerfile:1.7
#
# One Dockerfile, one image per binary: pick the image with --target.
#
#   docker build --target payments-api    -t ghcr.io/paysys/payments-api:0.1.0 .
#   docker build --target risk-engine     -t ghcr.io/paysys/risk-engine:0.1.0 .
#   docker build --target paysys-operator -t ghcr.io/paysys/paysys-operator:0.1.0 .
#   docker build --target paysys-feed     -t ghcr.io/paysys/paysys-feed:0.1.0 .
#
# The targets share the builder stages, so BuildKit compiles the workspace once and the
# other image builds only copy a binary. Tag with the workspace version (Cargo.toml
# [workspace.package] version): the operator's default service images use that same tag.
#
# The base images are build arguments (defaults: the real public images) so a machine without
# registry access can substitute local stand-ins, and BINARIES=prebuilt takes binaries built on
# the host instead of compiling them here; scripts/images.sh does both (docs/development.md,
# "Running the containers without a registry").
#
# Stages:
#   chef     Rust toolchain + cargo-chef
#   planner  reduces the workspace to a dependency "recipe" (manifests + Cargo.lock only)
#   builder  compiles the dependencies from the recipe (a layer that changes only when
#            Cargo.toml/Cargo.lock change), then the workspace's own code
#   prebuilt the binaries in the build context's bin/ (only with BINARIES=prebuilt)
#   runtime  distroless cc (glibc, libgcc, CA certificates; no shell, no package manager),
#            user nonroot (65532), one binary each

ARG RUST_VERSION=1.95.0
ARG CARGO_CHEF_VERSION=0.1.78
# Build image: Rust toolchain on Debian bookworm (the runtime image's glibc must be as new).
ARG RUST_IMAGE=rust:${RUST_VERSION}-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# Where the runtime stages take the binaries from: `builder` (compile here) or `prebuilt`.
ARG BINARIES=builder

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
# The commit in `paysys_build_info` (paysys_runtime::build_info); the release workflow passes
# it. Declared after the dependencies' layer, so a new commit does not rebuild them.
ARG PAYSYS_GIT_COMMIT=unknown
# --locked: the image contains exactly the dependency versions that were tested.
RUN cargo build --release --locked \
        --bin payments-api --bin risk-engine --bin paysys-operator --bin paysys-feed \
    && mkdir -p /out \
    && cp target/release/payments-api target/release/risk-engine target/release/paysys-operator \
          target/release/paysys-feed /out/

# Binaries compiled on the host (scripts/images.sh --prebuilt): a context holding only bin/.
FROM scratch AS prebuilt
COPY bin/ /out/

# BuildKit and buildah build only the stages a target needs: with BINARIES=prebuilt the
# Rust stages (and their base image) are never touched.
FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE} AS runtime-base
ARG VERSION=0.1.0
LABEL org.opencontainers.image.source="https://github.com/paysys/paysys" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# Numeric user so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532

FROM runtime-base AS payments-api
COPY --from=binaries /out/payments-api /usr/local/bin/payments-api
ENV PORT=5000
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/payments-api"]

FROM runtime-base AS risk-engine
COPY --from=binaries /out/risk-engine /usr/local/bin/risk-engine
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/risk-engine"]

FROM runtime-base AS paysys-operator
COPY --from=binaries /out/paysys-operator /usr/local/bin/paysys-operator
# Metrics and health of the operator; the chart's metrics Service points here.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/paysys-operator"]

# The data feed's export (and report), run by the operator's CronJob. It writes only to the
# volume it is given (and /tmp); no port: it is a batch job.
FROM runtime-base AS paysys-feed
COPY --from=binaries /out/paysys-feed /usr/local/bin/paysys-feed
ENTRYPOINT ["/usr/local/bin/paysys-feed"]

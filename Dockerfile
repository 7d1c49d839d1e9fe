# syntax=docker/dockerfile:1
# The platform image: every binary of the workspace in one small non-root image.
#
#   docker build -t osago:0.1.0 .          (make images)
#
# One image, not one per binary: the binaries share almost all of their dependency graph
# (tokio, sqlx, rdkafka with its bundled librdkafka, …), so one cargo build compiles it once;
# kind loads one image; the operator's poller image is the same image as the aggregator's
# (a poller is `aggregator poller`), so the two can never drift apart. Each Deployment of the
# chart picks its binary with `command:`; the image has no shell.
#
# Stages: chef (toolchain + cargo-chef) → planner (recipe.json: the dependency graph only) →
# builder (cooks the dependencies — a cached layer that changes only with Cargo.toml/Cargo.lock —
# then builds the workspace's binaries) → runtime (distroless/cc, uid 65532).

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78
ARG BINARIES="core-app aggregator operator sandbox osago"

FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
# rdkafka builds its bundled librdkafka with CMake.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG BINARIES
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: rebuilt only when the dependency graph changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json $(printf -- '--bin %s ' ${BINARIES})
COPY . .
# librdkafka links zlib dynamically: the builder's copy ships with the binaries.
RUN cargo build --release --locked $(printf -- '--bin %s ' ${BINARIES}) \
 && mkdir -p /out/bin "/out/lib/$(uname -m)-linux-gnu" \
 && for b in ${BINARIES}; do cp "target/release/$b" /out/bin/; done \
 && cp -L "/lib/$(uname -m)-linux-gnu/libz.so.1" "/out/lib/$(uname -m)-linux-gnu/"

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="osago" \
      org.opencontainers.image.description="OSAGO quote platform: core-app, aggregator (intake, relay, poller), operator, insurer sandbox, osago CLI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/lib/ /usr/lib/
COPY --from=builder /out/bin/ /usr/local/bin/
# The sandbox's shipped personalities, for `docker run osago sandbox` (the chart mounts its own).
COPY sandbox/sandbox.toml /etc/osago/sandbox.toml
ENV SANDBOX_CONFIG=/etc/osago/sandbox.toml \
    LOG_FORMAT=json
# distroless "nonroot": uid/gid 65532, what the chart's securityContext sets too.
USER 65532:65532
CMD ["/usr/local/bin/osago", "--help"]

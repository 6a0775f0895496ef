# Respawn in one small image: every role is the same binary (zone, platform,
# ctl, drill, up). Build from the repository root:
#   docker build -t respawn:0.1.0 .
# The build stage needs only what the rust image has (gcc, make, perl and
# python for the bundled librdkafka); the runtime stage is Debian slim with
# CA certificates (alert webhooks over https) and an unprivileged user.
#
# Two build arguments let the runtime stage be built without the public
# images (CI does: scripts/image): RUNTIME_BASE, another Debian bookworm
# image; BINARY=prebuilt, the binary given as the build context's one file,
# `respawn`, instead of compiling it in the rust image.
ARG RUNTIME_BASE=debian:bookworm-slim
ARG BINARY=build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin respawn \
 && strip target/release/respawn

FROM scratch AS prebuilt
COPY respawn /src/target/release/respawn

FROM ${BINARY} AS binary

FROM ${RUNTIME_BASE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/respawn --create-home respawn
COPY --from=binary /src/target/release/respawn /usr/local/bin/respawn
USER 10001:10001
WORKDIR /var/lib/respawn
# Zone server (WebSocket, health, metrics, admin) and platform server (API, dashboard, metrics).
EXPOSE 7350 7360
ENTRYPOINT ["respawn"]
CMD ["--help"]

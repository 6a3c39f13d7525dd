# The cornershop binary in a small image. Used by deploy/compose.yaml (not exercised by CI:
# there is no Docker engine there; CI runs the same binary with scripts/stack.sh).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin cornershop

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/cornershop /usr/local/bin/cornershop
ENV CORNERSHOP_LISTEN=0.0.0.0:8080 CORNERSHOP_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["cornershop", "serve"]

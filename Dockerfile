# Multi-stage build: compile in the Rust image, run from a small Debian base
# as an unprivileged user, with the database in a volume.
#
# The build stage copies the whole context, which .dockerignore filters
# (target/, data/, .git, …): every file Cargo.toml names (src/, config/,
# benches/, …) is there without being listed here. scripts/docker-context-check.sh
# (run by .ci/run) builds the release binary from exactly that context.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/devicehub

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/devicehub --create-home devicehub \
    && mkdir -p /var/lib/devicehub/data && chown devicehub:devicehub /var/lib/devicehub/data \
    && chmod 0700 /var/lib/devicehub/data
COPY --from=build /src/target/release/devicehub /usr/local/bin/devicehub
USER devicehub
WORKDIR /var/lib/devicehub
ENV DEVICEHUB__SERVER__BIND=0.0.0.0:8080 \
    DEVICEHUB__STORAGE__PATH=/var/lib/devicehub/data/devicehub.redb
VOLUME ["/var/lib/devicehub/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
# `devicehub healthcheck` asks the configured server's /healthz (127.0.0.1
# when it binds 0.0.0.0, https when TLS is on): exit 0 on 200 within 2 s.
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/devicehub", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/devicehub"]
CMD ["serve"]

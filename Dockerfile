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
HEALTHCHECK --interval=30s --timeout=3s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]
ENTRYPOINT ["/usr/local/bin/devicehub"]
CMD ["serve"]

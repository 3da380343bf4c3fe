# Herald in a container: a release build in the Rust image, then the binary alone in a small Debian
# image, run as an unprivileged user. Build and run:
#   docker build -t herald .
#   docker run --rm -p 8080:8080 --ulimit nofile=65536:65536 herald
# The config is config/container.toml (publisher, statistics and metrics answer private networks only);
# mount your own over /etc/herald/herald.toml. See README "Running in production".

FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p herald && strip target/release/herald

FROM debian:bookworm-slim
# curl only for the HEALTHCHECK below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin herald
COPY --from=build /src/target/release/herald /usr/local/bin/herald
COPY config/container.toml /etc/herald/herald.toml
USER herald
EXPOSE 8080
# Herald raises its soft open-file limit to the hard one; give the container a high hard limit
# (docker run --ulimit nofile=65536:65536) so that max_connections can be reached.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl --fail --silent --max-time 2 http://127.0.0.1:8080/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["--config", "/etc/herald/herald.toml"]

# One image with the four binaries; compose.yaml picks the command per service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# email-service without the development mailbox (the dev-mailbox feature): production has none.
RUN cargo build --release --locked --bins --workspace --exclude verimail-email \
    && cargo build --release --locked -p verimail-email --no-default-features \
    && mkdir /out \
    && cp target/release/user-service target/release/auth-service \
          target/release/email-service target/release/gateway /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/verimail --create-home verimail
COPY --from=build /out/ /usr/local/bin/
USER verimail
WORKDIR /var/lib/verimail

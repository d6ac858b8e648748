# For users with a registry: builds wsctl statically and ships it FROM scratch.
# (On a machine without a registry, `wsctl build --tag wsctl:TAG` packages an
# already built static binary through the Docker API instead.)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The `image` profile: whole-program LTO, symbols stripped (14 MB binary).
RUN RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --profile image --locked --target x86_64-unknown-linux-gnu --bin wsctl

FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-gnu/image/wsctl /wsctl
ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=2s --timeout=2s --start-period=1s --retries=3 CMD ["/wsctl", "probe"]
ENTRYPOINT ["/wsctl"]
CMD ["serve"]

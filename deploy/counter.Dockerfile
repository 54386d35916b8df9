# syntax=docker/dockerfile:1
# The sluice-counter image (deploy/k8s/counter.yaml, deploy/docker-compose.yml).
# Build from the repository root:
#   docker build -f deploy/counter.Dockerfile -t sluice-counter:0.1.0 .
# (deploy/counter.Dockerfile.dockerignore keeps target/ and the tools out of
# the build context.)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The image's toolchain builds the service; rust-toolchain.toml would only
# add the wasm targets the filter needs.
RUN rm -f rust-toolchain.toml
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice-counter --bin sluice-counter \
 && install -m 0755 target/release/sluice-counter /usr/local/bin/sluice-counter

# glibc and libgcc only, no shell; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/sluice-counter /usr/local/bin/sluice-counter
USER 65532:65532
EXPOSE 8790
ENTRYPOINT ["/usr/local/bin/sluice-counter"]
CMD ["--listen", "0.0.0.0:8790"]

# dhan-operator image: the controller (`dhan-operator run`, the default), the browser-login Job
# entrypoint (`dhan-operator browser-login`, same image) and the Dhan mock (`/dhan-mock`, used by the
# demo and sandbox setups).
#
#   docker build -t ghcr.io/dhan-operator/dhan-operator:0.1.0 .

# ---- build ------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, against stub sources, so this layer is reused until Cargo.toml or Cargo.lock
# change; editing src/ then recompiles only this crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/dhan-mock \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/dhan-mock/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin dhan-operator --bin dhan-mock \
 && rm -rf src

# The real sources. Drop the stub build's artefacts of this crate: COPY keeps the build context's
# modification times, which can be older than the stub build, and cargo would then call the stubs
# fresh.
COPY src ./src
RUN rm -rf target/release/.fingerprint/dhan-operator-* \
           target/release/deps/dhan_operator-* target/release/deps/libdhan_operator-* \
           target/release/deps/dhan_mock-* \
 && touch src/lib.rs src/main.rs src/bin/dhan-mock/main.rs \
 && cargo build --release --locked --bin dhan-operator --bin dhan-mock \
 && mkdir /out \
 && cp target/release/dhan-operator target/release/dhan-mock /out/

# ---- run --------------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc and CA certificates, no shell. TLS is rustls (ring), so no OpenSSL.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="dhan-operator" \
      org.opencontainers.image.description="Kubernetes operator that keeps Dhan broker access tokens alive" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/dhan-operator /dhan-operator
COPY --from=build /out/dhan-mock /dhan-mock
# Numeric, so Kubernetes' runAsNonRoot can verify it without resolving a user name.
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/dhan-operator"]
CMD ["run"]

# dhan-operator image: the controller (`dhan-operator run`, the default), the browser-login Job
# entrypoint (`dhan-operator browser-login`, same image) and the kubectl plugin (`/kubectl-dhan`).
# Nothing else: no shell, no Dhan mock.
#
#   docker build -t ghcr.io/dhan-operator/dhan-operator:0.1.0 .
#
# `make image` builds the same image without a container engine (hack/images.sh: the same base
# from Debian's packages, the same binaries, user and labels), as an OCI archive.

# ---- build ------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, against stub sources, so this layer is reused until Cargo.toml or Cargo.lock
# change; editing src/ then recompiles only this crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/dhan-mock src/bin/kubectl-dhan \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/dhan-mock/main.rs \
 && echo 'fn main() {}' > src/bin/kubectl-dhan/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin dhan-operator --bin kubectl-dhan \
 && rm -rf src

# The real sources. Drop the stub build's artefacts of this crate: COPY keeps the build context's
# modification times, which can be older than the stub build, and cargo would then call the stubs
# fresh.
COPY src ./src
RUN rm -rf target/release/.fingerprint/dhan-operator-* \
           target/release/deps/dhan_operator-* target/release/deps/libdhan_operator-* \
           target/release/deps/kubectl_dhan-* \
 && touch src/lib.rs src/main.rs src/bin/kubectl-dhan/main.rs \
 && cargo build --release --locked --bin dhan-operator --bin kubectl-dhan \
 && mkdir /out \
 && cp target/release/dhan-operator target/release/kubectl-dhan /out/

# ---- run --------------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc and CA certificates, no shell. TLS is rustls (ring), so no OpenSSL.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="dhan-operator" \
      org.opencontainers.image.description="Keeps Dhan access tokens alive in Kubernetes Secrets" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/dhan-operator/dhan-operator"
COPY --from=build /out/dhan-operator /dhan-operator
COPY --from=build /out/kubectl-dhan /kubectl-dhan
# Numeric, so Kubernetes' runAsNonRoot can verify it without resolving a user name.
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/dhan-operator"]
CMD ["run"]

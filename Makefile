# The few commands a newcomer needs. `make test` installs what the tests need first.
.PHONY: test demo crd build lint bench testbed image plugin-archive

CARGO ?= cargo

## Everything: installs etcd, Chromium and a real kube-apiserver (cached in ~/.cache/dhan-operator),
## then formatting, lints, the CRD check, unit and integration tests.
test: testbed
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --lib --bins --tests

## A local control plane + mock Dhan + the operator + sample accounts, ending with
## `kubectl get dhanaccounts`; cleans up after itself.
demo: testbed
	hack/demo.sh

## Regenerate the checked-in CRDs from the Rust types.
crd:
	$(CARGO) run --quiet --bin dhan-operator -- crd dhanaccounts > crds/dhanaccounts.yaml
	$(CARGO) run --quiet --bin dhan-operator -- crd dhannotifiers > crds/dhannotifiers.yaml
	$(CARGO) run --quiet --bin dhan-operator -- crd dhanclientclaims > crds/dhanclientclaims.yaml
	$(CARGO) run --quiet --bin dhan-operator -- crd dhanoperatorinstalls > crds/dhanoperatorinstalls.yaml
	cp crds/*.yaml charts/dhan-operator/crds/
	cp crds/dhanaccounts.yaml deploy/crd.yaml
	cp crds/dhannotifiers.yaml deploy/crd-dhannotifiers.yaml
	cp crds/dhanclientclaims.yaml deploy/crd-dhanclientclaims.yaml
	cp crds/dhanoperatorinstalls.yaml deploy/crd-dhanoperatorinstalls.yaml

## Many accounts on the real control plane (1,000, 5,000 and 10,000; BENCH_ACCOUNTS=N or N,M for
## others): time to Ready, CPU, memory and API writes per refresh, an idle probe period, a forced
## refresh of all accounts, beside one refresh by Dhan's Python SDK (dhanhq, in a venv); then the
## operator's memory with 5,000 unrelated Secrets in the cluster (BENCH_UNRELATED_SECRETS=N).
BENCH_VENV ?= $(HOME)/.cache/dhan-operator/bench-venv
bench: testbed
	test -f $(BENCH_VENV)/sdk-2.3.0 || { python3 -m venv $(BENCH_VENV) && \
	  $(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check dhanhq==2.3.0 pyotp==2.12.1 && \
	  touch $(BENCH_VENV)/sdk-2.3.0; }
	BENCH_SDK_PYTHON=$(BENCH_VENV)/bin/python $(CARGO) bench --bench scale
	$(CARGO) bench --bench memory

## The simulation (src/sim) over many seeds: SIM_SEEDS seeds (100,000) of SIM_DAYS days (3)
## from SIM_FROM, optimised; a broken promise prints the seed's trace. A month of 1,000 seeds:
## `make soak SIM_FROM=0 SIM_SEEDS=1000 SIM_DAYS=30` (about 2 min on 2 cores).
soak:
	$(CARGO) test --release --lib sim::tests::soak -- --ignored --nocapture

build:
	$(CARGO) build --release --bins

## The production image as an OCI archive, without a container engine (hack/images.sh; needs
## umoci and mmdebstrap): target/image/dhan-operator-VERSION-ARCH.oci.tar, named IMAGE.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH := $(shell dpkg --print-architecture 2>/dev/null || uname -m)
IMAGE ?= ghcr.io/dhan-operator/dhan-operator:$(VERSION)
SOURCE ?= https://github.com/dhan-operator/dhan-operator
image:
	$(CARGO) build --release --locked --bin dhan-operator --bin kubectl-dhan
	mkdir -p target/image
	hack/images.sh operator target/release/dhan-operator \
	  target/image/dhan-operator-$(VERSION)-$(ARCH).oci.tar \
	  --kubectl-dhan target/release/kubectl-dhan --ref $(IMAGE) --version $(VERSION) \
	  --revision "$$(git rev-parse HEAD 2>/dev/null || echo unknown)" --source $(SOURCE) --strip
	@echo "image $(IMAGE): target/image/dhan-operator-$(VERSION)-$(ARCH).oci.tar"

## kubectl-dhan for a release and krew: target/plugin/kubectl-dhan_VERSION_linux_ARCH.tar.gz
## (hack/krew-manifest.sh writes the krew manifest from the archives' checksums).
plugin-archive:
	$(CARGO) build --release --locked --bin kubectl-dhan
	rm -rf target/plugin/stage && mkdir -p target/plugin/stage
	cp target/release/kubectl-dhan LICENSE target/plugin/stage/
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C target/plugin/stage \
	  -czf target/plugin/kubectl-dhan_$(VERSION)_linux_$(ARCH).tar.gz kubectl-dhan LICENSE
	rm -rf target/plugin/stage

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

testbed:
	hack/install-testbed.sh

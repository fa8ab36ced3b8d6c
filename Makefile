# The few commands a newcomer needs. `make test` installs what the tests need first.
.PHONY: test demo crd build lint bench testbed

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
	cp crds/dhanaccounts.yaml charts/dhan-operator/crds/dhanaccounts.yaml
	cp crds/dhannotifiers.yaml charts/dhan-operator/crds/dhannotifiers.yaml
	cp crds/dhanaccounts.yaml deploy/crd.yaml
	cp crds/dhannotifiers.yaml deploy/crd-dhannotifiers.yaml

## Many accounts on the real control plane: time to Ready, Dhan call rate, idle writes; then the
## operator's memory with 5,000 unrelated Secrets in the cluster.
## BENCH_ACCOUNTS=N changes the size (default 300); BENCH_UNRELATED_SECRETS=N the Secrets.
bench: testbed
	$(CARGO) bench --bench scale
	$(CARGO) bench --bench memory

build:
	$(CARGO) build --release --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

testbed:
	hack/install-testbed.sh

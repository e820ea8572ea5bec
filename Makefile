SHELL := bash -o pipefail
.DEFAULT_GOAL := help

CARGO ?= cargo
PREFIX ?= /usr/local

# The build names the host's target triple (cargo's --target, through CARGO_BUILD_TARGET) so
# that the link flags below reach the workspace's crates and binaries but not its build scripts
# and proc-macros, which cannot be linked statically. Binaries land in target/<triple>/release.
TARGET ?= $(shell rustc -vV | sed -n 's/^host: //p')
BIN := target/$(TARGET)/release
export CARGO_BUILD_TARGET := $(TARGET)
# Static, position-dependent binaries (docs/design.md: containerd executes the shim twice per
# container, and a static binary skips the dynamic loader). getrandom must then call the
# getrandom(2) wrapper directly: its default looks the wrapper up with dlsym, which finds
# nothing in a static binary, and falls back to /dev/urandom, which a cell cannot open.
# WASMCELL_PIE=1 builds dynamic position-independent binaries instead (crates/shim/build.rs).
ifeq ($(filter-out 0,$(WASMCELL_PIE)),)
STATIC_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static --cfg getrandom_backend="linux_getrandom"
endif
TARGET_RUSTFLAGS := CARGO_TARGET_$(shell echo '$(TARGET)' | tr 'a-z-' 'A-Z_')_RUSTFLAGS
export $(TARGET_RUSTFLAGS) := $(STATIC_RUSTFLAGS)

# List the targets.
help:
	@grep -B1 -E '^[a-z-]+:' Makefile | grep -E '^#' | sed 's/^# //'; \
	 echo "targets: deps tools build fixtures test e2e soak bench demo lint install installer-image example-app clean"

# Install the Debian packages the build, the wasm fixtures and the tests need (as root).
deps:
	bash test/scripts/deps.sh

# Build the product once, in release mode: the shim and the wasmcell CLI (the tests share this
# build). Needs no wasm toolchain.
build:
	$(CARGO) build --release -p containerd-shim-wasmcell -p wasmcell

# Build the wasm test programs (test/fixtures, with clang for wasm32-wasi from `make deps`) and
# the tool that writes them out (wasmcell-fixtures, which the demo uses).
fixtures:
	$(CARGO) build --release -p wasmcell-e2e --bins

# Lint: formatting, clippy with warnings as errors, no import circle between the files of any
# crate, and the dependency tree against the advisory database (offline; test/scripts/audit.sh).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	python3 test/scripts/module-cycles.py --self-test
	python3 test/scripts/module-cycles.py
	bash test/scripts/audit.sh

# Build the pinned third-party tools (test/tools/versions.env) once, into a cache outside the repo.
tools:
	bash test/tools/build.sh containerd crictl critest nerdctl crane kubernetes-validate kubernetes kube-proxy coredns prometheus etcd cni-plugins cargo-fuzz cargo-audit >/dev/null

# The whole test suite: unit tests and the end-to-end suites against a private containerd 2.x,
# then against Debian's containerd 1.6.
test: deps build lint tools test-components
	bash test/scripts/cargo-test.sh

# One end-to-end suite (a file of test/e2e/tests) against the freshly built binaries, on the
# pinned containerd 2.x, or on Debian's 1.6 with C=1.6: make e2e T=lifecycle [C=1.6] [ARGS=name]
e2e: build tools test-components
	@test -n "$(T)" || { echo "usage: make e2e T=<suite> [C=1.6] [ARGS='<test name> --nocapture']"; \
	  ls test/e2e/tests | sed 's/\.rs$$//' | paste -sd' '; exit 2; }
	set -e; source test/tools/env.sh; \
	  dir=$$WASMCELL_CONTAINERD2; if [ "$(C)" = 1.6 ]; then dir=/usr/bin; fi; \
	  WASMCELL_CONTAINERD_DIR=$$dir WASMCELL_BIN_DIR=$(CURDIR)/$(BIN) \
	  $(CARGO) test --release -p wasmcell-e2e --test $(T) -- $(ARGS)

# The long runs (docs/reliability.md): 1,000 exit statuses and 2,000 run/delete cycles of every
# kind of task on a private containerd 2.x (make test runs both shortened), critest with runc
# beside wasmtime (make test runs wasmtime alone against the failures runc's last run
# recorded: docs/critest.md), then every fuzz target for 10 minutes.
soak: deps build tools
	set -e; source test/tools/env.sh; WASMCELL_SOAK=full WASMCELL_CONTAINERD_DIR=$$WASMCELL_CONTAINERD2 \
	  $(CARGO) test --release -p wasmcell-e2e --test soak -- --nocapture
	set -e; source test/tools/env.sh; WASMCELL_CRITEST_RUNC=1 WASMCELL_CONTAINERD_DIR=$$WASMCELL_CONTAINERD2 \
	  $(CARGO) test --release -p wasmcell-cluster --test critest -- --nocapture
	bash test/scripts/fuzz.sh 600

# Benchmarks: wasmcell against the reference shim (benches/reference-shim, on runwasi's
# containerd-shim-wasm) and runc, on a private containerd; table on stdout, JSON in target/bench.
bench: deps build tools reference-shim large-component http-handler
	$(CARGO) build --release -p wasmcell-bench
	set -e; source test/tools/env.sh; WASMCELL_CONTAINERD_DIR=$$WASMCELL_CONTAINERD2 \
	  WASMCELL_WASMTIME_CLI=$$(bash test/tools/build.sh wasmtime-cli)/wasmtime \
	  $(BIN)/wasmcell-bench --json target/bench/results.json --component $(LARGE_COMPONENT) \
	    --http-component $(HTTP_HANDLER)

# The benchmark's large program: a componentize-py component (CPython in wasm, about 18 MiB);
# componentize-py comes from PyPI into a venv under target/bench (benches/scripts/componentize.sh).
LARGE_COMPONENT := target/bench/large-component.wasm
large-component: $(LARGE_COMPONENT)
$(LARGE_COMPONENT): benches/workloads/large-component/app.py benches/scripts/componentize.sh
	bash benches/scripts/componentize.sh large-component $@

# The HTTP handlers in Python (componentize-py, which the benchmark measures too) and in
# JavaScript (componentize-js, from the npm registry), which the wasi:http tests serve.
HTTP_HANDLER := target/bench/http-handler.wasm
JS_HANDLER := target/bench/js-handler.wasm
http-handler: $(HTTP_HANDLER)
http-handlers: $(HTTP_HANDLER) $(JS_HANDLER)
$(HTTP_HANDLER): benches/workloads/http-handler/app.py benches/scripts/componentize.sh
	bash benches/scripts/componentize.sh http-handler $@
$(JS_HANDLER): benches/workloads/js-handler/app.js benches/scripts/componentize.sh
	bash benches/scripts/componentize.sh js-handler $@

# Python's interactive prompt (componentize-py), which the terminal tests drive.
PYTHON_REPL := target/bench/python-repl.wasm
$(PYTHON_REPL): benches/workloads/python-repl/app.py benches/scripts/componentize.sh
	bash benches/scripts/componentize.sh python-repl $@

# The example application's images (deploy/kubernetes/examples/app): two Python components and
# Debian's Redis, which the cluster tier runs.
EXAMPLE_APP := target/images/app-frontend.tar
example-app: $(EXAMPLE_APP)
$(EXAMPLE_APP): $(wildcard deploy/kubernetes/examples/app/*/app.py) \
    deploy/kubernetes/examples/app/build-images.sh benches/scripts/componentize.sh | build
	bash deploy/kubernetes/examples/app/build-images.sh $(BIN)/wasmcell target/images

# The components the tests run, made here from the sources in benches/workloads, and the
# example application's images.
test-components: $(HTTP_HANDLER) $(JS_HANDLER) $(PYTHON_REPL) $(EXAMPLE_APP)

# The benchmark's reference shim: a workspace of its own, built into the shared target directory
# as cargo builds it by default (dynamically linked, without the flags above).
reference-shim:
	$(TARGET_RUSTFLAGS)= CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) build --release --manifest-path benches/reference-shim/Cargo.toml

# The node installer's image (deploy/kubernetes/installer) as an OCI image tarball.
INSTALLER_IMAGE := target/images/wasmcell-installer.tar
installer-image: build
	bash deploy/kubernetes/installer/build-image.sh $(BIN) $(INSTALLER_IMAGE)

# Install the shim and the wasmcell CLI into $(PREFIX)/bin.
install: build
	install -m 0755 $(BIN)/containerd-shim-wasmcell-v1 $(BIN)/wasmcell $(PREFIX)/bin/

# Demo: install what is missing, build, install the shim, import a wasm image, run it with ctr.
demo: deps install fixtures
	BIN=$(BIN) bash test/scripts/demo.sh

# Remove build output.
clean:
	$(CARGO) clean

.PHONY: help deps tools build lint test bench installer-image reference-shim large-component http-handler http-handlers test-components install demo clean

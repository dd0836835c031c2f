# The two commands: `make demo` and `make test`. Both set up .venv on first use and are
# idempotent: a second run only re-installs when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup examples bench bench-rl bench-runtime bench-e2e clean

setup: $(STAMP)

# torch goes first and pinned (CPU build on this machine's disk); an unpinned torch pulled
# in by stable-baselines3 would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,notebooks]'
	@touch $(STAMP)

# Example functions (C, Rust, AssemblyScript, Python components) built from source; installs
# the C and Rust -> wasm32-wasi toolchains via apt when missing.
examples: setup
	$(MAKE) -s -C examples

demo: examples
	$(PY) -m wl.demo

# tests/test_multihost.py runs the platform in network namespaces: iproute2's `ip`.
test: examples
	@command -v ip >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2; }
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# Ruff with the rules in pyproject.toml ([tool.ruff]); generated protobuf code is excluded.
lint: setup
	$(VENV)/bin/ruff check .

# Benchmarks print medians and ratios measured in the same run (see bench/README.md).
bench: setup
	$(PY) bench/bench_sim.py

bench-rl: setup
	$(PY) bench/bench_rl.py

bench-runtime: examples
	$(PY) bench/bench_runtime.py

# The end-to-end load generator is wrk (Debian), installed when missing.
bench-e2e: examples
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk; }
	$(PY) bench/bench_e2e.py

clean:
	rm -rf $(VENV) results build
	$(MAKE) -C examples clean

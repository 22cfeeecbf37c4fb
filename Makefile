# The two commands of the quick start: `make run` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LISTEN ?= tcp:7777:interface=127.0.0.1
LISTEN_WEB ?= tcp:8080:interface=127.0.0.1
FUZZ_INPUTS ?= 1000000

.PHONY: run test lint fuzz clean bench bench-full

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@# regenerate Twisted's plugin cache so `twistd chatserver` is found at once
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $(STAMP)

# --pidfile= : no twistd.pid in the checkout (with -n twistd needs none).
run: $(STAMP)
	$(BIN)/twistd -n --pidfile= chatserver --listen $(LISTEN) --listen-web $(LISTEN_WEB)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=20000 $(BIN)/pytest -q tests/wire
	$(BIN)/python tests/fuzz_wire.py $(FUZZ_INPUTS)

clean:
	rm -rf $(VENV) build *.egg-info

# Benchmarks against the baseline relay (benchmarks/README.md): short (about 5 min) and full
# (about 20 min). Both need the local PostgreSQL and Redis (PostgreSQL backend, scaling).
BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[bench]' --config-settings editable_mode=compat
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

# bench-full also measures Prosody (Debian's package, mod_mam on SQLite through lua-dbi):
# installed here when missing; the benchmark starts it as its own process on a free port.
bench-full: $(BENCH_STAMP)
	command -v prosody >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq prosody lua-dbi-sqlite3; }
	$(BIN)/python -m benchmarks.run --full

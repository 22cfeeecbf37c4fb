# The two commands of the quick start: `make run` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LISTEN ?= tcp:7777:interface=127.0.0.1
FUZZ_INPUTS ?= 1000000

.PHONY: run test lint fuzz clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@# regenerate Twisted's plugin cache so `twistd chatserver` is found at once
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/twistd -n chatserver --listen $(LISTEN)

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

# Two commands on a fresh machine: `make serve` and `make test`. Both create .venv and install the
# pinned tree (constraints.txt) first; the install re-runs only when pyproject.toml or constraints change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install tools serve test quick lint typecheck unit bench-engine clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

# The agent client libraries (Cartesia and ElevenLabs SDKs, Pipecat, LiveKit Agents) pin what the server's
# tree cannot share (Pipecat's protobuf): their own venv, re-installed only when their constraints change.
CLIENTS_VENV ?= .venv-clients
CLIENTS_STAMP := $(CLIENTS_VENV)/.installed
$(CLIENTS_STAMP): tests/clients/constraints.txt
	test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CLIENTS_VENV)/bin/python -m pip install --quiet -r tests/clients/constraints.txt
	touch $@

clients: $(CLIENTS_STAMP)

# Test tools from Debian: promtool (package prometheus) checks the alert rules and the /metrics output;
# shellcheck checks the container's start script; chromium runs the playground's browser tests (Playwright
# drives Debian's build: browser downloads are not possible here); haproxy fronts the fleet tests' replicas
# (tests/test_fleet.py). (hadolint comes from PyPI with the dev extras.)
DEBIAN_TOOLS := promtool:prometheus shellcheck:shellcheck chromium:chromium haproxy:haproxy
tools:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
		command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

serve: $(STAMP)
	$(PY) -m server --model tiny --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy engine text batching server observability bench f5tts_client tests/kustomize.py

unit: $(STAMP) tools clients
	$(PY) -m pytest -q

test: lint typecheck unit

# The fast loop: everything but the tests marked slow (subprocesses, browsers, containers, load balancers).
quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench-engine: $(STAMP)
	$(PY) -m bench.engine --model tiny

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

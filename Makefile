# Two commands on a fresh machine: `make serve` and `make test`. Both create .venv and install the
# pinned tree (constraints.txt) first; the install re-runs only when pyproject.toml or constraints change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install tools serve test lint typecheck unit bench-engine clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

# Test tools from Debian: promtool (package prometheus) checks the alert rules and the /metrics output.
tools:
	@command -v promtool >/dev/null || { \
		echo "installing promtool (Debian package prometheus)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

serve: $(STAMP)
	$(PY) -m server --model tiny --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy engine batching server observability scripts

unit: $(STAMP) tools
	$(PY) -m pytest -q

test: lint typecheck unit

bench-engine: $(STAMP)
	$(PY) scripts/bench_engine.py --model tiny

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

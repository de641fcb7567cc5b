# Two commands do all the set-up: `make demo` and `make test`.
# Both bootstrap .venv on first use; later runs only reinstall when pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test system lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sonicshield demo

lint: $(STAMP)
	$(BIN)/ruff check proxy tests bench

typecheck: $(STAMP)
	$(BIN)/mypy proxy

# puppeteer-core drives Debian's Firefox ESR in tests/test_real_clients.py
CLIENTS := tests/clients/node_modules/.package-lock.json
$(CLIENTS): tests/clients/package.json tests/clients/package-lock.json
	npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error

unit: $(STAMP) $(CLIENTS)
	$(BIN)/python -m pytest -q

# The system packages the tests drive (system-packages.txt): installed when missing as root or
# with passwordless sudo, else named with the command that installs them (exit 2), before
# anything else runs.
system:
	@sh tests/system-packages.sh

test: system
	@$(MAKE) --no-print-directory lint typecheck unit

# every benchmark of docs/benchmarks.md, one after the other (about 20 minutes)
bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.classification
	$(BIN)/python -m bench.client_memory
	$(BIN)/python -m bench.audio
	$(BIN)/python -m bench.poison
	$(BIN)/python -m bench.flood
	$(BIN)/python -m bench.evidence

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

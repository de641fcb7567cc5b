# Two commands do all the set-up: `make demo` and `make test`.
# Both bootstrap .venv on first use; later runs only reinstall when pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

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

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

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

# The two commands of the contract: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint format install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/harvester demo

lint: $(STAMP)
	$(BIN)/ruff check harvester tests benchmarks
	$(BIN)/ruff format --check harvester tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

format: $(STAMP)
	$(BIN)/ruff format harvester tests benchmarks
	$(BIN)/ruff check --fix harvester tests benchmarks

clean:
	rm -rf $(VENV) demo-data .pytest_cache .mypy_cache .ruff_cache

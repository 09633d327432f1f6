PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(BIN)/twotower

$(BIN)/twotower: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/twotower

demo: setup
	TWOTOWER_DATA=$${TWOTOWER_DATA:-../shared/data} $(BIN)/twotower demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(VENV) runs

# Vitrina quick start: `make run` (install, then the main job on the demo catalogue) and
# `make test` (install, then the tests). Everything installs into a project-local .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KEDRO := $(VENV)/bin/kedro
# Kedro telemetry is off for this project (see also .telemetry).
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export MPLBACKEND := Agg

.PHONY: install run test lint viz mlflow-ui benchmark clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,scale]"
	touch $@

run: install
	$(KEDRO) run

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

viz: install
	$(KEDRO) viz run --include-previews

mlflow-ui: install
	$(KEDRO) mlflow ui

benchmark: install
	$(PY) benchmarks/embeddings.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache

# loomk: every target installs what it needs into .venv on its own.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all install test lint typecheck unit demo bench proto clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict loomk loomk_bridge loomk_audio

unit: $(STAMP)
	$(PY) -m pytest

test: lint typecheck unit

demo: $(STAMP)
	$(PY) examples/smart_home.py
	@echo; echo "== three processes on one bus, through the gRPC bridge =="
	$(PY) examples/planner_researcher_writer.py --processes 3

bench: $(STAMP)
	$(VENV)/bin/loomk bench bus --json bench-results/bus.json
	$(VENV)/bin/loomk bench agents --json bench-results/agents.json
	$(VENV)/bin/loomk bench state --json bench-results/state.json
	$(VENV)/bin/loomk bench collab --json bench-results/collab.json
	$(VENV)/bin/loomk bench batch --json bench-results/batch.json
	$(VENV)/bin/loomk bench bridge --json bench-results/bridge.json

# The loom.v1 Python modules, from schemas/ (protoc from grpcio-tools; the output is committed).
proto: $(STAMP)
	$(PY) schemas/generate.py

clean:
	rm -rf $(VENV) bench-results .pytest_cache .mypy_cache .ruff_cache .hypothesis

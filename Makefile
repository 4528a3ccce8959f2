# loomk: every target installs what it needs into .venv on its own.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian packages: speech for the voice agent and its tests (espeak-ng speaks, flite makes test
# speech that pocketsphinx understands, sox), PortAudio's headers, which PyAudio builds against,
# and chromium, the browser the dashboard's browser tests drive with Playwright (tests/dashboard/
# test_browser.py: Playwright cannot download its own browser without network), and nats-server:
# the cluster tests (tests/cluster) start Debian's nats-server themselves, one per test.
APT_PACKAGES := espeak-ng libespeak-ng1 flite sox portaudio19-dev chromium nats-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all install system-packages test lint typecheck unit demo bench proto clean

all: test

# Installs only what is missing, so a machine that has them needs no network or root.
system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml | system-packages
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

unit: $(STAMP) system-packages
	$(PY) -m pytest

test: lint typecheck unit

# make demo DASHBOARD=1 (or DASHBOARD=HOST:PORT): the smart-home demo also serves the web
# dashboard (default 127.0.0.1:8765), prints its address and keeps the home running 30 s more.
DASHBOARD ?=
DASHBOARD_ADDRESS := $(if $(filter 1 yes true,$(DASHBOARD)),127.0.0.1:8765,$(DASHBOARD))

demo: $(STAMP) system-packages
	$(PY) examples/smart_home.py $(if $(DASHBOARD_ADDRESS),--dashboard $(DASHBOARD_ADDRESS))
	@echo; echo "== three processes on one bus, through the gRPC bridge =="
	$(PY) examples/planner_researcher_writer.py --processes 3
	@echo; echo "== an MCP server's tools as capabilities (mcp-server-time over stdio) =="
	$(PY) examples/mcp_tools.py
	@echo; echo "== two kernels in two processes sharing one bus through NATS (a local nats-server) =="
	$(PY) examples/two_kernels.py
	@echo; echo "== the voice agent, offline: spoken commands in examples/audio, answers spoken into voice-answers/ =="
	$(VENV)/bin/loomk voice --wav examples/audio/*.wav --out voice-answers

bench: $(STAMP) system-packages
	$(VENV)/bin/loomk bench bus --dashboard --json bench-results/bus.json
	$(VENV)/bin/loomk bench agents --json bench-results/agents.json
	$(VENV)/bin/loomk bench state --json bench-results/state.json
	$(VENV)/bin/loomk bench collab --json bench-results/collab.json
	$(VENV)/bin/loomk bench batch --json bench-results/batch.json
	$(VENV)/bin/loomk bench bridge --json bench-results/bridge.json
	$(VENV)/bin/loomk bench cluster --json bench-results/cluster.json
	$(VENV)/bin/loomk bench voice --json bench-results/voice.json

# The loom.v1 Python modules, from schemas/ (protoc from grpcio-tools; the output is committed).
proto: $(STAMP)
	$(PY) schemas/generate.py

clean:
	rm -rf $(VENV) bench-results voice-answers .pytest_cache .mypy_cache .ruff_cache .hypothesis

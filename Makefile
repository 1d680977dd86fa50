# The same commands for everyone: make run | test | lint | bench
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run test test-fast lint bench bench-jobs bench-cluster cluster stress stress-short compare-precision system-deps browser-deps clean

# Debian's ffmpeg decodes uploads and provides the libraries torchcodec loads.
system-deps:
	@if ! command -v ffmpeg >/dev/null || ! command -v prlimit >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's ffmpeg"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg util-linux >/dev/null; \
	  else \
	    echo "ffmpeg is missing: run 'sudo apt-get install ffmpeg' and then this command again" >&2; exit 1; \
	  fi; \
	fi

# Debian's Chromium for the browser test of /demo (Playwright drives it; it downloads no browser).
browser-deps:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing: the browser test will be skipped ('sudo apt-get install chromium')" >&2; \
	  fi; \
	fi

$(VENV)/.runtime: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements.txt into $(VENV) (first time: a few minutes, about 8 GB)"
	$(PIP) install -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-cluster.txt
	$(PIP) install -r requirements-dev.txt
	@touch $@

# Ray Serve, the optional extra for running many replicas (requirements-dev.txt includes it for the tests).
$(VENV)/.cluster: $(VENV)/.runtime requirements-cluster.txt
	$(PIP) install -r requirements-cluster.txt
	@touch $@

run: system-deps $(VENV)/.runtime
	$(PY) run.py

# Every layer (what CI runs); test-fast: unit, engine and app (in-process, no server, Ray or browser).
test: system-deps browser-deps $(VENV)/.dev
	$(PY) -m pytest

test-fast: system-deps $(VENV)/.dev
	$(PY) -m pytest -m "unit or engine or app" --numprocesses=auto --maxprocesses=4

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy services models api cluster main.py run.py config.py

bench: system-deps $(VENV)/.dev
	$(PY) -m bench.run_bench
	$(PY) -m bench.jobs

# Long-form jobs only (issue 25): a job against the same text as one stream, and a live first audio during a job.
bench-jobs: system-deps $(VENV)/.dev
	$(PY) -m bench.jobs

# The server as REPLICAS Ray Serve replicas on a local Ray head (see README, Scaling out): make cluster REPLICAS=2
REPLICAS ?= 2
cluster: system-deps $(VENV)/.cluster
	REPLICAS=$(REPLICAS) $(PY) -m cluster

# 1 vs 2 replicas of the tiny model, and the time to first audio Ray adds: writes bench/results/cluster.json.
bench-cluster: system-deps $(VENV)/.dev
	$(PY) -m bench.cluster

# The server under load and attack on 127.0.0.1 (about 15 minutes): prints a table, writes bench/results/stress.json.
stress: system-deps $(VENV)/.dev
	$(PY) -m bench.stress

# CI's quick version (a few minutes).
stress-short: system-deps $(VENV)/.dev
	$(PY) -m bench.stress --short --out bench/results/stress-short.json

# Each precision's WAV and fidelity figures on your checkpoint: make compare-precision CUSTOM_MODEL_PATH=...
TEXT ?=
SPEAKER ?=
OUT ?= precision-comparison
compare-precision: system-deps $(VENV)/.runtime
	$(PY) -m bench.compare_precision --out "$(OUT)" $(if $(TEXT),--text "$(TEXT)") $(if $(SPEAKER),--speaker "$(SPEAKER)")

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

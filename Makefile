# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Everything is installed into .venv/ by scripts/install.sh; nothing outside the repo is needed.

VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-dev lint bench

demo: install
	$(BIN)/stairwise validate examples/staircase-moa.yaml --report out/demo.html

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

install:
	./scripts/install.sh

install-dev:
	./scripts/install.sh --dev

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/sim_speed.py

# Two commands: `make run` (set-up + main job) and `make test` (set-up + test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist
PYTHON ?= python3
RUN_ARGS ?=

.PHONY: setup data run test lint format

setup: $(STAMP) data

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,ray]"
	@touch $(STAMP)

# Fashion-MNIST comes from Debian; without apt (or root) the main job falls back to digits.
data:
	@if [ ! -d $(FMNIST) ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	      || echo "notice: could not install dataset-fashion-mnist; falling back to scikit-learn digits"; \
	  else \
	    echo "notice: $(FMNIST) missing and apt unavailable; falling back to scikit-learn digits"; \
	  fi; \
	fi

run: setup
	$(VENV)/bin/entroprune run $(RUN_ARGS)

# One worker per core (pytest-xdist), one torch thread each (tests/conftest.py); worksteal: a worker that runs
# out takes queued tests from the other, so a few minute-long tests at the end do not leave a core idle. The 20
# slowest are listed at the end: the suite's time budget (~10 min on 2 cores) is spent there.
test: setup
	$(PY) -m pytest -q -n auto --dist worksteal --durations=20

lint:
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

format:
	$(VENV)/bin/ruff format src tests benchmarks

# Two entry points for a fresh machine with Python >= 3.11: `make up` and `make test`.
# Both install uv (into .tools/, from PyPI) and the workspace dependencies when missing.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
PYTEST_ARGS ?=
# Test processes: each takes whole test files (module-scoped stacks stay in one process); most
# tests wait on brokers, timers and subprocesses, so two share two cores well.
PYTEST_WORKERS ?= 2

.PHONY: up test test-containers lint bench sync checkov clean-state dist

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/python -m pip install --quiet --disable-pip-version-check uv

.venv/.synced: $(UV) pyproject.toml uv.lock $(wildcard */pyproject.toml services/*/pyproject.toml)
	$(UV) sync --frozen
	@touch $@

sync: .venv/.synced

# checkov (policy checks of deploy/k8s and deploy/Dockerfile) in a venv of its own: its pins
# would move the workspace's packages.
CHECKOV_VERSION := 3.3.30
$(CURDIR)/.tools/checkov/bin/checkov: | $(UV)
	$(UV) venv --quiet --python $(PYTHON) $(CURDIR)/.tools/checkov
	$(UV) pip install --quiet --python $(CURDIR)/.tools/checkov/bin/python checkov==$(CHECKOV_VERSION)

checkov: $(CURDIR)/.tools/checkov/bin/checkov

up: sync ## start the whole stack on embedded parts
	$(UV) run --frozen pao up

test: sync checkov ## run the whole test suite (real PostgreSQL, real broker)
	$(UV) run --frozen pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-containers: sync ## the tests against PostgreSQL and Apache Kafka containers (needs Docker)
	$(UV) run --frozen pytest --containers $(PYTEST_ARGS)

lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

bench: sync ## print the benchmark figures (see README)
	$(UV) run --frozen python bench/run_all.py

dist: sync ## devctl's wheels (every dependency, offline install) and dist/devctl.pyz (see README)
	$(UV) run --frozen python cli/dist.py --uv $(UV)

clean-state: ## forget the local stack's data (.pao/)
	rm -rf .pao

# One task runner for people and CI. `make up` runs the system; `make test` runs every check.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen

.PHONY: uv setup up test check lint fmt typecheck layers pytest compose-test bench docs reliability clean

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv

setup: uv ## Install uv (if missing) and the locked dependencies into .venv
	$(UV) sync --frozen --inexact

# Only what running needs (no test or lint tools); options with UP_ARGS="--api-port 8010".
up: uv ## Start the whole system on an embedded Redis, with demo jobs flowing
	$(UV) sync --frozen --inexact --no-dev
	$(RUN) --no-dev conveyor up --demo $(UP_ARGS)

test: setup check pytest ## Everything CI runs: lint, types, layers, then the whole test suite

check: lint typecheck layers

lint:
	$(RUN) ruff check src tests bench
	$(RUN) ruff format --check src tests bench

fmt:
	$(RUN) ruff format src tests bench
	$(RUN) ruff check --fix src tests bench

typecheck:
	$(RUN) mypy

layers:
	$(RUN) lint-imports

pytest:
	$(RUN) pytest -q -p no:cacheprovider

compose-test: ## Build the image and run compose.yaml with Podman, checked end to end (root, Debian)
	bash tests/containers/compose-test.sh

docs: ## Regenerate docs/configuration.md from the settings model
	$(RUN) python scripts/gen_config_docs.py

reliability: setup ## Run the chaos suite and write its figures to docs/reliability.md
	$(RUN) pytest tests/chaos -q -p no:cacheprovider
	$(RUN) python scripts/reliability_report.py

bench: ## Benchmarks against peers (not part of `make test`; needs node/npm and wrk)
	$(UV) run --frozen --group bench python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf .venv .conveyor .pytest_cache .mypy_cache .ruff_cache

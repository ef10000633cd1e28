# Every target creates .venv in the repository root and installs what it needs itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lock demo test lint typecheck unit integration check-examples schemas bench bench-replay bench-settle bench-gateway bench-memory bench-rebuild bench-ready bench-records bench-simulate fuzz-long clean

# Installs the pinned versions of requirements-dev.lock (reproducible), then the project itself.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Re-pin after changing dependencies in pyproject.toml (uv's resolver; the locks hold every platform).
lock: $(STAMP)
	$(PY) -m pip install --quiet uv
	$(PY) -m uv pip compile pyproject.toml --python-version 3.11 --universal -q -o requirements.lock
	$(PY) -m uv pip compile pyproject.toml --extra dev --python-version 3.11 --universal -q -o requirements-dev.lock

demo: $(STAMP)
	$(PY) -m worker.local.demo

test: $(STAMP) lint typecheck
	$(PY) -m contracts.export --check
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

integration: $(STAMP)
	$(PY) -m pytest -q -m integration

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

# Extra checks where ../shared exists: the amended examples through replay, and the repo's copy of them.
check-examples: $(STAMP)
	../shared/tools/check-examples $(PY) ../shared/spec/examples-next
	diff -r --exclude=README.md ../shared/spec/examples-next tests/golden

schemas: $(STAMP)
	$(PY) -m contracts.export

bench-replay: $(STAMP)
	$(PY) -m worker.bench.replay_bench

bench-settle: $(STAMP)
	$(PY) -m worker.bench.settle_bench

bench: $(STAMP)
	$(PY) -m worker bench

bench-gateway: $(STAMP)
	$(PY) -m worker.bench.gateway_bench

bench-memory: $(STAMP)
	$(PY) -m worker.bench.state_bench memory

bench-simulate: $(STAMP)
	$(PY) -m worker.bench.simulate_bench

bench-records: $(STAMP)
	$(PY) -m worker.bench.records_bench

bench-rebuild: $(STAMP)
	$(PY) -m worker.bench.state_bench rebuild

bench-ready: $(STAMP)
	$(PY) -m worker.bench.state_bench ready

fuzz-long: $(STAMP)
	$(PY) -m tests.fuzzing --messages 100000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .demo .bench

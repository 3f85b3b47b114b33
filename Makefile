# The two commands a user needs: `make demo` and `make test`. Each bootstraps
# .venv by itself (idempotent, fast when it is already there).
.PHONY: venv registry demo test lint unit system-test bench clean

venv:
	@bash scripts/bootstrap.sh

registry:
	@bash scripts/ensure-registry.sh

demo: venv registry
	.venv/bin/python scripts/demo.py

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test: venv registry lint
	.venv/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: venv
	.venv/bin/python -m pytest -q -m "not registry and not emulator and not airflow and not fullstack and not system" $(PYTEST_ARGS)

# The example DAGs against a real project (README: "System tests"); each test says what is
# missing and skips when BATCH_STREAMING_SYSTEM_TEST_{PROJECT,REGION,IMAGE} are not set.
system-test: venv
	.venv/bin/python -m pytest -q -p no:cacheprovider -rs -m system tests/system $(PYTEST_ARGS)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis

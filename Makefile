# The two commands a user needs: `make demo` and `make test`. Each bootstraps
# .venv by itself (idempotent, fast when it is already there).
.PHONY: venv registry demo test test-matrix lint unit system-test bench clean

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

# Unit, emulator and `airflow dags test` tiers on every Airflow / Python / dependency combination
# of scripts/matrix.py, each in its own venv (.matrix/NAME) from constraints/NAME.txt, 2 at a time
# (not the full stack nor the `scale` tests: `make test` runs those). CI runs it after `make test`.
# MATRIX=NAME limits it to one or more combinations.
test-matrix: venv registry
	.venv/bin/python scripts/matrix.py run $(MATRIX)

unit: venv
	.venv/bin/python -m pytest -q -m "not registry and not emulator and not airflow and not fullstack and not system" $(PYTEST_ARGS)

# The example DAGs against a real project (README: "System tests"); each test says what is
# missing and skips when BATCH_STREAMING_SYSTEM_TEST_{PROJECT,REGION,IMAGE} are not set.
system-test: venv
	.venv/bin/python -m pytest -q -p no:cacheprovider -rs -m system tests/system $(PYTEST_ARGS)

clean:
	rm -rf .venv .matrix .pytest_cache .mypy_cache .ruff_cache .hypothesis

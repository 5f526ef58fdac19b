# Every target installs what it needs first: a fresh clone needs only `make demo` / `make test`.
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint fmt typecheck bench smoke check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"
	$(PY) -m pip install --quiet -e '.[ray]' --group dev
	touch $(STAMP)

demo: install
	$(PY) scripts/demo.py

test: install
	$(BIN)/pytest -n 2 --dist loadgroup -p no:cacheprovider

test-fast: install
	$(BIN)/pytest -n 2 --dist loadgroup -m "not crash and not slow"

lint: install
	$(BIN)/ruff format --check batchrunner tests bench scripts
	$(BIN)/ruff check batchrunner tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: install
	$(BIN)/ruff format batchrunner tests bench scripts
	$(BIN)/ruff check --fix batchrunner tests bench scripts

typecheck: install
	$(BIN)/mypy

# `make bench ONLY=littles,cpu` runs a subset; scenario names: bench/run.py --help.
# Bytecode first, as a wheel's install compiles it (an editable one does not, and with
# PYTHONDONTWRITEBYTECODE set every run of the CLI would compile its ~120 modules again).
bench: install
	$(PY) -m compileall -q batchrunner
	$(PY) bench/run.py $(if $(ONLY),--only $(ONLY))

smoke: install
	rm -rf build/smoke && mkdir -p build/smoke
	$(PY) -m pip wheel --quiet --no-deps -w build/smoke .
	python3 -m venv build/smoke/venv
	build/smoke/venv/bin/pip install --quiet build/smoke/*.whl
	build/smoke/venv/bin/batchrunner --help >/dev/null
	@echo "smoke: wheel installs and runs"

check: lint test smoke

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

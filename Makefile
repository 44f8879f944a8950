# Every target creates and reuses .venv on its own; re-installs when pyproject.toml changes.
# The checkout's tools are the PEP 735 group `dev` (pip 25.1 and later install groups).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip constraints for the install (`pip install -c`); test-floors sets it. A venv built with
# them is upgraded to everything else's newest, as a fresh one would be.
CONSTRAINTS ?=
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | cksum | cut -d' ' -f1)

.PHONY: test test-pythons test-floors lint typecheck pytest dist docs docs-serve demo bench clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	@# Before 0.1 the distribution was named keyguard: its editable install would linger.
	@$(BIN)/python -m pip uninstall --quiet --yes keyguard >/dev/null 2>&1 || true
	$(BIN)/python -m pip install --quiet -e '.[all,testing]' --group dev \
	  $(if $(CONSTRAINTS),--upgrade -c $(CONSTRAINTS))
	@rm -f $(VENV)/.installed-*
	@touch $@

test: lint typecheck pytest

# What a release uploads: the source distribution and the pure-Python wheel, nothing else,
# checked as PyPI will render and accept them.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .
	$(BIN)/python -c "from hatchling.builders.sdist import SdistBuilder; \
	  print(*SdistBuilder('.').build(directory='dist'))"
	ls dist
	test "$$(ls dist | wc -l)" = 2 && ls dist/*-py3-none-any.whl dist/*.tar.gz >/dev/null
	$(BIN)/twine check --strict dist/*

# The documentation site, in site/; warnings are errors. `make docs-serve` previews it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: $(STAMP)
	$(BIN)/mkdocs serve

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks typing_tests docs $(wildcard examples)
	$(BIN)/ruff format --check src tests benchmarks typing_tests docs $(wildcard examples)

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The suite on the other Pythons: OTHER_PYTHONS, by default every CPython 3.12+
# that pyenv has. Each gets its own venv in .venvs/. CI runs it after `make test`, with
# KEYGUARD_REQUIRE_PYTHONS=1: then finding none is a failure.
OTHER_PYTHONS ?= $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.1[2-9]*/bin/python3)

test-pythons:
	@test -n "$(strip $(OTHER_PYTHONS))" || { \
	  echo "test-pythons: no other Python found; name some with OTHER_PYTHONS='python3.12 ...'"; \
	  test "$$KEYGUARD_REQUIRE_PYTHONS" != 1; }
	@for py in $(OTHER_PYTHONS); do \
	  name=$$($$py -c 'import sys; print("py%d%d" % sys.version_info[:2])') || exit 1; \
	  echo "== $$name: $$py"; \
	  $(MAKE) --no-print-directory pytest PYTHON=$$py VENV=.venvs/$$name || exit 1; \
	done

# The suite with each extra's dependencies at the oldest release pyproject.toml allows (the
# pins of .ci/floors.txt; the dev tools and everything else at their newest), in .venvs/floors
# on the default Python. CI runs it: a floor the code has outgrown fails there.
test-floors:
	$(MAKE) --no-print-directory pytest VENV=.venvs/floors CONSTRAINTS=.ci/floors.txt

demo: $(STAMP)
	$(BIN)/keyguard demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venvs build dist site .pytest_cache .mypy_cache .ruff_cache .hypothesis

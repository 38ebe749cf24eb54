# stadtwacht: `make demo` runs the main job on an embedded broker, `make test` runs the whole test suite.
# Both create the virtual environment and install what they need by themselves.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Test processes (pytest-xdist): most broker tests wait on subprocesses and sockets, so two workers cut the
# suite's wall time by about a third even on two cores; TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

.PHONY: demo test test-fast test-apache bench lint system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "stadtwacht needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stadtwacht demo $(ARGS)

# System packages the tests use (kcat, promtool, chromium); Java and Maven for the Apache Kafka tier.
system-deps:
	bash tests/setup-system.sh

# The whole suite: every test on the embedded Tansu broker, then the broker tier again on Apache Kafka.
# Temporary directories under this checkout: pytest prunes old ones in the shared /tmp/pytest-of-$USER, which
# pulled the directories from under a run when another checkout's tests started beside it.
test: $(STAMP) system-deps
	mkdir -p .cache
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --basetemp=$(CURDIR)/.cache/pytest-tansu $(PYTEST_ARGS)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m broker --broker=apache --basetemp=$(CURDIR)/.cache/pytest-apache \
	    $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow and not browser and not prometheus" $(PYTEST_ARGS)

test-apache: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m broker --broker=apache $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench
	$(BIN)/python -m bench.report bench-results.json --into README.md
	$(BIN)/python -m bench.report bench-results.json --into docs/benchmarks.md

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .cache bench-results.json tests/artifacts */__pycache__

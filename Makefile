# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# `run` needs the relay and a node; `test` adds the test tools on top.
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint typecheck pytest venv system clean

venv: $(RUN_STAMP)

# Reinstall only when the project's dependency list changes. The first `make run`
# downloads torch (hundreds of MB): pip shows its progress rather than going quiet.
$(RUN_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[relay,node]'
	@touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(PY) -m pip install --quiet -e '.[relay,node,dev]'
	@touch $(TEST_STAMP)

run: $(RUN_STAMP)
	$(PY) -m relay.dev $(RUN_ARGS)

# Chromium and fonts for the browser tests (apt-get when root; otherwise a note).
system:
	@.ci/system-packages

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(TEST_STAMP)
	$(VENV)/bin/mypy

# The relay's suites that use the shared `start` fixture run twice: against one relay, and
# against a cluster replica on a throwaway PostgreSQL and S3 bucket (tests/conftest.py).
CLUSTER_SUITES = tests/test_relay_nodelink.py tests/test_checkpoints.py tests/test_live_relay.py \
	tests/test_hardening_nodeport.py tests/test_daemon_relays.py

pytest: $(TEST_STAMP) system
	$(PY) -m pytest $(PYTEST_ARGS)
	STYLERELAY_TEST_CLUSTER=1 $(PY) -m pytest $(PYTEST_ARGS) $(CLUSTER_SUITES)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

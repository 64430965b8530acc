# The two commands of the README: `make run` and `make test`. Both create the virtualenv from
# uv.lock on first use and say what they are doing and how long each step took; the stamp makes
# the second run skip the install unless pyproject.toml or uv.lock changed.
#
# uv (a single binary from PyPI, pinned below) is installed once into .tools/ with the
# interpreter's own pip; it never downloads a Python (UV_PYTHON_DOWNLOADS=never) and builds the
# environment with $(PYTHON).
PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
UV := $(TOOLS)/uv-$(UV_VERSION)/bin/uv
STAMP := $(VENV)/.installed
# What `make typecheck` checks. workflows/ joins once its rewrite lands (see pyproject [tool.mypy]).
TYPED := workflows activities worker api cli scheduling
export PYTHONPYCACHEPREFIX ?= $(CURDIR)/.data/pycache
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
ifdef CI
export UV_NO_PROGRESS := 1
endif

# $(call timed,what,command): print what is done, run it, print how long it took.
timed = @printf '\033[1m==> %s\033[0m\n' "$(1)"; t0=$$(date +%s.%N); $(2) \
	&& printf '    done: %s in %.1f s\n' "$(1)" "$$(echo "$$(date +%s.%N) - $$t0" | bc)"

.PHONY: install run test check lint typecheck pytest format lock clean browser fuzz soak bench-history bench bench-simulation

$(UV):
	$(call timed,installing uv $(UV_VERSION) into $(TOOLS)/,$(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-warn-script-location --target $(TOOLS)/uv-$(UV_VERSION) uv==$(UV_VERSION))

# `uv lock` is a no-op when uv.lock matches pyproject.toml; after a dependency change it updates
# uv.lock (commit it). `uv sync` then makes .venv exactly the lock: production's dependencies
# plus the dev extra (the stack, test and lint tools), the project itself editable.
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(call timed,checking uv.lock against pyproject.toml,$(UV) lock --python $(PYTHON))
	$(call timed,installing .venv from uv.lock,$(UV) sync --frozen --inexact --extra dev --python $(PYTHON))
	@$(MAKE) --no-print-directory deploy/requirements.lock
	@touch $(STAMP)

# The image's lock: production's closure only (no extras), with hashes, from the same uv.lock.
deploy/requirements.lock: uv.lock | $(UV)
	$(call timed,writing deploy/requirements.lock (production only),$(UV) export --quiet --frozen --no-emit-project --no-dev --format requirements-txt --output-file $@)

install: $(STAMP)

lock: | $(UV)
	$(UV) lock --python $(PYTHON)
	$(MAKE) --no-print-directory deploy/requirements.lock

run: $(STAMP)
	$(BIN)/journey dev

# The browser tests drive Debian's Chromium (Playwright's own browser download cannot work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "==> installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; browser tests will be skipped" >&2; }

# What a reviewer checks, then every test.
test: check pytest

check: lint typecheck

lint: $(STAMP)
	$(call timed,ruff check,$(BIN)/ruff check .)
	$(call timed,ruff format --check,$(BIN)/ruff format --check .)

typecheck: $(STAMP)
	$(call timed,mypy $(TYPED),$(BIN)/mypy $(TYPED))

pytest: $(STAMP) browser
	$(call timed,pytest,$(BIN)/python -m pytest)

# The long fuzz run (make test runs a bounded one): schemathesis with many examples per
# operation and its stateful phase, against the real app (tests/test_fuzz_api.py); then
# hostile signals and updates by name straight to Temporal (tests/test_fuzz_temporal.py).
FUZZ_RUN := FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-200} FUZZ_PHASES=examples,coverage,fuzzing,stateful
FUZZ_TEMPORAL_RUN := TEMPORAL_FUZZ_EXAMPLES=$${TEMPORAL_FUZZ_EXAMPLES:-300} TEMPORAL_FUZZ_BATCH=$${TEMPORAL_FUZZ_BATCH:-10} TEMPORAL_FUZZ_REPORT=1
fuzz: $(STAMP)
	$(call timed,fuzz,$(FUZZ_RUN) $(BIN)/python -m pytest tests/test_fuzz_api.py -s --timeout 3600)
	$(call timed,fuzz temporal,$(FUZZ_TEMPORAL_RUN) $(BIN)/python -m pytest tests/test_fuzz_temporal.py -s --timeout 3600)

# The long model-based run of the journey (make test runs a few sequences):
# tests/test_journey_model.py with thousands of random sequences.
soak: $(STAMP)
	$(call timed,soak,JOURNEY_SOAK_EXAMPLES=$${JOURNEY_SOAK_EXAMPLES:-2000} JOURNEY_SOAK_STEPS=$${JOURNEY_SOAK_STEPS:-30} $(BIN)/python -m pytest tests/test_journey_model.py -q --timeout 0)

# History cost of a 4-session course against a bare journey of the same shape (not a test).
bench-history: $(STAMP)
	$(BIN)/python -m tests.bench_history --rounds $${ROUNDS:-3}

# The product's journey against a bare journey of the same shape on the dev server: throughput,
# CPU per process, webhook latency, pages, worker memory; a table of ratios (not a test; a few
# minutes). Bigger: make bench BENCH_ARGS="--journeys 50 --rounds 3 --webhooks 2000 --rate 50".
bench: $(STAMP)
	$(BIN)/python -m tests.bench_throughput $(BENCH_ARGS)

# The season simulation as a benchmark (docs/simulation.md; not a test; ~13 minutes): 1,000
# patients over 10 months on the example clinic, wall time and CPU per journey against the bare
# journey measured in the same run. Smaller: make bench-simulation BENCH_SIM_ARGS="--patients 200 --months 4".
bench-simulation: $(STAMP)
	$(BIN)/python -m tests.bench_simulation $(BENCH_SIM_ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache .data/mypy

# The two set-up commands of the README: `make run` and `make test`. Everything else is theirs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test check bench bench-sip bench-push bench-files bench-overlay fuzz system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install whenever the dependencies change.
$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.run-deps

## run: start ringfence on its embedded defaults (SQLite, local files, loopback ports)
run: $(VENV)/.run-deps
	$(BIN)/ringfence serve --demo

## test: install what the tests need, then every check (ruff, mypy, import contracts, pytest)
test: $(VENV)/.test-deps system-deps
	scripts/check

## check: the checks alone, without installing anything
check:
	scripts/check

## system-deps: Debian packages the tests run for real (installed when root and missing)
system-deps:
	scripts/install-system-deps

## bench: benchmarks that print figures
bench: $(VENV)/.test-deps
	$(BIN)/python benchmarks/keyring.py
	$(BIN)/python benchmarks/provisioning.py

## bench-sip: SIPp against Kamailio and against ringfence, side by side (see benchmarks/sip)
bench-sip: $(VENV)/.test-deps system-deps
	$(BIN)/python benchmarks/sip/bench.py

## bench-push: INVITE-in to push-out latency at 200 calls/s (see benchmarks/push)
bench-push: $(VENV)/.test-deps system-deps
	$(BIN)/python benchmarks/push/latency.py

## bench-files: a 1 GiB encrypted attachment up and down through ringfence serve (MB/s, RSS)
bench-files: $(VENV)/.test-deps
	$(BIN)/python benchmarks/files.py

## bench-overlay: 10,000 overlay instances held on one node, Kamailio as the PBX (RSS, REGISTERs/s)
bench-overlay: $(VENV)/.test-deps system-deps
	$(BIN)/python benchmarks/overlay.py

## fuzz: atheris on the SIP parsers for FUZZ_SECONDS (default 600)
fuzz: $(VENV)/.test-deps
	scripts/fuzz $(or $(FUZZ_SECONDS),600)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The two commands of the quick start: `make run` and `make test`.
# Everything else here is what they need. Works as root (CI) and as a normal user.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export TELGATE_STATE_DIR ?= $(CURDIR)/var

.PHONY: run test lint typecheck unit venv interop-tools clean sms

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "telgate needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## make run: the daemon with its embedded PostgreSQL, the simulators, and a demo tenant's key.
run: $(STAMP)
	$(BIN)/telgate run --demo $(if $(CONFIG),--config $(CONFIG),--config config/telgate.demo.toml)

## make sms: what the demo's phones received (the SMSC simulator's log), e.g. a verification code.
sms:
	@touch $(TELGATE_STATE_DIR)/sms-received.jsonl
	tail -n 20 -f $(TELGATE_STATE_DIR)/sms-received.jsonl

## make test: everything CI runs (lint, types, the whole test suite). Non-zero on any failure.
test: $(STAMP) interop-tools
	$(BIN)/ruff check .
	$(BIN)/mypy protocols handlers daemon config sim
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy protocols handlers daemon config sim

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/protocols

## Real peers the interop tests talk to (SIPp, baresip), from Debian's packages; skipped if not root.
interop-tools:
	@scripts/ensure-interop-tools.sh

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache

# The two commands of the quick start: `make run` and `make test`.
# Everything else here is what they need. Works as root (CI) and as a normal user.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export TELGATE_STATE_DIR ?= $(CURDIR)/var

.PHONY: run test lint typecheck unit venv interop-tools clean lock sms

# requirements.lock pins every runtime and test dependency (pip-tools, `make lock`): a fresh
# clone installs exactly what CI tested. A dependency added to pyproject.toml and not yet in
# the lock still installs (the lock is a constraint file); run `make lock` to pin it.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "telgate needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## make run: the daemon with its embedded PostgreSQL, the simulators, and a demo tenant's key.
## Ports: make run API_PORT=8081 SIP_PORT=5070 SMSC_PORT=2776 MMSC_PORT=8091 MM7_REPORT_PORT=8083
## (defaults 8080, 5060, 2775, 8090, 8082).
run: $(STAMP)
	$(BIN)/telgate run --demo $(if $(CONFIG),--config $(CONFIG),--config config/telgate.demo.toml) \
	  $(if $(API_PORT),--api-port $(API_PORT)) $(if $(SIP_PORT),--sip-port $(SIP_PORT)) \
	  $(if $(SMSC_PORT),--smsc-port $(SMSC_PORT)) $(if $(MMSC_PORT),--mmsc-port $(MMSC_PORT)) \
	  $(if $(MM7_REPORT_PORT),--mm7-report-port $(MM7_REPORT_PORT))

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

## make lock: pin what pyproject.toml names, every extra included (dev, bench), in requirements.lock;
## pins already there stay; a new dependency gets the newest version that fits.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --all-extras --strip-extras --no-emit-index-url \
	  --no-emit-find-links --no-emit-options -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache

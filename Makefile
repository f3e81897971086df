# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and
# install haq (CPU torch pinned by constraints.txt) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.haq-installed

.PHONY: install demo lint test test-all test-random mutation bench tables clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/haq demo

# The layering (import-linter contracts in pyproject.toml) and ruff's lint + format check run
# before the tests, so a change that breaks the architecture fails like a failing test.
lint: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check haq envs latency_tables tests bench
	$(BIN)/ruff format --check haq envs latency_tables tests bench

test: lint
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

# The default suite in random order (pytest-randomly); the seed is printed in the header.
# Reproduce an order with `make test-random SEED=<seed>`.
test-random: $(STAMP)
	$(BIN)/python -m pytest -p randomly $(if $(SEED),--randomly-seed=$(SEED))

# Mutation score of the core (quantization, network pricing, budget projection, attacks, DQ).
mutation: $(STAMP)
	nice $(BIN)/python bench/mutation.py

# Quick modes (minutes each on 2 cores); run a script without --quick for its full mode. The
# search-quality runs go to a new dated directory (the benchmark refuses one that holds runs),
# and their final picks are compared with bench/pick_rules.py.
bench: $(STAMP)
	$(BIN)/python bench/table_query.py
	$(BIN)/python bench/protocol.py --rounds 3
	$(BIN)/python bench/tables.py --models digits_cnn --n 10 --configs 8
	$(BIN)/python bench/dq_reproduction.py --quick
	out=runs/bench/$$(date +%Y%m%d-%H%M%S) && \
	$(BIN)/python bench/search_quality.py --quick --out $$out/search-quality && \
	$(BIN)/python bench/pick_rules.py $$out/search-quality --out $$out/pick-rules.jsonl
	$(BIN)/python bench/transfer.py --quick
	$(BIN)/python bench/agent_update.py --repeats 4
	$(BIN)/python bench/export_containers.py --sessions 3

tables: $(STAMP)
	for d in bitfusion bismo-edge bismo-cloud; do \
	  $(BIN)/haq tables build --model digits_cnn digits_mlp resnet20 mobilenetv2 resnet18 mobilenet_v2 --device $$d --out latency_tables/$$d.json || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info

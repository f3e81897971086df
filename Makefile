# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and
# install haq (CPU torch pinned by constraints.txt) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.haq-installed

.PHONY: install demo test test-all bench tables clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/haq demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

# Quick modes (minutes each on 2 cores); run a script without --quick for its full mode.
bench: $(STAMP)
	$(BIN)/python bench/table_query.py
	$(BIN)/python bench/protocol.py --rounds 3
	$(BIN)/python bench/tables.py --models digits_cnn --n 10 --configs 8
	$(BIN)/python bench/dq_reproduction.py --quick
	$(BIN)/python bench/search_quality.py --quick
	$(BIN)/python bench/transfer.py --quick

tables: $(STAMP)
	for d in bitfusion bismo-edge bismo-cloud; do \
	  $(BIN)/haq tables build --model digits_cnn digits_mlp resnet20 mobilenetv2 --device $$d --out latency_tables/$$d.json || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info

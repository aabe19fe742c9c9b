# Two commands for a fresh machine: `make demo` and `make test`.
# Everything lives in .venv; torch is pinned by a constraints file so that no CUDA build is pulled on CPU
# machines. GPU users: `make setup CONSTRAINTS=constraints/gpu.txt`.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
BIN := $(VENV)/bin
PIP_FLAGS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: setup demo test lint reproduce-demo bench clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_FLAGS) -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/annofree demo --out demo_out

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint
	$(BIN)/python -m pytest -q

# Retrains the demo's starting checkpoint from scratch (about 60 minutes on 2 CPU cores; a benchmark, not a test).
reproduce-demo: setup
	$(BIN)/annofree demo --config configs/groupvit/demo_pretrain.yaml --out reproduce_out

bench: setup
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) demo_out reproduce_out .pytest_cache .ruff_cache

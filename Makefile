# Two commands for a fresh machine: `make demo` and `make test`.
# Everything lives in .venv; torch is pinned by a constraints file so that no CUDA build is pulled on CPU
# machines. GPU users: `make setup CONSTRAINTS=constraints/gpu.txt`.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
BIN := $(VENV)/bin
PIP_FLAGS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test test-browser chromium lint reproduce-demo bench clean

# Two stamps: the demo needs only the package; tests and the app need the dev extra (transformers, gradio,
# playwright...), which a first `make demo` would otherwise spend a minute installing.
$(VENV)/.installed-base: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_FLAGS) -e .
	touch $@

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_FLAGS) -e '.[dev]'
	touch $(VENV)/.installed-base $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed-base
	$(BIN)/annofree demo --out demo_out

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The browser test is left out here (make test-browser runs it), so that make test needs no chromium.
test: setup lint
	$(BIN)/python -m pytest -q -m "not browser"

# Debian's chromium, driven by Playwright's Python package (its own browser download is not used).
chromium:
	@test -x $(CHROMIUM) || ($(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# The web app in headless chromium: upload, classes, overlay and legend, the limits through the server.
test-browser: setup chromium
	ANNOFREE_REQUIRE_BROWSER=1 ANNOFREE_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q -m browser

# Retrains the demo's starting checkpoint from scratch and packs it as the repository stores it
# (src/annofree/demo/weights/groupvit; about 47 minutes on 2 CPU cores; a benchmark, not a test).
reproduce-demo: $(VENV)/.installed-base
	$(BIN)/annofree demo --config configs/groupvit/demo_pretrain.yaml --out reproduce_out
	$(BIN)/python -m annofree.demo.checkpoint reproduce_out/groupvit reproduce_out/checkpoint

bench: setup
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) demo_out reproduce_out .pytest_cache .ruff_cache

# ShapeTune: `make demo` and `make test` each create .venv when missing, install, and run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ST     := $(BIN)/shapetune

DEMO_DIR     ?= demo_out
DEMO_GRID    ?= 32
DEMO_SPACING ?= 4.0
DEMO_SEED    ?= 0
PYTEST_ARGS  ?=

.PHONY: install demo test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first, pinned, so pip takes the local CPU wheel rather than the CUDA build.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0" -c constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(ST) data synth --cohort imperial --out $(DEMO_DIR)/raw/imperial --grid $(DEMO_GRID) --spacing $(DEMO_SPACING) --seed $(DEMO_SEED)
	$(ST) data synth --cohort acdc --out $(DEMO_DIR)/raw/acdc --seed $(DEMO_SEED)
	$(ST) data prepare $(DEMO_DIR)/raw/imperial --format imperial --out $(DEMO_DIR)/prepared/imperial --grid $(DEMO_GRID) --spacing $(DEMO_SPACING)
	$(ST) data prepare $(DEMO_DIR)/raw/acdc --format acdc --out $(DEMO_DIR)/prepared/acdc --grid $(DEMO_GRID) --spacing $(DEMO_SPACING)
	$(ST) data show $(DEMO_DIR)/prepared/imperial
	$(ST) data show $(DEMO_DIR)/prepared/acdc
	@echo "Demo outputs: raw cohorts in $(DEMO_DIR)/raw, prepared datasets and figures in $(DEMO_DIR)/prepared"

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

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
DEMO_TRIALS  ?= 8
DEMO_EPOCHS  ?= 24
DEMO_GRACE   ?= 6
DEMO_EXP     := $(DEMO_DIR)/experiments
PYTEST_ARGS  ?=

.PHONY: install browser demo demo-fetal lint docs test test-fast bench clean

# The dashboard's browser test drives Debian's Chromium through Playwright (no browser download).
# `make test SHAPETUNE_REQUIRE_BROWSER=0` skips that test where no Chromium can be installed.
CHROMIUM ?= /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export SHAPETUNE_REQUIRE_BROWSER ?= 1

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first, pinned, so pip takes the local CPU wheel rather than the CUDA build.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0" -c constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,bench,monai,tracking,optuna-dashboard,serve,docs]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(ST) data synth --cohort imperial --out $(DEMO_DIR)/raw/imperial --grid $(DEMO_GRID) --spacing $(DEMO_SPACING) --seed $(DEMO_SEED)
	$(ST) data synth --cohort acdc --out $(DEMO_DIR)/raw/acdc --seed $(DEMO_SEED)
	@# A second, harder external set: another seed, 10 mm slices, up to 15 degrees of tilt, half of HCM borderline.
	$(ST) data synth --cohort acdc --out $(DEMO_DIR)/raw/acdc_hard --seed $$(($(DEMO_SEED) + 1)) --slice-mm 10 \
	  --max-tilt-deg 15 --borderline-fraction 0.5
	$(ST) data prepare $(DEMO_DIR)/raw/imperial --format imperial --out $(DEMO_DIR)/prepared/imperial --grid $(DEMO_GRID) --spacing $(DEMO_SPACING)
	$(ST) data prepare $(DEMO_DIR)/raw/acdc --format acdc --out $(DEMO_DIR)/prepared/acdc --grid $(DEMO_GRID) --spacing $(DEMO_SPACING)
	$(ST) data show $(DEMO_DIR)/prepared/imperial
	$(ST) data show $(DEMO_DIR)/prepared/acdc
	@# A small sweep (TPE + ASHA over the Ladder VAE space); a second `make demo` resumes/reuses it.
	if [ -f $(DEMO_EXP)/demo/sweep.json ]; then \
	  $(ST) tune --resume demo --storage-path $(DEMO_EXP); \
	else \
	  $(ST) tune --space lvae_hcm --data $(DEMO_DIR)/prepared/imperial --trials $(DEMO_TRIALS) --concurrency 2 \
	    --name demo --storage-path $(DEMO_EXP) --grace-period $(DEMO_GRACE) --seed $(DEMO_SEED) optim.epochs=$(DEMO_EPOCHS); \
	fi
	$(ST) export demo --storage-path $(DEMO_EXP) --out $(DEMO_DIR)/model --force
	$(ST) predict $(DEMO_DIR)/model $(DEMO_DIR)/raw/acdc --out $(DEMO_DIR)/predictions/acdc --force
	@# A plain VAE with the same latent budget and epochs, for the evaluation table.
	[ -f $(DEMO_DIR)/runs/vae/summary.json ] || $(ST) train --config vae --data $(DEMO_DIR)/prepared/imperial \
	  --out $(DEMO_DIR)/runs/vae optim.epochs=$(DEMO_EPOCHS)
	$(ST) evaluate demo --storage-path $(DEMO_EXP) --acdc $(DEMO_DIR)/raw/acdc --acdc-hard $(DEMO_DIR)/raw/acdc_hard \
	  --extra vae=$(DEMO_DIR)/runs/vae
	@echo
	@echo "Demo outputs:"
	@echo "  raw cohorts            $(DEMO_DIR)/raw/{imperial,acdc,acdc_hard}"
	@echo "  prepared datasets      $(DEMO_DIR)/prepared/{imperial,acdc} (figures/ inside)"
	@echo "  sweep                  $(DEMO_EXP)/demo (trials.parquet, optuna.db, trials/<id>/checkpoint_best)"
	@echo "  exported best model    $(DEMO_DIR)/model (MODEL_CARD.md, model.safetensors, checksums.sha256)"
	@echo "  ACDC predictions       $(DEMO_DIR)/predictions/acdc (predictions.csv, <patient>/recon_{ED,ES}.nii.gz)"
	@echo "  evaluation report      $(DEMO_EXP)/demo/evaluation/report.md (per_subject/summary/latents.parquet, figures/)"
	@echo
	@echo "Look at it in the dashboard:  $(ST) dashboard $(DEMO_EXP)   (then open http://127.0.0.1:8501)"

# The fetal-skull study on the synthetic 72-subject cohort at 64^3: CVAE, HCVAE, TL-Net and the GAN x 3 folds.
# A short version by default (about 20 minutes here); DEMO_FETAL_EPOCHS=60 gives the table in docs/fetal.md (about 90 minutes).
DEMO_FETAL_EPOCHS ?= 10
demo-fetal: $(STAMP)
	$(ST) data synth --cohort fetal --out $(DEMO_DIR)/raw/fetal --grid 64 --seed $(DEMO_SEED)
	$(ST) data prepare $(DEMO_DIR)/raw/fetal --format fetal --out $(DEMO_DIR)/prepared/fetal --grid 64
	$(ST) data show $(DEMO_DIR)/prepared/fetal
	$(ST) study --data $(DEMO_DIR)/prepared/fetal --out $(DEMO_DIR)/studies/fetal-e$(DEMO_FETAL_EPOCHS) --cpus-per-worker 2 \
	  optim.epochs=$(DEMO_FETAL_EPOCHS)
	@echo
	@echo "Study: $(DEMO_DIR)/studies/fetal-e$(DEMO_FETAL_EPOCHS) (table.md, figures/);  $(ST) dashboard $(DEMO_DIR)/studies"

browser:
	@[ -x $(CHROMIUM) ] || [ "$(SHAPETUNE_REQUIRE_BROWSER)" = 0 ] || { \
	  echo "Installing Debian's chromium for the dashboard browser test"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
	  || echo "WARNING: could not install chromium; the browser test will fail (SHAPETUNE_REQUIRE_BROWSER=0 skips it)"

# ruff (style, unused names, bug patterns) and mypy (strict on models/, search_spaces/, experiment/, the epoch
# loop and surface.py), configured in pyproject.toml; about a minute on a fresh clone.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# The documentation site (mkdocs.yml): strict, so a broken link, a page left out of the navigation or a docstring
# the API reference cannot read fails the build (about 5 s).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: $(STAMP) browser lint docs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache site

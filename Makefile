# Every target installs what it needs into .venv first.
#   TORCH: the torch requirement installed before everything else. The default, torch==2.13.0,
#   is a CPU build on machines that carry it locally; GPU users install their own torch into
#   .venv first (or run `make install TORCH=`), and it is kept.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin
STAMP = $(VENV)/.score-installed

.PHONY: install test lint demo repro bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || [ -z "$(TORCH)" ] || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest tests

lint: install
	$(BIN)/ruff check score_cli tests benchmarks scripts

demo: install
	$(BIN)/python -m score_cli demo

# make repro METHODS="base,SCoRe (alpha=0),SCoRe" runs only those (score repro --methods);
# each seed starts from its own base; make repro ONE_BASE=1 starts every seed from one (score repro --one-base);
# BAND=1 keeps a seed's base only if it probes inside the band (--base-band); DATA='{"copy_slip": 0.2}' (the previous release's bases)
# builds the bases from other toy data (--data-json); ROOT=runs/x writes there instead of runs/repro;
# SEEDS=3,4,5 runs those seeds instead of 0,1,2 (--seeds); STAGE1_STEPS=80 trains Stage I that long (--stage1-steps)
repro: install
	$(BIN)/python -m score_cli repro $(if $(METHODS),--methods "$(METHODS)") $(if $(ONE_BASE),--one-base) \
		$(if $(BAND),--base-band) $(if $(DATA),--data-json '$(DATA)') $(if $(ROOT),--root "$(ROOT)") \
		$(if $(SEEDS),--seeds "$(SEEDS)") $(if $(STAGE1_STEPS),--stage1-steps $(STAGE1_STEPS))

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache

# The two set-up commands: `make demo` (the main job on the synthetic data) and `make test`.
# Each creates the virtual environment and installs what it needs on a fresh machine.
# `make bench-gpu`: the GPU benchmark suite on one CUDA GPU (under 8 minutes; bench/gpu_suite.py, bench/RESULTS.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The editable install is strict (a link per file, as a wheel would hold): adding or removing a file reinstalls.
FILES := $(VENV)/.package-files
$(shell mkdir -p $(VENV) && find prep train schemas -path '*/__pycache__' -prune -o -type f -print | sort > $(FILES).new \
	&& (cmp -s $(FILES).new $(FILES) || mv $(FILES).new $(FILES)); rm -f $(FILES).new)

.PHONY: install demo test bench-gpu lint format clean

$(STAMP): pyproject.toml $(FILES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=24"
	$(BIN)/python -m pip install --config-settings editable_mode=strict -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/reidprep run --config pipeline.yaml
	$(BIN)/reidprep report --config pipeline.yaml
	$(BIN)/reidprep status --config pipeline.yaml
	$(BIN)/reidtrain fit --config pipeline.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

bench-gpu: $(STAMP)
	$(BIN)/python bench/gpu_suite.py --device cuda

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf runs .pytest_cache .ruff_cache

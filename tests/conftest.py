"""Shared fixtures: a tiny model built once per session, small arith problem sets, record builders."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from dapo.models import build_tiny_model
from dapo.tasks import ArithTask


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

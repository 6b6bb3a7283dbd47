"""`dapo tiny-model`: a tiny random Llama with a BPE tokenizer trained on a task's texts, optionally fine-tuned on
the task's reference solutions into a start policy. The tests, the demo and quick CPU checks run on these."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dapo.models import build_tiny_model
from dapo.tasks import ArithTask
from dapo.tasks.base import Example, Task
from dapo.training.sft import supervised_finetune


def tiny_model_for_task(out: str | Path, examples: Sequence[Example], task: Task, **build_args: Any) -> Path:
    """A random tiny Llama whose BPE tokenizer is trained on the examples' prompts and reference solutions;
    `build_args` go to build_tiny_model (sizes, seed, overwrite)."""
    texts = [task.prompt(ex) + (task.reference_solution(ex) or "") for ex in examples]
    return build_tiny_model(out, texts, **build_args)


def make_tiny_model(
    out: str,
    task: Task | None = None,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    overwrite: bool = False,
    sft_steps: int = 0,
) -> Path:
    """Build a tiny Llama with a BPE tokenizer trained on a task's texts (random, or briefly fine-tuned).

    Args:
        out: folder for the Hugging Face model (safetensors + tokenizer).
        task: whose prompts and reference solutions train the tokenizer.
        vocab_size: upper bound on the tokenizer's vocabulary.
        hidden_size: model width.
        num_layers: decoder blocks.
        num_heads: attention heads.
        seed: weight initialisation seed.
        overwrite: replace an existing folder.
        sft_steps: if > 0, fine-tune on the task's reference solutions for this many steps (a starting policy
            that writes solutions in the task's format; 0 leaves the weights random).
    """
    task = task or ArithTask()
    examples = task.load("train")
    sizes = {"vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads}
    path = tiny_model_for_task(out, examples, task, **sizes, seed=seed, overwrite=overwrite)
    if sft_steps > 0:
        pairs = [(task.prompt(ex), task.reference_solution(ex) or "") for ex in examples]
        supervised_finetune(path, path, pairs, steps=sft_steps, seed=seed)
    print(f"wrote a tiny model to {path}")
    return path

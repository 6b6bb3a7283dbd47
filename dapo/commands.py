"""Small commands that prepare inputs: problem sets and tiny models (typed functions, parsed by jsonargparse)."""

from __future__ import annotations

from pathlib import Path

from dapo.records import Provenance, write_records
from dapo.tasks import ArithTask, problem_rows


def make_problems(out: str, task: ArithTask | None = None, split: str = "train", limit: int | None = None) -> Path:
    """Write a `problems` dataset from a task.

    Args:
        out: folder to write (replaced atomically if it exists).
        task: the task and its settings.
        split: which split of the task to write.
        limit: write at most this many problems.
    """
    task = task or ArithTask()
    examples = list(task.load(split))[:limit]
    rows = problem_rows(task, examples)
    provenance = Provenance(producer="dapo problems", seed=getattr(task, "seed", None), config={"split": split})
    path = write_records(rows, out, "problems", provenance)
    print(f"wrote {len(rows)} {task.name} problems ({split}) to {path}")
    return path


def make_tiny_model(
    out: str,
    task: ArithTask | None = None,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Build a tiny random Llama with a BPE tokenizer trained on a task's texts.

    Args:
        out: folder for the Hugging Face model (safetensors + tokenizer).
        task: whose prompts and reference solutions train the tokenizer.
        vocab_size: upper bound on the tokenizer's vocabulary.
        hidden_size: model width.
        num_layers: decoder blocks.
        num_heads: attention heads.
        seed: weight initialisation seed.
        overwrite: replace an existing folder.
    """
    from dapo.models import build_tiny_model

    task = task or ArithTask()
    examples = task.load("train")
    texts = [task.prompt(ex) + (task.reference_solution(ex) or "") for ex in examples]
    path = build_tiny_model(
        out,
        texts,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        seed=seed,
        overwrite=overwrite,
    )
    print(f"wrote a tiny model to {path}")
    return path

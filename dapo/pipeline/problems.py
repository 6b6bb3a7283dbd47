"""`dapo problems`: a task's split as a `problems` dataset, the input of Stage A (plain prompts, or rendered with an
instruct model's chat template)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from dapo.tasks import ArithTask, write_problems
from dapo.tasks.base import Task


def make_problems(
    out: str,
    task: Task | None = None,
    split: str = "train",
    limit: int | None = None,
    chat_template_from: str | None = None,
) -> Path:
    """Write a `problems` dataset from a task.

    Args:
        out: folder to write (replaced atomically if it exists).
        task: the task and its settings.
        split: which split of the task to write.
        limit: write at most this many problems.
        chat_template_from: a model folder whose tokenizer's chat template renders the prompts (the task's chat
            messages plus the generation prompt), for instruct policies; default: the task's plain prompt.
    """
    tokenizer = None
    if chat_template_from is not None:
        tokenizer = AutoTokenizer.from_pretrained(chat_template_from)
    path = write_problems(task or ArithTask(), out, split, limit, tokenizer)
    print(f"wrote problems to {path}")
    return path

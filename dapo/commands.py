"""Commands other than fit/validate: inputs (problems, tiny models) and the data stages (typed functions, parsed
by jsonargparse)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dapo.advantages import AdvantageConfig
from dapo.stage_a import StageA, ensure_states
from dapo.stage_b import ensure_actions
from dapo.tasks import ArithTask, write_problems
from dapo.tasks.base import Example, Task


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
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(chat_template_from)
    path = write_problems(task or ArithTask(), out, split, limit, tokenizer)
    print(f"wrote problems to {path}")
    return path


def tiny_model_for_task(out: str | Path, examples: Sequence[Example], task: Task, **build_args: Any) -> Path:
    """A random tiny Llama whose BPE tokenizer is trained on the examples' prompts and reference solutions;
    `build_args` go to build_tiny_model (sizes, seed, overwrite)."""
    from dapo.models import build_tiny_model

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
        from dapo.sft import supervised_finetune

        pairs = [(task.prompt(ex), task.reference_solution(ex) or "") for ex in examples]
        supervised_finetune(path, path, pairs, steps=sft_steps, seed=seed)
    print(f"wrote a tiny model to {path}")
    return path


def rollout(stage_a: StageA) -> Path:
    """Run Stage A: sample solutions, keep a balanced few, MC-estimate every state's value.

    Args:
        stage_a: policy, problems, output folder, sample and rollout counts, sampling settings.
    """
    return ensure_states(stage_a)


def advantages(advantages: AdvantageConfig) -> Path:
    """Stage B scoring: critic values of candidate actions, advantages, reference log-probs.

    Args:
        advantages: states, critic, reference policy, output folder, gap filter and terminal handling.
    """
    return ensure_actions(advantages)

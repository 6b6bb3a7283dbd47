"""The response-level baseline: rejection-sampling fine-tuning (RFT) on Stage A's correct solutions.

DAPO's claim is that step-level advantages beat outcome-only signal. The fair comparison gives an outcome-level
method the same sampled solutions and the same training compute: RFT keeps every distinct correct full solution
that Stage A sampled (the kept solutions, plus each state's prefix followed by each of its correct MC rollouts:
all of them are samples of the same policy) and fine-tunes the policy on them for as many tokens as the DAPO actor
trained on. It sees only which whole responses were right, never which step went wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from dapo.core.packing import packed_length
from dapo.core.steps import join_steps
from dapo.records import read_records
from dapo.stages.mc_rollouts import CORRECT_THRESHOLD
from dapo.training.sft import sft_rows, supervised_finetune


@dataclass
class RftSummary:
    """What `rejection_finetune` trained on."""

    solutions: int
    """Distinct correct (prompt, solution) pairs."""
    problems: int
    """Problems with at least one correct solution."""
    steps: int
    """Optimizer steps."""
    tokens: int
    """Training tokens processed (steps x batch x mean row length, the budget it was matched to)."""


def correct_solutions(stage_a_dir: str | Path) -> list[tuple[str, str]]:
    """Every distinct correct (prompt, full solution) that Stage A sampled, sorted for determinism: kept
    solutions with reward above 0.5, and state prefixes completed by a correct rollout."""
    stage_a_dir = Path(stage_a_dir)
    pairs: set[tuple[str, str]] = set()
    for row in read_records(stage_a_dir / "solutions", "solutions"):
        if row["reward"] > CORRECT_THRESHOLD:
            pairs.add((row["prompt"], join_steps(row["steps"])))
    for row in read_records(stage_a_dir / "states", "states"):
        prefix = join_steps(row["steps"][: row["t"]])
        for completion, reward in zip(row["completions"], row["completion_rewards"], strict=True):
            if reward > CORRECT_THRESHOLD:
                pairs.add((row["prompt"], prefix + completion))
    return sorted(pairs)


def actor_train_tokens(data: Any, epochs: int) -> int:
    """Tokens the actor trains on: packed length (state prefix once, then every candidate action) of every
    training item of an actor-mode StepDataModule, times the epochs."""
    data.load_items()
    return epochs * sum(packed_length(item) for item in data.train_items)


def rejection_finetune(
    policy_path: str | Path,
    out: str | Path,
    pairs: list[tuple[str, str]],
    token_budget: int,
    *,
    batch_size: int = 32,
    lr: float = 3e-4,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> RftSummary:
    """Fine-tune `policy_path` on correct `pairs` for about `token_budget` training tokens; write it to `out`."""
    if not pairs:
        raise ValueError("RFT baseline: Stage A sampled no correct solution, so there is nothing to fine-tune on")
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    tokenizer = AutoTokenizer.from_pretrained(str(policy_path))
    mean_row = sum(len(sft_rows(tokenizer, prompt, solution)[0]) for prompt, solution in pairs) / len(pairs)
    per_step = min(batch_size, len(pairs)) * mean_row
    steps = max(1, math.ceil(token_budget / per_step))
    supervised_finetune(policy_path, out, pairs, steps=steps, batch_size=batch_size, lr=lr, seed=seed, on_step=on_step)
    return RftSummary(
        solutions=len(pairs),
        problems=len({prompt for prompt, _ in pairs}),
        steps=steps,
        tokens=round(steps * per_step),
    )

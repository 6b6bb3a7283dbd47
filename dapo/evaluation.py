"""Evaluate a policy on a task split, greedy by default, and compare two policies with a paired interval.

`evaluate_policy` generates one response per problem (temperature 0 unless told otherwise), scores it with the
task's pure `score`, and returns per-problem scores, so two policies evaluated on the same problems can be
compared pairwise: `paired_difference_ci95` gives the 95% interval of the mean difference, which is much
tighter than comparing two independent intervals when the policies agree on most problems.

    result = evaluate_policy(HFGenerator.from_pretrained("runs/arith/policy"), ArithTask(), "test", limit=500)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dapo.sampling import Generator, SamplingParams
from dapo.tasks.base import Task

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


@dataclass
class EvalResult:
    """Scores of one policy on the first `n` problems of a task split."""

    task: str
    split: str
    scores: list[float] = field(repr=False)
    seconds: float

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def accuracy(self) -> float:
        return sum(self.scores) / self.n if self.scores else 0.0

    def ci95(self) -> tuple[float, float]:
        return wilson_ci95(sum(s > 0.5 for s in self.scores), self.n)


def evaluate_policy(
    generator: Generator,
    task: Task,
    split: str = "test",
    limit: int | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    seed: int = 0,
) -> EvalResult:
    """One response per problem of `task`'s `split` (the first `limit`), scored by `task.score`."""
    start = time.perf_counter()
    examples = list(task.load(split))[:limit]
    if not examples:
        raise ValueError(f"{task.name}: split {split!r} has no problems to evaluate")
    params = SamplingParams(n=1, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    responses = generator.generate([task.prompt(ex) for ex in examples], params)
    scores = [float(task.score(ex, out[0])) for ex, out in zip(examples, responses, strict=True)]
    return EvalResult(task.name, split, scores, time.perf_counter() - start)


def wilson_ci95(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (stays inside [0, 1], sensible at 0 or n successes)."""
    if n <= 0:
        raise ValueError("a proportion needs n >= 1")
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_ci95(before: Sequence[float], after: Sequence[float]) -> tuple[float, float]:
    """95% interval of mean(after - before) over the same problems (normal approximation to the paired
    differences; exact zero width when the two agree everywhere)."""
    if len(before) != len(after) or not before:
        raise ValueError(f"need the same, non-zero number of problems, got {len(before)} and {len(after)}")
    diffs = [b - a for a, b in zip(before, after, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    variance = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    half = Z95 * math.sqrt(variance / n)
    return mean - half, mean + half

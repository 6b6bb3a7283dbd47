"""Evaluate a policy on a task split (greedy by default, or n samples per problem for pass@k), and compare two
policies with a paired interval.

`evaluate_policy` generates responses, scores each with the task's pure `score` (in a thread pool, since code
tasks spend their time waiting on sandbox processes) and keeps per-problem scores, so two policies evaluated on
the same problems can be compared pairwise: `paired_difference_ci95` gives the 95% interval of the mean
difference, which is much tighter than comparing two independent intervals when the policies agree on most
problems (`dapo.core.stats`). With n samples per problem, `EvalResult.pass_at(k)` is the unbiased pass@k
estimate.

    result = evaluate_policy(HFGenerator.from_pretrained("runs/arith/policy"), ArithTask(), "test", limit=500)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from dapo.core.stats import mean_ci95, pass_at_k, wilson_ci95
from dapo.generation.protocol import Generator, SamplingParams
from dapo.tasks.base import Example, Task
from dapo.tasks.grading import score_responses


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

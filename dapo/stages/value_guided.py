"""Value-guided inference: a trained critic chooses among a policy's samples, or steers a step-level beam search.

Given n sampled responses per problem, `choose_among_samples` picks one by
- "majority_vote": the most frequent final answer (no critic: the baseline every critic method must beat),
- "best_of_n": the highest critic value (`response_value`: the final state's V, or min / product over steps),
- "weighted_vote": the final answer whose responses' values sum highest.
`beam_search` spends its tokens differently: it keeps `beams` partial solutions, samples `expand` next steps from
each (one step at a time, `SamplingParams.one_step`), scores every extended prefix with the critic and keeps the
`beams` best, until the kept ones have all finished. A step that ends without the delimiter (the policy stopped) or
an empty one finishes its beam; so does a step the token cap cut off, which is kept as it is (not a whole step).

The critic enters only as `values_of`, a function from (prompt, steps) pairs to V(s_0..s_T) of each
(`StepScorer.values`), so tests pass a scripted one.

Left out on purpose:
1. Answers vote by their extracted text (`AnswerKeyed.answer_key`): "1/2" and "0.5" are two different answers.
2. The beam search scores each prefix from scratch (no critic KV cache): the critic's forward passes are counted in
   seconds, not in generated tokens, in every comparison.
3. No lookahead or value-threshold pruning; ties keep sampling order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from dapo.core.selection import Reduce, best_index, response_value, vote_index
from dapo.core.steps import DEFAULT_DELIMITER, first_step, join_steps, split_steps
from dapo.generation.protocol import Generator, SamplingParams, is_truncated
from dapo.stages.evaluation import EvalResult
from dapo.tasks.base import AnswerKeyed, Example, Task
from dapo.tasks.grading import score_responses

Trajectories = Sequence[tuple[str, Sequence[str]]]
ValuesOf = Callable[[Trajectories], list[list[float]]]
"""(prompt, steps) pairs -> V(s_0), ..., V(s_T) of each (`StepScorer.values`)."""
SampleSelect = Literal["majority_vote", "best_of_n", "weighted_vote"]
Select = Literal["majority_vote", "best_of_n", "weighted_vote", "beam"]
BEAM_SEED_STRIDE = 7919
"""Seed offset between beam rounds, so no two rounds' generate calls share a seed."""


@dataclass
class Choice:
    """One problem's outcome: the candidates the critic saw, their values, and which one was chosen."""

    candidates: list[str]
    values: list[float]
    chosen: int

    @property
    def response(self) -> str:
        return self.candidates[self.chosen]


def candidate_values(
    values_of: ValuesOf,
    prompts: Sequence[str],
    responses: Sequence[Sequence[str]],
    reduce: Reduce = "last",
    delimiter: str = DEFAULT_DELIMITER,
) -> list[list[float]]:
    """`response_value` of every response of every prompt, the critic run once over all of them."""
    flat = [(prompt, split_steps(r, delimiter)) for prompt, rs in zip(prompts, responses, strict=True) for r in rs]
    state_values = iter(values_of(flat))
    return [[response_value(next(state_values), reduce) for _ in rs] for rs in responses]


def choose_among_samples(
    select: SampleSelect,
    responses: Sequence[str],
    values: Sequence[float] | None,
    answers: Sequence[str | None] | None,
) -> int:
    """The index `select` picks; `values` are needed by the critic's rules, `answers` by the votes."""
    if select == "best_of_n":
        return best_index(_required(values, "values", select))
    if select == "majority_vote":
        return vote_index(_required(answers, "answers", select))
    if select == "weighted_vote":
        return vote_index(_required(answers, "answers", select), _required(values, "values", select))
    raise ValueError(f"select must be majority_vote, best_of_n or weighted_vote, got {select!r}")


def _required(value: Sequence | None, name: str, select: str) -> Sequence:
    if value is None:
        raise ValueError(f"{select} needs the responses' {name}")
    return value


@dataclass
class BeamSettings:
    """How wide and how long a step-level beam search runs."""

    beams: int = 2
    """Partial solutions kept after each step."""
    expand: int = 4
    """Next steps sampled from each kept partial solution in each round."""
    max_steps: int = 16
    """Rounds (steps) before the search stops; beams still unfinished then compete as they are."""
    step_tokens: int = 64
    """Token cap of one step."""

    def __post_init__(self) -> None:
        for name in ("beams", "expand", "max_steps", "step_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"beam search: {name} must be >= 1, got {getattr(self, name)}")


@dataclass
class _Beam:
    steps: list[str] = field(default_factory=list)
    finished: bool = False
    value: float = 0.0


def _extend(beam: _Beam, step: str, delimiter: str) -> _Beam:
    """`beam` plus one sampled step: an empty step (the policy stopped at once) ends the beam as it was; a step
    without its delimiter (the policy stopped after it) or one cut off by the token cap ends it too."""
    if not step.strip():
        return _Beam(list(beam.steps), True)
    whole = first_step(step, delimiter) is not None and not is_truncated(step)
    return _Beam([*beam.steps, step], not whole)


def _keep_best(pool: Sequence[_Beam], width: int) -> list[_Beam]:
    """The `width` highest-valued distinct beams (two beams with the same text and state are one)."""
    distinct: dict[tuple[str, bool], _Beam] = {}
    for beam in pool:
        distinct.setdefault((join_steps(beam.steps), beam.finished), beam)
    ranked = sorted(distinct.values(), key=lambda b: b.value, reverse=True)  # stable: ties keep pool order
    return ranked[:width]


def beam_search(
    generator: Generator,
    values_of: ValuesOf,
    prompts: Sequence[str],
    settings: BeamSettings,
    temperature: float = 1.0,
    seed: int = 0,
    delimiter: str = DEFAULT_DELIMITER,
    on_round: Callable[[int, int], None] | None = None,
) -> list[Choice]:
    """A step-level beam search for every prompt at once (one generate call per round for all live beams);
    `on_round(round, live beams)` after each round. Each problem's choice is its best finished beam (the best
    unfinished one when none finished within `max_steps`)."""
    beams = [[_Beam()] for _ in prompts]
    for round_ in range(settings.max_steps):
        live = [(i, beam) for i, kept in enumerate(beams) for beam in kept if not beam.finished]
        if not live:
            break
        params = SamplingParams(
            n=settings.expand,
            temperature=temperature,
            max_new_tokens=settings.step_tokens,
            seed=seed + BEAM_SEED_STRIDE * round_,
            one_step=True,
            delimiter=delimiter,
        )
        steps = generator.generate([prompts[i] + join_steps(beam.steps) for i, beam in live], params)
        grown = [
            (i, _extend(b, step, delimiter)) for (i, b), sampled in zip(live, steps, strict=True) for step in sampled
        ]
        for (_, beam), values in zip(grown, values_of([(prompts[i], b.steps) for i, b in grown]), strict=True):
            beam.value = values[-1]  # V(s_T): the critic's value of the extended prefix
        pools: list[list[_Beam]] = [[b for b in kept if b.finished] for kept in beams]
        for i, beam in grown:
            pools[i].append(beam)
        beams = [_keep_best(pool, settings.beams) for pool in pools]
        if on_round is not None:
            on_round(round_ + 1, len(live))
    return [_final_choice(kept) for kept in beams]


def _final_choice(kept: Sequence[_Beam]) -> Choice:
    finished = [beam for beam in kept if beam.finished] or list(kept)
    values = [beam.value for beam in finished]
    return Choice([join_steps(beam.steps) for beam in finished], values, best_index(values))


def choose_for_all(
    select: SampleSelect,
    sampled: EvalResult,
    task: Task,
    values_of: ValuesOf | None,
    reduce: Reduce = "last",
    delimiter: str = DEFAULT_DELIMITER,
) -> list[Choice]:
    """Each problem's choice among its sampled responses (`sampled.responses`): votes read the task's final
    answers (`AnswerKeyed`), the critic's rules run `values_of` once over every response."""
    values: list[list[float]] | None = None
    if select != "majority_vote":
        if values_of is None:
            raise ValueError(f"{select} needs a critic")
        values = candidate_values(values_of, sampled.prompts, sampled.responses, reduce, delimiter)
    answers: list[list[str | None]] | None = None
    if select != "best_of_n":
        if not isinstance(task, AnswerKeyed):
            raise ValueError(f"{select} votes on final answers; task {task.name!r} has none (use best_of_n or beam)")
        answers = [[task.answer_key(r) for r in rs] for rs in sampled.responses]
    choices = []
    for i, responses in enumerate(sampled.responses):
        vals = None if values is None else values[i]
        chosen = choose_among_samples(select, responses, vals, None if answers is None else answers[i])
        choices.append(Choice(list(responses), vals or [], chosen))
    return choices


def chosen_result(sampled: EvalResult, choices: Sequence[Choice]) -> EvalResult:
    """`sampled` as if each problem had been answered once, with its chosen response."""
    scores = [[sampled.sample_scores[i][choice.chosen]] for i, choice in enumerate(choices)]
    return replace(sampled, sample_scores=scores, responses=[[choice.response] for choice in choices])


def beam_result(
    choices: Sequence[Choice], task: Task, examples: Sequence[Example], prompts: Sequence[str], split: str, start: float
) -> EvalResult:
    """The beam search's chosen responses scored by the task, as an `EvalResult` (seconds since `start`)."""
    responses = [[choice.response] for choice in choices]
    scores = score_responses(task, examples, responses)
    ids = [str(ex.get("id", i)) for i, ex in enumerate(examples)]
    return EvalResult(task.name, split, scores, time.perf_counter() - start, ids, responses, list(prompts))

"""Stage A's state roll-outs: MC rollouts from every state of the kept solutions, and the values they give.

`rollout_states` rolls out a shard's states in one `generate` call; `rollout_states_in_waves` goes step index by
step index, so that rollouts through a solution's own step can count for the next state (`reuse_rollouts`,
`dapo.stages.rollout_reuse`; the ones the token cap cut off are resumed up to the cap of a fresh rollout from
the next state, which keeps the estimate unbiased) and a state's rollouts can stop once its value is
known well enough (`adaptive_width`). Both return the state rows (`states` records) with their completions and
rewards. The sampling of solutions and the shards around them are in `dapo.stages.mc_rollouts`.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dapo.core.stats import wilson_ci95
from dapo.core.steps import join_steps, state_text
from dapo.generation.protocol import Generator, SamplingParams, is_truncated
from dapo.stages.rollout_config import RolloutConfig
from dapo.stages.rollout_reuse import continuations_through, resume_budgets, resumed
from dapo.stages.shards import derive_seed
from dapo.tasks.base import Example, Task
from dapo.tasks.grading import score_responses


@dataclass
class Problem:
    id: str
    prompt: str
    example: Example


@dataclass
class Solution:
    solution_id: str
    problem: Problem
    steps: list[str]
    reward: float
    truncated: bool

    @property
    def states_with_rollouts(self) -> int:
        """t = 0..T-1, and t = T too when the token limit, not the policy, ended the solution."""
        return len(self.steps) + self.truncated


@dataclass
class GradingClock:
    """Wall seconds spent grading, summed over the `measure` blocks: Stage A reports them so a slow grader (sandboxed
    code tests) shows beside the generation time."""

    seconds: float = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def mc_value(rewards: Sequence[float]) -> float:
    """Monte-Carlo value of a state: the mean reward of its rollouts (fraction correct for 0/1 rewards)."""
    if not rewards:
        raise ValueError("mc_value needs at least one rollout reward")
    return sum(rewards) / len(rewards)


def finished_scores(
    task: Task, examples: Sequence[Example], texts: Sequence[Sequence[str]], completions: Sequence[Sequence[str]]
) -> list[list[float]]:
    """`score_responses` of `texts`, (problems, samples), with 0 where the completion (generator output) that
    ends the text was cut off by the token limit: an unfinished response is a failed one."""
    scores = score_responses(task, examples, texts)
    return [
        [0.0 if is_truncated(c) else score for score, c in zip(row, cs, strict=True)]
        for row, cs in zip(scores, completions, strict=True)
    ]


Rollouts = dict[tuple[int, int], tuple[list[str], list[float]]]
"""(solution index, t) -> that state's completions and their rewards."""


def rollout_states(
    index: int,
    solutions: Sequence[Solution],
    config: RolloutConfig,
    generator: Generator,
    task: Task,
    grading: GradingClock,
) -> tuple[list[dict[str, Any]], int]:
    """State rows of every kept solution, t = 0..T, and 0 rollouts reused; all rollouts of the shard come from one
    `generate` call."""
    states = [(i, t) for i, s in enumerate(solutions) for t in range(s.states_with_rollouts)]
    seed = derive_seed(config.seed, index, "rollout")
    outputs, rewards = _sample_rollouts(solutions, states, config, config.n_rollouts, seed, generator, task, grading)
    rolled = dict(zip(states, zip(outputs, rewards, strict=True), strict=True))
    return _state_rows(solutions, rolled), 0


def rollout_states_in_waves(
    index: int,
    solutions: Sequence[Solution],
    config: RolloutConfig,
    generator: Generator,
    task: Task,
    grading: GradingClock,
) -> tuple[list[dict[str, Any]], int]:
    """`rollout_states` step index by step index, for rollout reuse and adaptive allocation. A state's completions
    are first those of the previous state that went through the solution's own step (`reuse_rollouts`; at most
    `n_rollouts`, in generation order; the cut-off ones resumed by `_resume_cut_off`), then fresh ones up to its
    goal: `n_rollouts`, or with `adaptive_width` `adaptive_min_rollouts`, raised by that many while its Wilson
    interval is wider than `adaptive_width`. Fresh ones come from one `generate` call per step index, round and
    missing count. Returns the rows and the number of rollouts reused."""
    n, width = config.n_rollouts, config.adaptive_width
    adaptive = width is not None
    rolled: Rollouts = {}
    carried: dict[int, tuple[list[str], list[float]]] = {}  # solution -> completions through its step t - 1
    reused_total = 0
    for t in range(max((s.states_with_rollouts for s in solutions), default=0)):
        live = [i for i, s in enumerate(solutions) if t < s.states_with_rollouts]
        for i in live:
            texts, rewards = carried.pop(i, ([], []))
            rolled[i, t] = texts[:n], rewards[:n]
            reused_total += len(rolled[i, t][0])
        _resume_cut_off(index, t, solutions, {i: rolled[i, t] for i in live}, config, generator, task, grading)
        goal = dict.fromkeys(live, config.adaptive_min_rollouts if adaptive else n)
        for round_ in itertools.count():
            missing_of = {i: goal[i] - len(rolled[i, t][0]) for i in live}
            for missing in sorted({m for m in missing_of.values() if m > 0}):
                group = [(i, t) for i in live if missing_of[i] == missing]
                phase = f"rollout/t{t}/n{missing}" if round_ == 0 else f"rollout/t{t}/r{round_}/n{missing}"
                seed = derive_seed(config.seed, index, phase)
                outputs, scores = _sample_rollouts(solutions, group, config, missing, seed, generator, task, grading)
                for state, fresh, fresh_rewards in zip(group, outputs, scores, strict=True):
                    rolled[state][0].extend(fresh)
                    rolled[state][1].extend(fresh_rewards)
            wide = [
                i for i in live if width is not None and len(rolled[i, t][1]) < n and _too_wide(rolled[i, t][1], width)
            ]
            if not wide:
                break
            for i in wide:
                goal[i] = min(n, len(rolled[i, t][1]) + config.adaptive_min_rollouts)
        for i in live:
            if t + 1 < solutions[i].states_with_rollouts and config.reuse_rollouts:
                carried[i] = continuations_through(solutions[i].steps[t], *rolled[i, t], config.delimiter)
    return _state_rows(solutions, rolled), reused_total


def _resume_cut_off(
    index: int,
    t: int,
    solutions: Sequence[Solution],
    reused: dict[int, tuple[list[str], list[float]]],
    config: RolloutConfig,
    generator: Generator,
    task: Task,
    grading: GradingClock,
) -> None:
    """Resumes, in place, the cut-off completions that the states (i, t) took over from (i, t - 1): each continued
    with the tokens it has left of `max_new_tokens` (why: `dapo.stages.rollout_reuse`), one `generate` call per
    budget, one continuation each. Nothing is generated or counted when none was cut off."""
    cut = [(i, k) for i, (texts, _) in reused.items() for k, text in enumerate(texts) if is_truncated(text)]
    if not cut:
        return
    used = generator.count_tokens([reused[i][0][k] for i, k in cut])
    for budget, group in sorted(resume_budgets(cut, used, config.max_new_tokens).items()):
        seed = derive_seed(config.seed, index, f"resume/t{t}/b{budget}")
        params = replace(sampling_params(config, 1, seed), max_new_tokens=budget)
        _resume_group(t, solutions, reused, group, params, generator, task, grading)


def _resume_group(
    t: int,
    solutions: Sequence[Solution],
    reused: dict[int, tuple[list[str], list[float]]],
    group: Sequence[tuple[int, int]],
    params: SamplingParams,
    generator: Generator,
    task: Task,
    grading: GradingClock,
) -> None:
    """Completion k of state (i, t), for each (i, k) of `group`, extended from s_t + its text with `params` (n = 1,
    the group's budget), and its reward graded on the whole response, as `_sample_rollouts` grades."""
    partials = [reused[i][0][k] for i, k in group]
    states = [state_text(solutions[i].problem.prompt, solutions[i].steps, t) for i, _ in group]
    prompts = [state + partial for state, partial in zip(states, partials, strict=True)]
    outputs = generate_checked(generator, prompts, params)
    texts = [resumed(partial, out[0]) for partial, out in zip(partials, outputs, strict=True)]
    full = [[join_steps(solutions[i].steps[:t]) + text] for (i, _), text in zip(group, texts, strict=True)]
    with grading.measure():
        scores = finished_scores(task, [solutions[i].problem.example for i, _ in group], full, [[c] for c in texts])
    for (i, k), text, [reward] in zip(group, texts, scores, strict=True):
        reused[i][0][k], reused[i][1][k] = text, reward


def _too_wide(rewards: Sequence[float], width: float) -> bool:
    """Whether the Wilson 95% interval of a state's value (rewards counted as successes) is wider than `width`."""
    low, high = wilson_ci95(round(sum(rewards)), len(rewards))
    return high - low > width


def _sample_rollouts(
    solutions: Sequence[Solution],
    states: Sequence[tuple[int, int]],
    config: RolloutConfig,
    n: int,
    seed: int,
    generator: Generator,
    task: Task,
    grading: GradingClock,
) -> tuple[list[list[str]], list[list[float]]]:
    """`n` completions of each (solution index, t) state from one `generate` call, and their rewards."""
    if not states:
        return [], []
    chosen = [(solutions[i], t) for i, t in states]
    outputs = generate_checked(
        generator, [state_text(s.problem.prompt, s.steps, t) for s, t in chosen], sampling_params(config, n, seed)
    )
    full = [[join_steps(s.steps[:t]) + c for c in cs] for (s, t), cs in zip(chosen, outputs, strict=True)]
    with grading.measure():
        rewards = finished_scores(task, [s.problem.example for s, _ in chosen], full, outputs)
    return outputs, rewards


def _state_rows(solutions: Sequence[Solution], rolled: Rollouts) -> list[dict[str, Any]]:
    """Every kept solution's state rows, t = 0..T: MC values from `rolled`, the terminal state its own reward."""
    rows = []
    for i, s in enumerate(solutions):
        for t in range(s.states_with_rollouts):
            completions, rewards = rolled[i, t]
            rows.append(_state_row(s, t, mc_value(rewards), completions, rewards))
        if not s.truncated:
            rows.append(_state_row(s, len(s.steps), s.reward, [], []))
    return rows


def _state_row(s: Solution, t: int, value: float, completions: list[str], rewards: list[float]) -> dict[str, Any]:
    return {
        "state_id": f"{s.solution_id}/t{t}",
        "problem_id": s.problem.id,
        "solution_id": s.solution_id,
        "t": t,
        "prompt": s.problem.prompt,
        "steps": s.steps,
        "mc_value": value,
        "n_rollouts": len(completions),
        "completions": completions,
        "completion_rewards": rewards,
        "completion_truncated": [is_truncated(c) for c in completions],  # cut off by max_new_tokens
    }


def sampling_params(config: RolloutConfig, n: int, seed: int) -> SamplingParams:
    return SamplingParams(
        n=n, temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens, seed=seed
    )


def generate_checked(generator: Generator, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
    """`generator.generate`, checked to return `params.n` continuations for each prompt."""
    outputs = generator.generate(prompts, params)
    if len(outputs) != len(prompts) or any(len(o) != params.n for o in outputs):
        shape = [len(o) for o in outputs]
        raise RuntimeError(
            f"generator returned {shape} continuations for {len(prompts)} prompts; expected {params.n} each"
        )
    return outputs

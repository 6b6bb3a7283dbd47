"""Stage A data: sample solutions, keep a balanced few, and estimate every state's value by MC rollouts.

For each problem the policy samples `n_samples` solutions; blank responses and exact duplicates are dropped, the
rest are graded with the task's pure `score`, and `n_keep` are kept, as balanced between correct and wrong as
possible. Every state s_t = prompt + steps[:t] (t < T) of a kept solution gets `n_rollouts` completions from the
same policy; its MC value is the fraction graded correct (soft: 3 of 4 is 0.75). The terminal state t = T carries
the solution's own reward with no rollouts. Completions are stored: Stage B takes candidate actions from them.

A response that `max_new_tokens` cut off (the generator says so: `Completion.truncated`) did not finish: it scores
0 whatever its text, as a sample or as a rollout. A cut-off sample kept as a (wrong) solution keeps only its whole
steps and has no terminal state: every state t = 0..T of it gets rollouts, and `truncated` marks it.

Work goes shard by shard (`problems_per_shard` problems): solutions, then states, each written atomically with
provenance. A shard is finished iff its states folder exists, so a killed run resumes where it stopped, with
neither lost nor duplicated records; a finished shard is checked against the current config and policy hash.

`reuse_rollouts` counts a rollout from s_t that took the solution's own step a_t as one of s_{t+1}'s too, and
samples only the rest (`dapo.stages.rollout_reuse` says why the estimate stays unbiased). `adaptive_width` stops
adding rollouts to a state once its Wilson interval is narrow enough (fewer tokens, at a small bias).

Left out: the CLI (`dapo rollout` wires a generator to `run_rollouts`), generation itself (any `Generator`), and
sharing rollouts between identical states of different solutions (every state gets its own estimate, as in the
paper). One run per `out_dir` at a time: stale temp folders there are removed on start.

    config = RolloutConfig(problems_path="data/problems", out_dir="data/rollouts")
    run_rollouts(config, HFGenerator.from_pretrained(policy), ArithTask(), policy, policy_fingerprint(policy))
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from tqdm.auto import tqdm

from dapo.core.stats import wilson_ci95
from dapo.core.steps import DEFAULT_DELIMITER, join_steps, split_steps, state_text, whole_steps
from dapo.generation.protocol import Generator, SamplingParams, is_truncated
from dapo.records import Provenance, RecordError, SkipCounter, read_records, write_json, write_records
from dapo.stages.rollout_reuse import continuations_through
from dapo.stages.shards import derive_seed, finished_shards, shard_dir
from dapo.tasks.base import Example, Task
from dapo.tasks.grading import score_responses

PRODUCER = "dapo rollout"
CORRECT_THRESHOLD = 0.5  # a reward above this counts as a correct solution when balancing


@dataclass
class RolloutConfig:
    """Stage A: solution sampling and MC rollouts (defaults from the paper)."""

    problems_path: str = ""
    """Folder of `problems` records to roll out."""
    out_dir: str = ""
    """Output folder: `solutions/` and `states/` (one `shard-NNNNN` per shard) and `summary.json`."""
    n_samples: int = 32
    """Solutions sampled per problem."""
    n_keep: int = 6
    """Solutions kept per problem, balanced between correct and wrong."""
    n_rollouts: int = 16
    """Completions sampled from every non-terminal state to estimate its value."""
    temperature: float = 1.0
    """Sampling temperature for solutions and rollouts."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    max_new_tokens: int = 256
    """Cap on generated tokens per solution or completion."""
    delimiter: str = DEFAULT_DELIMITER
    """Step delimiter used to split solutions into steps."""
    problems_per_shard: int = 16
    """Problems per shard: the unit of writing and of resuming."""
    seed: int = 0
    """Base seed; each shard derives its sampling seeds from it, so a resumed run equals an uninterrupted one."""
    limit: int | None = None
    """Use only the first `limit` problems (None = all)."""
    strict: bool = True
    """Raise on a malformed problem (empty prompt, repeated id, bad `example` JSON); False: skip it and report."""
    reuse_rollouts: bool = False
    """Count a rollout from s_t whose first step is the solution's own next step as a rollout from s_{t+1} too, and
    sample only the rest of s_{t+1}'s `n_rollouts` (unbiased: `dapo.stages.rollout_reuse`). States are then rolled
    out one step index at a time, a `generate` call per index and count, instead of one call per shard."""
    adaptive_width: float | None = None
    """Stop adding rollouts to a state once the Wilson 95% interval of its value is narrower than this (at most
    `n_rollouts`, in chunks of `adaptive_min_rollouts`); None: every state gets `n_rollouts`. Unlike reuse this is not
    unbiased: when to stop depends on the outcomes seen (the size of the bias is measured in
    tests/test_rollout_reuse.py)."""
    adaptive_min_rollouts: int = 4
    """With `adaptive_width`: rollouts every state gets first, and the chunk added while its interval is too wide."""

    def __post_init__(self) -> None:
        for name in ("n_samples", "n_keep", "n_rollouts", "max_new_tokens", "problems_per_shard"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_keep > self.n_samples:
            raise ValueError(f"n_keep ({self.n_keep}) must be <= n_samples ({self.n_samples})")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.delimiter:
            raise ValueError("delimiter must be a non-empty string")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if self.adaptive_width is not None and not 0 < self.adaptive_width <= 1:
            raise ValueError(f"adaptive_width must be in (0, 1] or None, got {self.adaptive_width}")
        if self.adaptive_width is not None and not 1 <= self.adaptive_min_rollouts <= self.n_rollouts:
            raise ValueError(
                f"adaptive_min_rollouts must be in 1..n_rollouts ({self.n_rollouts}), got {self.adaptive_min_rollouts}"
            )


@dataclass
class ShardWork:
    """What one process did in a `roll_out_shards` call (several processes each report one)."""

    shards_written: int
    """Shards generated by this call."""
    shards_skipped: int
    """Shards already finished by an earlier call."""
    empty_dropped: int
    """Blank responses dropped by this call."""
    duplicates_dropped: int
    """Responses dropped by this call as exact repeats of an earlier sample of the same problem."""
    truncated_sampled: int
    """Sampled responses of this call that `max_new_tokens` cut off (kept like any other, as failures)."""
    seconds: float
    """Wall time of this call."""
    tokens_generated: int
    """Tokens generated by this call (from `generator.tokens_generated`)."""
    tokens_sampling: int
    """Of those, the tokens of the sampled solutions (the rest are MC rollouts)."""
    grading_seconds: float
    """Of `seconds`, the time spent grading (for code tasks: waiting on sandboxed test runs), during which the
    generator is idle."""
    rollouts_reused: int
    """Rollouts counted for a state without being sampled from it (`reuse_rollouts`)."""


@dataclass
class RolloutSummary(ShardWork):
    """What a Stage A run did (every process's `ShardWork` merged) with the totals on disk; also written to
    `out_dir/summary.json`."""

    problems: int
    """Problems in the run (after `limit`)."""
    solutions: int
    """Kept solutions on disk, over all shards."""
    states: int
    """States on disk, over all shards (terminal states included)."""


@dataclass
class _Problem:
    id: str
    prompt: str
    example: Example


@dataclass
class _Solution:
    solution_id: str
    problem: _Problem
    steps: list[str]
    reward: float
    truncated: bool

    @property
    def states_with_rollouts(self) -> int:
        """t = 0..T-1, and t = T too when the token limit, not the policy, ended the solution."""
        return len(self.steps) + self.truncated


def keep_balanced(rewards: Sequence[float], n_keep: int, rng: random.Random) -> list[int]:
    """Indices (ascending) of `n_keep` responses, half correct (reward > 0.5) and half wrong where possible.

    A short side is filled from the other; an odd `n_keep` gives the extra one to the wrong side. Which indices
    of a side are taken is drawn from `rng`, so the choice is deterministic given its state.
    """
    # e.g. rewards [1, 0, 0, 1, 0, 0, 0, 0], n_keep 4: correct = [0, 3], wrong = [1, 2, 4, 5, 6, 7] -> 2 correct
    # and 2 wrong, say [0, 3] + [2, 6] -> [0, 2, 3, 6]. With one correct ([1, 0, 0, 0, 0, 0, 0, 0]) the wrong
    # side takes the place left: 1 correct + 3 wrong. With none correct: 4 wrong.
    correct = [i for i, r in enumerate(rewards) if r > CORRECT_THRESHOLD]
    wrong = [i for i, r in enumerate(rewards) if r <= CORRECT_THRESHOLD]
    n_correct = min(len(correct), n_keep // 2)
    n_wrong = min(len(wrong), n_keep - n_correct)
    n_correct = min(len(correct), n_keep - n_wrong)
    return sorted(rng.sample(correct, n_correct) + rng.sample(wrong, n_wrong))


def mc_value(rewards: Sequence[float]) -> float:
    """Monte-Carlo value of a state: the mean reward of its rollouts (fraction correct for 0/1 rewards)."""
    if not rewards:
        raise ValueError("mc_value needs at least one rollout reward")
    return sum(rewards) / len(rewards)


def load_problems(config: RolloutConfig, task: Task) -> list[_Problem]:
    """The first `config.limit` problems of `config.problems_path`, checked to belong to `task`."""
    dataset = read_records(config.problems_path, "problems", config.strict)
    if config.limit is not None:
        dataset = dataset.select(range(min(config.limit, dataset.num_rows)))
    if dataset.num_rows == 0:
        raise ValueError(f"{config.problems_path}: the problems dataset is empty")
    other_tasks = sorted(set(dataset["task"]) - {task.name})
    if other_tasks:
        raise ValueError(
            f"{config.problems_path}: problems of task(s) {other_tasks}, but the rollout task is {task.name!r}"
        )
    skipped, problems = SkipCounter(), []
    for row in dataset:
        try:
            problems.append(_parse_problem(row, config.problems_path))
        except RecordError as error:
            skipped.skip_or_raise(config.strict, str(error), "bad example JSON")
    skipped.report(f"problems of {config.problems_path}")
    return problems


def _parse_problem(row: Mapping[str, Any], where: str) -> _Problem:
    try:
        example = json.loads(row["example"])
    except json.JSONDecodeError as error:
        raise RecordError(f"{where}: problem {row['id']!r}, field 'example' is not valid JSON: {error}") from error
    if not isinstance(example, dict):
        raise RecordError(f"{where}: problem {row['id']!r}, field 'example' is not a JSON object")
    return _Problem(row["id"], row["prompt"], example)


def run_rollouts(
    config: RolloutConfig, generator: Generator, task: Task, policy_path: str = "", policy_hash: str = ""
) -> RolloutSummary:
    """Stage A over `config.problems_path`, shard by shard, resuming a killed run in the same `out_dir`."""
    work = roll_out_shards(config, generator, task, policy_path, policy_hash)
    return write_summary(config, task, [work])


def roll_out_shards(
    config: RolloutConfig,
    generator: Generator,
    task: Task,
    policy_path: str = "",
    policy_hash: str = "",
    rank: int = 0,
    world_size: int = 1,
) -> ShardWork:
    """This process's unfinished shards (shard i belongs to rank i % world_size), each written when done.

    A shard's output depends only on its problems, the config and the policy (its seeds derive from the shard
    index), so any number of processes writes the same records as one. Call `write_summary` once all are done."""
    for name in ("problems_path", "out_dir"):
        if not getattr(config, name):
            raise ValueError(f"rollout.{name} is required")
    start, tokens_before = time.perf_counter(), generator.tokens_generated
    problems = load_problems(config, task)
    out = Path(config.out_dir)
    size = config.problems_per_shard
    shards = [problems[i : i + size] for i in range(0, len(problems), size)]
    mine = [i for i in range(len(shards)) if i % world_size == rank]
    finished = finished_shards(out, mine, asdict(config), policy_hash, asdict(RolloutConfig()))
    provenance = {"seed": config.seed, "config": asdict(config)}
    provenance |= {"policy_path": policy_path or None, "policy_hash": policy_hash or None}
    counts, sampled, grading = SampleCounts(0, 0, 0), 0, GradingClock()
    total, done = sum(len(shards[i]) for i in mine), sum(len(shards[i]) for i in finished)
    desc = "rollouts" if world_size == 1 else f"rollouts (rank {rank} of {world_size})"
    with tqdm(total=total, initial=done, unit="problem", desc=desc, dynamic_ncols=True, position=rank) as bar:
        for i in mine:
            if i in finished:
                continue
            shard_counts, shard_sampled = _run_shard(i, shards[i], config, generator, task, provenance, grading)
            counts, sampled = counts.plus(shard_counts), sampled + shard_sampled
            bar.update(len(shards[i]))
            rate = (generator.tokens_generated - tokens_before) / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{rate:.1f} tok/s")
    return ShardWork(
        shards_written=len(mine) - len(finished),
        shards_skipped=len(finished),
        empty_dropped=counts.empty,
        duplicates_dropped=counts.duplicates,
        truncated_sampled=counts.truncated,
        seconds=time.perf_counter() - start,
        tokens_generated=generator.tokens_generated - tokens_before,
        tokens_sampling=sampled,
        grading_seconds=grading.seconds,
        rollouts_reused=counts.reused,
    )


def write_summary(config: RolloutConfig, task: Task, works: Sequence[ShardWork]) -> RolloutSummary:
    """Merge every process's `ShardWork` with the record counts on disk into `out_dir/summary.json`, the mark of a
    finished Stage A (wall time: the slowest process)."""
    out = Path(config.out_dir)
    summary = RolloutSummary(
        problems=len(load_problems(config, task)),
        solutions=read_records(out / "solutions", "solutions").num_rows,
        states=read_records(out / "states", "states").num_rows,
        shards_written=sum(w.shards_written for w in works),
        shards_skipped=sum(w.shards_skipped for w in works),
        empty_dropped=sum(w.empty_dropped for w in works),
        duplicates_dropped=sum(w.duplicates_dropped for w in works),
        truncated_sampled=sum(w.truncated_sampled for w in works),
        seconds=max(w.seconds for w in works),
        tokens_generated=sum(w.tokens_generated for w in works),
        tokens_sampling=sum(w.tokens_sampling for w in works),
        grading_seconds=max(w.grading_seconds for w in works),
        rollouts_reused=sum(w.rollouts_reused for w in works),
    )
    write_json(out / "summary.json", asdict(summary))
    return summary


def _run_shard(
    index: int,
    problems: Sequence[_Problem],
    config: RolloutConfig,
    generator: Generator,
    task: Task,
    provenance: dict[str, Any],
    grading: GradingClock,
) -> tuple[SampleCounts, int]:
    """Sample, keep, roll out and write one shard; returns the counts of dropped and cut-off samples, and the tokens
    generated while sampling (grading time goes to `grading`)."""
    before = generator.tokens_generated
    solutions, counts = _sample_solutions(index, problems, config, generator, task, grading)
    sampled = generator.tokens_generated - before
    in_waves = config.reuse_rollouts or config.adaptive_width is not None
    roll_out = _rollout_states_in_waves if in_waves else _rollout_states
    states, reused = roll_out(index, solutions, config, generator, task, grading)
    solution_rows = [
        {
            "solution_id": s.solution_id,
            "problem_id": s.problem.id,
            "prompt": s.problem.prompt,
            "steps": s.steps,
            "reward": s.reward,
            "truncated": s.truncated,
        }
        for s in solutions
    ]
    out = Path(config.out_dir)
    write_records(solution_rows, shard_dir(out, "solutions", index), "solutions", Provenance(PRODUCER, **provenance))
    write_records(states, shard_dir(out, "states", index), "states", Provenance(PRODUCER, **provenance))
    return counts._replace(reused=reused), sampled


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


class SampleCounts(NamedTuple):
    """Sampled responses dropped (blank, repeated) and cut off by `max_new_tokens`."""

    empty: int
    duplicates: int
    truncated: int
    reused: int = 0
    """Rollouts reused from the previous state (`reuse_rollouts`)."""

    def plus(self, other: SampleCounts) -> SampleCounts:
        return SampleCounts(*(a + b for a, b in zip(self, other, strict=True)))


def _sample_solutions(
    index: int,
    problems: Sequence[_Problem],
    config: RolloutConfig,
    generator: Generator,
    task: Task,
    grading: GradingClock,
) -> tuple[list[_Solution], SampleCounts]:
    """`n_keep` balanced, graded solutions per problem, and the counts of samples dropped and cut off."""
    params = _params(config, config.n_samples, derive_seed(config.seed, index, "sample"))
    outputs = _generate(generator, [p.prompt for p in problems], params)
    rng = random.Random(derive_seed(config.seed, index, "keep"))
    solutions: list[_Solution] = []
    nonblank = [[r for r in responses if r.strip()] for responses in outputs]
    uniques = [list(dict.fromkeys(rs)) for rs in nonblank]
    empty = sum(len(rs) for rs in outputs) - sum(len(rs) for rs in nonblank)
    duplicates = sum(len(rs) for rs in nonblank) - sum(len(rs) for rs in uniques)
    truncated = sum(is_truncated(r) for rs in outputs for r in rs)
    with grading.measure():
        all_rewards = finished_scores(task, [p.example for p in problems], uniques, uniques)
    for problem, unique, rewards in zip(problems, uniques, all_rewards, strict=True):
        for k, i in enumerate(keep_balanced(rewards, config.n_keep, rng)):
            cut = is_truncated(unique[i])
            steps = whole_steps(unique[i], config.delimiter) if cut else split_steps(unique[i], config.delimiter)
            solutions.append(_Solution(f"{problem.id}/s{k}", problem, steps, rewards[i], cut))
    return solutions, SampleCounts(empty, duplicates, truncated)


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


def _rollout_states(
    index: int,
    solutions: Sequence[_Solution],
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


def _rollout_states_in_waves(
    index: int,
    solutions: Sequence[_Solution],
    config: RolloutConfig,
    generator: Generator,
    task: Task,
    grading: GradingClock,
) -> tuple[list[dict[str, Any]], int]:
    """`_rollout_states` step index by step index, for rollout reuse and adaptive allocation. A state's completions
    are first those of the previous state that went through the solution's own step (`reuse_rollouts`; at most
    `n_rollouts`, in generation order), then fresh ones up to its goal: `n_rollouts`, or with `adaptive_width`
    `adaptive_min_rollouts`, raised by that many while its Wilson interval is wider than `adaptive_width`. Fresh
    ones come from one `generate` call per step index, round and missing count. Returns the rows and the number of
    rollouts reused."""
    n, adaptive = config.n_rollouts, config.adaptive_width is not None
    rolled: Rollouts = {}
    carried: dict[int, tuple[list[str], list[float]]] = {}  # solution -> completions through its step t - 1
    reused_total = 0
    for t in range(max((s.states_with_rollouts for s in solutions), default=0)):
        live = [i for i, s in enumerate(solutions) if t < s.states_with_rollouts]
        for i in live:
            texts, rewards = carried.pop(i, ([], []))
            rolled[i, t] = texts[:n], rewards[:n]
            reused_total += len(rolled[i, t][0])
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
            wide = [i for i in live if adaptive and len(rolled[i, t][1]) < n and _too_wide(rolled[i, t][1], config)]
            if not wide:
                break
            for i in wide:
                goal[i] = min(n, len(rolled[i, t][1]) + config.adaptive_min_rollouts)
        for i in live:
            if t + 1 < solutions[i].states_with_rollouts and config.reuse_rollouts:
                carried[i] = continuations_through(solutions[i].steps[t], *rolled[i, t], config.delimiter)
    return _state_rows(solutions, rolled), reused_total


def _too_wide(rewards: Sequence[float], config: RolloutConfig) -> bool:
    """Whether the Wilson 95% interval of a state's value (rewards counted as successes) is wider than
    `adaptive_width`."""
    low, high = wilson_ci95(round(sum(rewards)), len(rewards))
    return high - low > (config.adaptive_width or 1.0)


def _sample_rollouts(
    solutions: Sequence[_Solution],
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
    outputs = _generate(
        generator, [state_text(s.problem.prompt, s.steps, t) for s, t in chosen], _params(config, n, seed)
    )
    full = [[join_steps(s.steps[:t]) + c for c in cs] for (s, t), cs in zip(chosen, outputs, strict=True)]
    with grading.measure():
        rewards = finished_scores(task, [s.problem.example for s, _ in chosen], full, outputs)
    return outputs, rewards


def _state_rows(solutions: Sequence[_Solution], rolled: Rollouts) -> list[dict[str, Any]]:
    """Every kept solution's state rows, t = 0..T: MC values from `rolled`, the terminal state its own reward."""
    rows = []
    for i, s in enumerate(solutions):
        for t in range(s.states_with_rollouts):
            completions, rewards = rolled[i, t]
            rows.append(_state_row(s, t, mc_value(rewards), completions, rewards))
        if not s.truncated:
            rows.append(_state_row(s, len(s.steps), s.reward, [], []))
    return rows


def _state_row(s: _Solution, t: int, value: float, completions: list[str], rewards: list[float]) -> dict[str, Any]:
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


def _params(config: RolloutConfig, n: int, seed: int) -> SamplingParams:
    return SamplingParams(
        n=n, temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens, seed=seed
    )


def _generate(generator: Generator, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
    """`generator.generate`, checked to return `params.n` continuations for each prompt."""
    outputs = generator.generate(prompts, params)
    if len(outputs) != len(prompts) or any(len(o) != params.n for o in outputs):
        shape = [len(o) for o in outputs]
        raise RuntimeError(
            f"generator returned {shape} continuations for {len(prompts)} prompts; expected {params.n} each"
        )
    return outputs

"""Rollout reuse (`RolloutConfig.reuse_rollouts`): a rollout from s_t that took the solution's own step a_t counts
for s_{t+1} too. Checked for unbiasedness on a policy whose state values are known exactly, and shown able to fail:
the same check catches a reuse that keeps rollouts by their reward.

The coin world: a response is three steps, each "a\\n" with probability 0.6 or "b\\n", then "done"; it is correct
iff it has at least two "a" steps. From a state with t steps of which k are "a", V = P(Binomial(3 - t, 0.6) >= 2 - k).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import pytest

from dapo.generation.protocol import Completion, SamplingParams, is_truncated
from dapo.records.store import PROVENANCE_FILE, Provenance
from dapo.stages import state_rollouts
from dapo.stages.rollout_config import RolloutConfig
from dapo.stages.rollout_reuse import continuations_through
from dapo.stages.shards import check_resumable
from dapo.stages.state_rollouts import GradingClock, Problem, Solution, rollout_states_in_waves

P_A, STEPS = 0.6, 3


class CoinTask:
    def prompt(self, example: Any) -> str:
        return "P:\n"

    def score(self, example: Any, response: str) -> float:
        return float(response.count("a\n") >= 2)


class CoinPolicy:
    """Finishes a state: the missing steps drawn with P_A, then "done"; seeded by (call seed, prompt, sample)."""

    def __init__(self) -> None:
        self.tokens_generated = 0

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        out = []
        for p, prompt in enumerate(prompts):
            done = prompt.count("\n") - 1
            rows = []
            for j in range(params.n):
                rng = random.Random(f"{params.seed}/{p}/{prompt}/{j}")
                rows.append("".join("a\n" if rng.random() < P_A else "b\n" for _ in range(STEPS - done)) + "done")
            self.tokens_generated += sum(len(r) for r in rows)
            out.append(rows)
        return out


def exact_value(steps: Sequence[str]) -> float:
    left, need = STEPS - len(steps), 2 - sum(s == "a\n" for s in steps)
    return sum(math.comb(left, i) * P_A**i * (1 - P_A) ** (left - i) for i in range(max(need, 0), left + 1))


SOLUTIONS = [["a\n", "b\n", "a\n", "done"], ["b\n", "b\n", "a\n", "done"], ["a\n", "a\n", "b\n", "done"]]


def _estimates(repeats: int, n_rollouts: int = 4, **options: Any) -> tuple[dict[str, list[float]], int, int]:
    """Every state's MC values over `repeats` shards, with the rollouts reused and those generated."""
    problem = Problem("p0", "P:\n", {})
    solutions = [Solution(f"p0/s{k}", problem, list(steps), 1.0, False) for k, steps in enumerate(SOLUTIONS)]
    config = RolloutConfig(n_rollouts=n_rollouts, seed=7, **({"reuse_rollouts": True} | options))
    policy, values, reused = CoinPolicy(), {}, 0
    for shard in range(repeats):
        rows, shard_reused = rollout_states_in_waves(shard, solutions, config, policy, CoinTask(), GradingClock())
        reused += shard_reused
        for row in rows:
            if row["n_rollouts"]:
                assert row["n_rollouts"] == n_rollouts or "adaptive_width" in options
                values.setdefault(row["state_id"], []).append(row["mc_value"])
    return values, reused, policy.tokens_generated


def _worst_z(values: dict[str, list[float]]) -> float:
    """The largest |mean - exact| / standard error over the states."""
    worst = 0.0
    for state_id, estimates in values.items():
        k, t = int(state_id.split("/s")[1].split("/")[0]), int(state_id.rsplit("/t", 1)[1])
        mean = sum(estimates) / len(estimates)
        var = sum((v - mean) ** 2 for v in estimates) / (len(estimates) - 1)
        se = math.sqrt(var / len(estimates)) or 1e-9
        worst = max(worst, abs(mean - exact_value(SOLUTIONS[k][:t])) / se)
    return worst


def test_reused_rollouts_keep_every_states_estimate_unbiased():
    values, reused, _ = _estimates(repeats=1500)
    assert len(values) == 12  # 3 solutions x states t = 0..3 ("done" is each solution's fourth step)
    assert reused > 0.2 * 1500 * 3 * 3 * 4  # a good share of the t >= 1 states' rollouts came for free
    assert _worst_z(values) < 4.0


def test_the_check_catches_a_reuse_that_keeps_rollouts_by_reward(monkeypatch):
    """Keeping only the rewarded rollouts of those that went through a_t inflates s_{t+1}'s values."""

    def by_reward(step: str, completions: Sequence[str], rewards: Sequence[float], delimiter: str):
        texts, kept = continuations_through(step, completions, rewards, delimiter)
        pairs = [(c, r) for c, r in zip(texts, kept, strict=True) if r > 0]
        return [c for c, _ in pairs], [r for _, r in pairs]

    monkeypatch.setattr(state_rollouts, "continuations_through", by_reward)
    values, _, _ = _estimates(repeats=1500)
    assert _worst_z(values) > 10.0


def test_reuse_generates_fewer_tokens_for_the_same_number_of_rollouts():
    _, _, with_reuse = _estimates(repeats=50)
    problem = Problem("p0", "P:\n", {})
    solutions = [Solution(f"p0/s{k}", problem, list(steps), 1.0, False) for k, steps in enumerate(SOLUTIONS)]
    policy = CoinPolicy()
    for shard in range(50):
        state_rollouts.rollout_states(
            shard, solutions, RolloutConfig(n_rollouts=4, seed=7), policy, CoinTask(), GradingClock()
        )
    assert with_reuse < 0.8 * policy.tokens_generated


@pytest.mark.parametrize("truncated", [False, True])
def test_continuations_through_cuts_the_step_and_keeps_the_cut_off_flag(truncated):
    completions = [Completion("a\nb\ndone", truncated), "b\na\ndone", "a\n", "a"]
    texts, rewards = continuations_through("a\n", completions, [1.0, 0.0, 0.0, 1.0], "\n")
    assert texts == ["b\ndone", ""] and rewards == [1.0, 0.0]
    assert is_truncated(texts[0]) == truncated and not is_truncated(texts[1])


def test_a_shard_written_before_the_option_existed_resumes_as_reuse_off(tmp_path):
    """A finished shard from an older dapo records no `reuse_rollouts`: it reads as the default (off), so resuming
    with reuse off continues, and with reuse on is refused by name."""
    old = {k: v for k, v in asdict(RolloutConfig()).items() if k != "reuse_rollouts"}
    (tmp_path / PROVENANCE_FILE).write_text(json.dumps(asdict(Provenance("dapo rollout", config=old))))
    defaults = asdict(RolloutConfig())
    check_resumable(tmp_path, asdict(RolloutConfig()), "", defaults)
    with pytest.raises(ValueError, match=r"different config \(reuse_rollouts\)"):
        check_resumable(tmp_path, asdict(RolloutConfig(reuse_rollouts=True)), "", defaults)


def _largest_bias(values: dict[str, list[float]]) -> float:
    return max(
        abs(
            sum(v) / len(v)
            - exact_value(SOLUTIONS[int(sid.split("/s")[1].split("/")[0])][: int(sid.rsplit("/t", 1)[1])])
        )
        for sid, v in values.items()
    )


def test_adaptive_allocation_spends_fewer_rollouts_at_a_small_measured_bias():
    """adaptive_width 0.5 (4 rollouts first, 4 more while the Wilson interval is wider, at most 16) on the coin
    world: fewer tokens than 16 rollouts everywhere; stopping on what was seen biases the mean, by a few points
    here (0.057 at most over the 12 states in a 400-shard run), which docs/performance.md reports."""
    full, _, full_tokens = _estimates(300, n_rollouts=16, reuse_rollouts=False)
    adaptive, _, adaptive_tokens = _estimates(300, n_rollouts=16, reuse_rollouts=False, adaptive_width=0.5)
    assert adaptive_tokens < 0.6 * full_tokens
    assert _largest_bias(full) < 0.03 and _largest_bias(adaptive) < 0.08
    counts = {len(v) for v in adaptive.values()}
    assert counts == {300}  # every state got an estimate in every shard


def test_adaptive_settings_are_checked():
    with pytest.raises(ValueError, match="adaptive_width must be in"):
        RolloutConfig(adaptive_width=0.0)
    with pytest.raises(ValueError, match=r"adaptive_min_rollouts must be in 1..n_rollouts \(16\)"):
        RolloutConfig(adaptive_width=0.5, adaptive_min_rollouts=17)
    RolloutConfig(n_rollouts=2)  # the minimum is only checked when adaptive allocation is on

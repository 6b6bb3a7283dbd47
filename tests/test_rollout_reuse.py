"""Rollout reuse (`RolloutConfig.reuse_rollouts`): a rollout from s_t that took the solution's own step a_t counts
for s_{t+1} too. Checked for unbiasedness on a policy whose state values are known exactly, and shown able to fail:
the same check catches a reuse that keeps rollouts by their reward.

The coin world: a response is three steps, each "a\\n" with probability 0.6 or "b\\n", then "done"; it is correct
iff it has at least two "a" steps. From a state with t steps of which k are "a", V = P(Binomial(3 - t, 0.6) >= 2 - k).
Its responses are short enough that the token cap never binds.

The capped coin world: the same, but a "b" step is "bbbb\\n" and the policy honours `max_new_tokens` (a token is a
character), cutting a longer rollout off there: it scores 0. At a cap of 12 the cap binds: from the prompt,
"a\\na\\nbbbb\\ndone" (13) is cut off. V is then P(correct and the rest fits in the cap), by enumeration. A reused
rollout had |a_t| fewer tokens for its rest than a fresh one from s_{t+1}: only resuming it keeps V unbiased.
"""

from __future__ import annotations

import itertools
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
from dapo.stages.rollout_reuse import continuations_through, resume_budgets, resumed
from dapo.stages.shards import check_resumable, derive_seed
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

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text) for text in texts]


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


def _worst_z(
    values: dict[str, list[float]], solutions: Sequence[Sequence[str]] = SOLUTIONS, exact: Any = exact_value
) -> float:
    """The largest |mean - exact| / standard error over the states."""
    worst = 0.0
    for state_id, estimates in values.items():
        k, t = int(state_id.split("/s")[1].split("/")[0]), int(state_id.rsplit("/t", 1)[1])
        mean = sum(estimates) / len(estimates)
        var = sum((v - mean) ** 2 for v in estimates) / (len(estimates) - 1)
        se = math.sqrt(var / len(estimates)) or 1e-9
        worst = max(worst, abs(mean - exact(solutions[k][:t])) / se)
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


# -- the capped coin world: the token cap binds ----------------------------------------------------------------------

CAP, STEP = 12, {"a": "a\n", "b": "bbbb\n"}
CAPPED = [["bbbb\n", "a\n", "a\n", "done"], ["a\n", "bbbb\n", "a\n", "done"], ["a\n", "a\n", "bbbb\n", "done"]]


class CappedCoinPolicy:
    """Finishes a state, or a state followed by a cut-off rest (a step or "done" begun: its first character says
    which): the missing steps drawn with P_A, then "done", cut off at `max_new_tokens` characters. Records the
    `max_new_tokens` of every call."""

    def __init__(self) -> None:
        self.tokens_generated = 0
        self.caps: list[int] = []

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        self.caps.append(params.max_new_tokens)
        out = []
        for p, prompt in enumerate(prompts):
            rows = []
            for j in range(params.n):
                text = self._finish(prompt[len("P:\n") :], random.Random(f"{params.seed}/{p}/{prompt}/{j}"))
                rows.append(Completion(text[: params.max_new_tokens], len(text) > params.max_new_tokens))
            self.tokens_generated += sum(len(r) for r in rows)
            out.append(rows)
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text) for text in texts]

    @staticmethod
    def _finish(body: str, rng: random.Random) -> str:
        *whole, begun = body.split("\n")
        if begun.startswith("d"):
            return "done"[len(begun) :]
        rest = STEP[begun[0]][len(begun) :] if begun else ""
        left = STEPS - len(whole) - bool(begun)
        return rest + "".join(STEP["a"] if rng.random() < P_A else STEP["b"] for _ in range(left)) + "done"


def capped_value(steps: Sequence[str]) -> float:
    """P(at least two "a" steps, and the rest of the response within CAP characters), by enumerating the rest."""
    value, have = 0.0, sum(s == "a\n" for s in steps)
    for rest in itertools.product("ab", repeat=STEPS - len(steps)):
        text = "".join(STEP[c] for c in rest) + "done"
        if have + rest.count("a") >= 2 and len(text) <= CAP:
            value += P_A ** rest.count("a") * (1 - P_A) ** rest.count("b")
    return value


def _capped_estimates(repeats: int) -> tuple[dict[str, list[float]], CappedCoinPolicy]:
    """Every capped-world state's MC values over `repeats` shards, with reuse and 4 rollouts per state."""
    problem = Problem("p0", "P:\n", {})
    solutions = [Solution(f"p0/s{k}", problem, list(steps), 1.0, False) for k, steps in enumerate(CAPPED)]
    config = RolloutConfig(n_rollouts=4, seed=7, max_new_tokens=CAP, reuse_rollouts=True)
    policy, values = CappedCoinPolicy(), {}
    for shard in range(repeats):
        rows, _ = rollout_states_in_waves(shard, solutions, config, policy, CoinTask(), GradingClock())
        for row in rows:
            if row["n_rollouts"]:
                values.setdefault(row["state_id"], []).append(row["mc_value"])
    return values, policy


def test_the_capped_world_cuts_off_rollouts_and_its_values_are_exact():
    """From the prompt only "a\\na\\na\\ndone" (10) fits in 12 of the correct rests: V = 0.6^3, not 0.648."""
    assert capped_value([]) == pytest.approx(0.6**3) and exact_value([]) == pytest.approx(0.648)
    assert [capped_value(CAPPED[1][:t]) for t in range(4)] == pytest.approx([0.216, 0.84, 0.6, 1.0])
    out = CappedCoinPolicy().generate(["P:\n"] * 50, SamplingParams(n=4, max_new_tokens=CAP))
    assert any(is_truncated(c) and len(c) == CAP for row in out for c in row)


def test_resumed_reuse_keeps_every_state_unbiased_when_the_cap_binds():
    values, policy = _capped_estimates(repeats=1200)
    assert len(values) == 12
    assert {cap for cap in policy.caps if cap < CAP}  # some reused rollouts were cut off and resumed
    z = _worst_z(values, CAPPED, capped_value)
    print(f"capped coin world, resumed reuse: worst z = {z:.2f}")
    assert z < 4.0


def test_without_resuming_the_cut_off_reused_rollouts_bias_values_low(monkeypatch):
    """The reuse before resuming: a reused rest had |a_t| fewer tokens than a fresh rollout from s_{t+1}, and was
    scored 0 when they ran out. E.g. s_1 of "bbbb\\n a\\n a\\n": its reused rests had 7 tokens, "a\\na\\ndone" needs
    8, so all score 0, where V = 0.36."""
    monkeypatch.setattr(state_rollouts, "_resume_cut_off", lambda *args: None)
    values, _ = _capped_estimates(repeats=1200)
    z = _worst_z(values, CAPPED, capped_value)
    print(f"capped coin world, reuse without resuming: worst z = {z:.2f}")
    assert z > 10.0


class ScriptedPolicy:
    """Returns the scripted continuations of each (prompt, max_new_tokens) and records every call."""

    def __init__(self, script: dict[tuple[str, int], list[str]]) -> None:
        self.script, self.calls, self.tokens_generated = script, [], 0

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        self.calls.append((list(prompts), params))
        return [self.script[prompt, params.max_new_tokens][: params.n] for prompt in prompts]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text) for text in texts]


def test_a_cut_off_reused_rollout_is_resumed_with_the_tokens_it_has_left():
    """s_0's first rollout took a_0 = "bbbb\\n" (5 of its 12 tokens) and was cut off 7 tokens into its rest; s_1
    resumes that rest with 12 - 7 = 5 tokens, from s_1 + rest, and grades the whole response."""
    cut = Completion("bbbb\na\na\ndon", True)
    policy = ScriptedPolicy(
        {
            ("P:\n", CAP): [cut, Completion("a\na\na\ndone", False)],
            ("P:\nbbbb\na\na\ndon", 5): [Completion("e", False)],
            ("P:\nbbbb\n", CAP): [Completion("bbbb\nbbbb\ndo", True)],
            ("P:\nbbbb\na\n", CAP): [Completion("a\ndone", False)],
        }
    )
    solution = Solution("p0/s0", Problem("p0", "P:\n", {}), list(CAPPED[0]), 1.0, False)
    config = RolloutConfig(n_rollouts=2, seed=3, max_new_tokens=CAP, reuse_rollouts=True)
    rows, reused = rollout_states_in_waves(5, [solution], config, policy, CoinTask(), GradingClock())
    prompts, params = policy.calls[1]
    assert prompts == ["P:\nbbbb\na\na\ndon"]
    assert (params.n, params.max_new_tokens, params.seed) == (1, 5, derive_seed(3, 5, "resume/t1/b5"))
    s1 = rows[1]
    assert s1["completions"] == ["a\na\ndone", "bbbb\nbbbb\ndo"] and s1["completion_truncated"] == [False, True]
    assert s1["completion_rewards"] == [1.0, 0.0]
    assert reused == 1 + 1 + 2 and len(policy.calls) == 4  # s_3's two rollouts both came through "a\n"


def test_resume_budgets_group_by_tokens_left_and_skip_those_with_none():
    assert resume_budgets(["x", "y", "z", "w"], [7, 12, 13, 7], CAP) == {5: ["x", "w"]}
    assert resume_budgets(["x", "y"], [0, 3], CAP) == {12: ["x"], 9: ["y"]}


@pytest.mark.parametrize("truncated", [False, True])
def test_a_resumed_continuation_is_cut_off_iff_its_extension_is(truncated):
    text = resumed(Completion("a\nbb", True), Completion("bb\ndo", truncated))
    assert text == "a\nbbbb\ndo" and is_truncated(text) == truncated

"""The response-level baseline's actions: whole responses from the prompt, A = r - mean r over the problem's
samples (duplicates included in the mean), unique responses kept, flat problems dropped; and they train."""

from __future__ import annotations

import pytest

from dapo.pipeline.demo_grid import Round, response_settings
from dapo.records import Provenance, read_records, write_records
from dapo.stages import response_advantages
from dapo.stages.response_advantages import (
    ResponseAdvantageConfig,
    Sample,
    group_by_problem,
    prompt_samples,
    response_actions,
    run_response_advantages,
)


def _sample(response: str, reward: float, problem: str = "p0") -> Sample:
    return Sample(problem, "Q:\n", response, reward)


def test_advantage_is_reward_minus_the_groups_mean_with_duplicates_counted():
    """Rewards 1, 1, 0, 0 with "a" twice: mean 0.5, so "a" (right) gets +0.5 once and "b", "c" (wrong) -0.5."""
    group = [_sample("a", 1.0), _sample("a", 1.0), _sample("b", 0.0), _sample("c", 0.0)]
    kept = response_actions(group, min_gap=0.1)
    assert [(a.candidate.action, a.advantage) for a in kept] == [("a", 0.5), ("b", -0.5), ("c", -0.5)]
    assert all(a.candidate.is_terminal for a in kept)


def test_a_problem_whose_samples_all_agree_teaches_nothing():
    assert response_actions([_sample("a", 1.0), _sample("b", 1.0)], min_gap=0.1) == []
    assert response_actions([_sample("a", 0.0), _sample("b", 0.0)], min_gap=0.0) != []  # gap 0 >= 0: kept


def test_one_right_in_four_gets_three_quarters():
    """Mean 0.25: the right response +0.75, each wrong one -0.25."""
    group = [_sample("r", 1.0), _sample("w1", 0.0), _sample("w2", 0.0), _sample("w3", 0.0)]
    assert [a.advantage for a in response_actions(group, 0.1)] == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_groups_are_per_problem():
    groups = group_by_problem([_sample("a", 1.0, "p0"), _sample("b", 0.0, "p1"), _sample("c", 0.0, "p0")])
    assert {k: [s.response for s in v] for k, v in groups.items()} == {"p0": ["a", "c"], "p1": ["b"]}


CUT = "1 + 1 = 2\n2 + "  # a rollout the token limit cut off


def _stage_a(tmp_path, arith):
    """A Stage A folder by hand: problem 0 has a right and a wrong kept solution and four t=0 rollouts (one cut
    off); the kept solutions and a t=1 state's rollouts are not plain draws from the prompt and must not join the
    group."""
    ex = arith.load("train")[0]
    prompt, right = arith.prompt(ex), arith.reference_solution(ex)
    steps = [line + "\n" for line in right.split("\n")[:-1]] + [right.split("\n")[-1]]
    wrong = "1 + 1 = 3\nAnswer: 3"
    solutions = [
        {"solution_id": "s0", "problem_id": ex["id"], "prompt": prompt, "steps": steps, "reward": 1.0},
        {
            "solution_id": "s1",
            "problem_id": ex["id"],
            "prompt": prompt,
            "steps": ["1 + 1 = 3\n", "Answer: 3"],
            "reward": 0.0,
        },
    ]
    state = {
        "state_id": "s0-0",
        "problem_id": ex["id"],
        "solution_id": "s0",
        "t": 0,
        "prompt": prompt,
        "steps": steps,
        "mc_value": 0.5,
        "n_rollouts": 4,
        "completions": [right, wrong, right, CUT],
        "completion_rewards": [1.0, 0.0, 1.0, 0.0],
        "completion_truncated": [False, False, False, True],
    }
    later = state | {
        "state_id": "s0-1",
        "t": 1,
        "n_rollouts": 1,
        "completions": ["junk"],
        "completion_rewards": [0.0],
        "completion_truncated": [False],
    }
    stage_a = tmp_path / "stage_a"
    write_records(solutions, stage_a / "solutions", "solutions", Provenance(producer="test"))
    write_records([state, later], stage_a / "states", "states", Provenance(producer="test"))
    return stage_a, ex, right, wrong


def test_prompt_samples_are_the_first_states_rollouts_not_the_chosen_solutions(tmp_path, arith):
    """The kept solutions were chosen to balance right and wrong; only the t = 0 rollouts are plain draws. The
    cut-off rollout stays in (reward 0), marked."""
    stage_a, _, right, wrong = _stage_a(tmp_path, arith)
    samples = prompt_samples(stage_a)
    assert [(s.response, s.reward, s.truncated) for s in samples] == [
        (right, 1.0, False),
        (wrong, 0.0, False),
        (right, 1.0, False),
        (CUT, 0.0, True),
    ]


def test_the_actions_are_ordinary_actor_records_with_reference_logprobs(tmp_path, arith, policy_dir):
    """Rewards 1, 0, 1, 0 (the cut-off one): mean 0.5. The right response, seen twice, +0.5; the wrong -0.5; the
    cut-off one -0.5 as a non-terminal action (no eos: not taught as an ending). Uniform weights."""
    stage_a, _, right, wrong = _stage_a(tmp_path, arith)
    summary = run_response_advantages(ResponseAdvantageConfig(str(stage_a), policy_dir, str(tmp_path / "out")))
    assert (summary.problems, summary.samples, summary.problems_kept, summary.actions) == (1, 4, 1, 3)
    rows = list(read_records(tmp_path / "out" / "actions", "actions"))
    assert [(r["action"], r["advantage"], r["is_terminal"], r["state_steps"], r["weight"]) for r in rows] == [
        (right, 0.5, True, [], 1.0),
        (wrong, -0.5, True, [], 1.0),
        (CUT, -0.5, False, [], 1.0),
    ]
    assert all(r["ref_logprob"] < 0 for r in rows) and rows[0]["ref_logprob"] != rows[1]["ref_logprob"]


def test_count_weighting_reaches_the_records(tmp_path, arith, monkeypatch, no_policy_hash):
    """action_weight "count": the right response is 2 of the 4 samples, 3 unique responses, so its weight is
    2 * 3 / 4 = 1.5, the others 1 * 3 / 4 = 0.75 (a state's weights average 1). Before, every row read 1.0."""
    stage_a, _, right, wrong = _stage_a(tmp_path, arith)
    monkeypatch.setattr(response_advantages, "reference_logprobs", _fake_logprobs([]))
    config = ResponseAdvantageConfig(str(stage_a), "unused", str(tmp_path / "out"), action_weight="count")
    run_response_advantages(config)
    rows = list(read_records(tmp_path / "out" / "actions", "actions"))
    assert [(r["action"], r["weight"]) for r in rows] == [(right, 1.5), (wrong, 0.75), (CUT, 0.75)]


def test_reference_logprobs_load_the_policy_as_stage_b_does(tmp_path, arith, monkeypatch, no_policy_hash):
    """Under QLoRA the actor's model is 4-bit: the baseline's reference must be scored 4-bit too (and with the same
    attention kernel), as Stage B scores DAPO's, or the log-ratios do not start at 0."""
    stage_a, _, _, _ = _stage_a(tmp_path, arith)
    calls: list[tuple] = []
    monkeypatch.setattr(response_advantages, "reference_logprobs", _fake_logprobs(calls))
    round_ = Round(
        stage_a.parent, tmp_path / "policy", {"advantages": {"load_in": "4bit", "attn_implementation": "eager"}}
    )
    settings = response_settings(round_, tmp_path / "out", 0.1)
    assert (settings.load_in, settings.attn_implementation, settings.action_weight) == ("4bit", "eager", "uniform")
    run_response_advantages(settings)
    ((_, policy, load_in, _, _, attention),) = calls
    assert (policy, load_in, attention) == (str(tmp_path / "policy"), "4bit", "eager")


@pytest.fixture
def no_policy_hash(monkeypatch):
    monkeypatch.setattr(response_advantages, "policy_fingerprint", lambda path: "hash")


def _fake_logprobs(calls: list[tuple]):
    def fake(groups, *args):
        calls.append((groups, *args))
        return [[-1.0] * len(acts) for _, acts in groups], 0

    return fake

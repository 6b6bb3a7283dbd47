"""The response-level baseline's actions: whole responses from the prompt, A = r - mean r over the problem's
samples (duplicates included in the mean), unique responses kept, flat problems dropped; and they train."""

from __future__ import annotations

import pytest

from dapo.records import Provenance, read_records, write_records
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


def _stage_a(tmp_path, arith):
    """A Stage A folder by hand: problem 0 has a right and a wrong solution and two t=0 rollouts; a t=1 state's
    rollouts are not samples from the prompt and must not join the group."""
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
        "n_rollouts": 2,
        "completions": [right, wrong],
        "completion_rewards": [1.0, 0.0],
    }
    later = state | {"state_id": "s0-1", "t": 1, "completions": ["junk"], "completion_rewards": [0.0]}
    stage_a = tmp_path / "stage_a"
    write_records(solutions, stage_a / "solutions", "solutions", Provenance(producer="test"))
    write_records([state, later], stage_a / "states", "states", Provenance(producer="test"))
    return stage_a, ex, right, wrong


def test_prompt_samples_are_the_solutions_and_the_first_states_rollouts(tmp_path, arith):
    stage_a, _, right, wrong = _stage_a(tmp_path, arith)
    samples = prompt_samples(stage_a)
    assert [(s.response, s.reward) for s in samples] == [(right, 1.0), (wrong, 0.0), (right, 1.0), (wrong, 0.0)]


def test_the_actions_are_ordinary_actor_records_with_reference_logprobs(tmp_path, arith, policy_dir):
    stage_a, _, right, wrong = _stage_a(tmp_path, arith)
    summary = run_response_advantages(ResponseAdvantageConfig(str(stage_a), policy_dir, str(tmp_path / "out")))
    assert (summary.problems, summary.samples, summary.problems_kept, summary.actions) == (1, 4, 1, 2)
    rows = list(read_records(tmp_path / "out" / "actions", "actions"))
    assert [(r["action"], r["advantage"], r["is_terminal"], r["state_steps"]) for r in rows] == [
        (right, 0.5, True, []),
        (wrong, -0.5, True, []),
    ]
    assert all(r["ref_logprob"] < 0 for r in rows) and rows[0]["ref_logprob"] != rows[1]["ref_logprob"]

"""The Stage A / Stage B figures logged at fit start, by hand."""

from __future__ import annotations

import pytest

from dapo.stages.stage_stats import advantage_gaps, mc_value_by_step, solve_rate


def _state(t: int, mc_value: float, rewards: list[float]) -> dict:
    return {"t": t, "mc_value": mc_value, "completion_rewards": rewards}


def test_solve_rate_is_the_mean_reward_of_the_prompts_rollouts_only():
    """t = 0 rollouts 1, 0, 0, 1 and 1, 1: 4 of 6; the t = 1 state's rollouts (0, 0) are not samples from the prompt."""
    states = [_state(0, 0.5, [1, 0, 0, 1]), _state(0, 1.0, [1, 1]), _state(1, 0.0, [0, 0])]
    assert solve_rate(states) == pytest.approx(4 / 6)
    assert solve_rate([_state(1, 0.0, [0])]) is None


def test_mc_value_by_step_averages_each_step():
    states = [_state(0, 0.5, []), _state(0, 0.7, []), _state(2, 1.0, []), _state(1, 0.2, [])]
    assert mc_value_by_step(states) == pytest.approx({0: 0.6, 1: 0.2, 2: 1.0})
    assert list(mc_value_by_step(states)) == [0, 1, 2]


def test_gaps_are_per_state():
    actions = [
        {"state_id": "a", "advantage": 0.3},
        {"state_id": "a", "advantage": -0.2},
        {"state_id": "b", "advantage": 0.1},
    ]
    assert advantage_gaps(actions) == pytest.approx([0.5, 0.0])

"""The demo's exact diagnostics on arith: the right next step of any state, decisive (carry) states, action labels
and sign agreement, the loss targets' spread and low-probability share, fixed/broken counts."""

from __future__ import annotations

import math

import pytest

from dapo.pipeline.demo_diagnostics import (
    is_decisive,
    label_actions,
    loss_targets,
    mc_sign_accuracy,
    right_step,
    transitions,
)

# 19 + 5 = 24 (a carry), then 24 - 7 = 17 (a borrow), then 17 * 2 = 34
EXAMPLE = {"id": "p0", "start": 19, "operations": [["+", 5], ["-", 7], ["*", 2]], "answer": "34"}


def test_the_right_step_continues_from_the_written_value_even_when_it_is_wrong():
    assert right_step(EXAMPLE, []) == "19 + 5 = 24\n"
    assert right_step(EXAMPLE, ["19 + 5 = 24\n"]) == "24 - 7 = 17\n"
    assert right_step(EXAMPLE, ["19 + 5 = 14\n"]) == "14 - 7 = 7\n"  # after a slip, the consistent next step
    assert right_step(EXAMPLE, ["19 + 5 = 24\n", "24 - 7 = 17\n", "17 * 2 = 34\n"]) == "Answer: 34"
    assert right_step(EXAMPLE, ["nonsense\n"]) is None


def test_decisive_states_are_the_ones_whose_next_step_carries_or_borrows():
    assert is_decisive(EXAMPLE, [])  # 19 + 5: carry
    assert is_decisive(EXAMPLE, ["19 + 5 = 24\n"])  # 24 - 7: borrow
    assert not is_decisive(EXAMPLE, ["19 + 5 = 24\n", "24 - 7 = 17\n"])  # a product
    assert not is_decisive(EXAMPLE, ["19 + 5 = 24\n", "24 - 7 = 17\n", "17 * 2 = 34\n"])  # the answer


def _action(action: str, advantage: float, ref_logprob: float = -0.1, state: str = "s0", steps=()) -> dict:
    return {
        "state_id": state,
        "problem_id": "p0",
        "state_steps": list(steps),
        "action": action,
        "advantage": advantage,
        "ref_logprob": ref_logprob,
        "weight": 1.0,
    }


def test_labels_and_the_critics_sign_accuracy():
    """Right step with A > 0 and a slip with A < 0 agree; a slip with A > 0 disagrees; A == 0 is not counted."""
    actions = [
        _action("19 + 5 = 24\n", 0.3),
        _action("19 + 5 = 14\n", -0.3),
        _action("19 + 5 = 25\n", 0.1),
        _action("19 + 5 = 23\n", 0.0),
    ]
    labels = label_actions(actions, {"p0": EXAMPLE})
    assert labels == {"actions": 4, "right": 1, "critic_sign_accuracy": pytest.approx(2 / 3)}


def test_mc_sign_accuracy_groups_rollouts_by_their_first_step():
    """Rollouts: right step twice (rewards 1, 1), slip twice (0, 1): mean 0.75; right +0.25 (agrees), slip -0.25
    (agrees)."""
    state = {
        "problem_id": "p0",
        "t": 0,
        "steps": ["19 + 5 = 24\n"],
        "completion_rewards": [1.0, 1.0, 0.0, 1.0],
        "completions": ["19 + 5 = 24\nx", "19 + 5 = 24\ny", "19 + 5 = 14\nz", "19 + 5 = 14\nw"],
    }
    assert mc_sign_accuracy([state], {"p0": EXAMPLE}) == 1.0


def test_loss_targets_by_hand():
    """beta 0.1: targets +3 and -3 at state s0 (two actions), +5 at s1 (one). Initial gradient weights |A|/beta over
    the state's count: 1.5, 1.5, 5; the action with p_ref = e^-3 < 0.1 carries 1.5 / 8."""
    actions = [
        _action("a", 0.3, ref_logprob=-0.1),
        _action("b", -0.3, ref_logprob=-3.0),
        _action("c", 0.5, ref_logprob=-0.01, state="s1"),
    ]
    targets = loss_targets(actions, beta=0.1)
    assert targets["share_beyond_3_nats"] == pytest.approx(1 / 3)  # only 5 > 3 (3 is not beyond)
    assert targets["gradient_share_on_low_probability"] == pytest.approx(1.5 / 8)
    assert targets["a_over_beta_quantiles"]["0.5"] == pytest.approx(3.0)
    assert math.exp(-3.0) < 0.1
    actions[0]["weight"], actions[1]["weight"] = 1.5, 0.5  # by count: "a" came 3 times, "b" once
    assert loss_targets(actions, beta=0.1)["gradient_share_on_low_probability"] == pytest.approx(0.75 / 8)


def test_transitions_count_fixed_and_broken_problems():
    assert transitions([1, 0, 0, 1], [1, 1, 0, 0]) == {"fixed": 1, "broken": 1}


def test_the_readme_table_has_a_column_per_seed_and_every_row():
    from dapo.pipeline.demo_diagnostics import DIFFERENCE_ROWS, ROWS, readme_table

    def report(seed: int) -> dict:
        entry = {"accuracy": 0.5, "ci95": [0.45, 0.55], "chosen": "lr0.0001-ep1"}
        difference = {"difference": 0.021, "ci95": [-0.01, 0.052]}
        return (
            {"seed": seed, "stages": {"a": 1.2, "b": 30.0}}
            | {key: entry for _, key in ROWS}
            | {key: difference for _, key in DIFFERENCE_ROWS}
        )

    lines = readme_table([report(0), report(1)]).splitlines()
    assert lines[0] == "| | seed 0 | seed 1 |" and len(lines) == 2 + len(ROWS) + len(DIFFERENCE_ROWS) + 1
    assert "| 50.0% [45.0, 55.0] (lr0.0001-ep1) |" in lines[2]
    assert lines[2 + len(ROWS)].endswith("| +2.1 [-1.0, +5.2] | +2.1 [-1.0, +5.2] |")
    assert lines[-1] == "| seconds: a / b | 1 / 30 | 1 / 30 |"


def test_the_readme_table_shows_round_2_when_every_run_has_it():
    from dapo.pipeline.demo_diagnostics import (
        DIFFERENCE_ROWS,
        ROUND_2_DIFFERENCE_ROWS,
        ROUND_2_ROWS,
        ROWS,
        readme_table,
    )

    entry = {"accuracy": 0.5, "ci95": [0.45, 0.55], "chosen": "-"}
    difference = {"difference": 0.0, "ci95": [-0.01, 0.01]}
    keys = [key for _, key in ROWS + ROUND_2_ROWS]
    differences = [key for _, key in DIFFERENCE_ROWS + ROUND_2_DIFFERENCE_ROWS]
    both = {"seed": 0, "stages": {"a": 1.0}} | dict.fromkeys(keys, entry) | dict.fromkeys(differences, difference)
    table = readme_table([both, both | {"seed": 1}])
    assert "| DAPO, round 2 |" in table and "| DAPO round 2 - RFT |" in table
    one_round = {k: v for k, v in both.items() if "round2" not in k}
    assert "round 2" not in readme_table([both, one_round])


def test_mc_sign_accuracy_on_the_kept_actions_only():
    """Mean reward 0.5. Right step: rewards 1, 0 -> 0.5 - 0.5 = 0, unsigned. Slip "= 14": 1 -> +0.5 (wrong sign).
    Slip "= 25": 0 -> -0.5 (agrees). Over every step: 1 of 2 signed agree; over Stage B's kept actions, which here
    hold only "= 25" (the population the advantages' sign accuracy is read over): 1 of 1."""
    state = {
        "state_id": "p0/s0/t0",
        "problem_id": "p0",
        "t": 0,
        "steps": ["19 + 5 = 24\n"],
        "completion_rewards": [1.0, 0.0, 1.0, 0.0],
        "completions": ["19 + 5 = 24\nx", "19 + 5 = 24\ny", "19 + 5 = 14\nz", "19 + 5 = 25\nw"],
    }
    assert mc_sign_accuracy([state], {"p0": EXAMPLE}) == 0.5
    assert mc_sign_accuracy([state], {"p0": EXAMPLE}, kept={("p0/s0/t0", "19 + 5 = 25\n")}) == 1.0

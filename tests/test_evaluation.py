"""Greedy evaluation and the intervals the demo reports, against hand arithmetic."""

from __future__ import annotations

import pytest

from dapo.core.stats import paired_difference_ci95, wilson_ci95
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.protocol import SamplingParams
from dapo.stages.evaluation import evaluate_policy


class AnswersEveryOther:
    """A generator that writes the right solution for every other prompt and a wrong answer otherwise."""

    tokens_generated = 0

    def __init__(self, task) -> None:
        self.solutions = {task.prompt(ex): task.reference_solution(ex) for ex in task.load("test")}

    def generate(self, prompts, params: SamplingParams) -> list[list[str]]:
        assert params.temperature == 0.0 and params.n == 1  # greedy, one response each
        return [[self.solutions[p] if i % 2 == 0 else "Answer: -1"] for i, p in enumerate(prompts)]


def test_evaluate_policy_scores_each_problem(arith):
    result = evaluate_policy(AnswersEveryOther(arith), arith, "test", limit=10)
    assert result.scores == [1.0, 0.0] * 5
    assert result.accuracy == 0.5 and result.n == 10
    assert result.ci95() == pytest.approx((0.2366, 0.7634), abs=1e-4)


def test_evaluate_a_real_policy(arith, policy_dir):
    result = evaluate_policy(HFGenerator.from_pretrained(policy_dir), arith, "test", limit=8, max_new_tokens=32)
    assert result.n == 8 and set(result.scores) <= {0.0, 1.0}


def test_wilson_interval_by_hand():
    """0 of 10: centre = (0 + z^2/20) / (1 + z^2/10) = 0.1387, half the same -> [0, 0.2775]."""
    low, high = wilson_ci95(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_ci95(0, 0)


def test_paired_difference_by_hand():
    """Differences [0, 1, 0, 0]: mean 0.25, sample sd 0.5, se 0.25, half-width 1.96 * 0.25 = 0.49."""
    low, high = paired_difference_ci95([1, 0, 1, 0], [1, 1, 1, 0])
    assert (low, high) == pytest.approx((0.25 - 0.49, 0.25 + 0.49), abs=1e-3)
    assert paired_difference_ci95([1, 0], [1, 0]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same, non-zero number"):
        paired_difference_ci95([1], [1, 0])


def test_seed_level_interval_by_hand():
    """[1, 3]: mean 2, sd sqrt(2), se 1, t(0.975, 1 df) = 12.706. [1, 2, 3]: se sqrt(1/3), t(0.975, 2 df) = 4.303."""
    from dapo.core.stats import seed_level_ci95

    assert seed_level_ci95([1.0, 3.0]) == pytest.approx((2 - 12.706, 2 + 12.706))
    half = 4.303 * (1 / 3) ** 0.5
    assert seed_level_ci95([1.0, 2.0, 3.0]) == pytest.approx((2 - half, 2 + half))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_level_ci95([1.0])

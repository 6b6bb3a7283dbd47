"""Stage B's `critic_weight`: V(s + a) blends the critic's value with the rewards of the rollouts that began with a."""

from __future__ import annotations

import pytest

from dapo.stages.candidate_advantages import AdvantageConfig, Candidate, blend_with_rollouts

CANDS = [Candidate("a", False, 1.0), Candidate("a", False, 0.0), Candidate("b", False, 0.0)]
CRITIC = [0.8, 0.8, 0.5]


def test_the_critic_counts_as_weight_rollouts():
    """a: rewards 1, 0 and critic 0.8 at weight 1 -> (1 + 0 + 0.8) / 3 = 0.6; b: (0 + 0.5) / 2 = 0.25."""
    assert blend_with_rollouts(CANDS, CRITIC, 1.0) == pytest.approx([0.6, 0.6, 0.25])


def test_weight_zero_is_the_rollouts_alone_and_a_large_weight_the_critic():
    assert blend_with_rollouts(CANDS, CRITIC, 0.0) == pytest.approx([0.5, 0.5, 0.0])
    assert blend_with_rollouts(CANDS, CRITIC, 1e9) == pytest.approx(CRITIC)


def test_a_negative_weight_is_refused():
    with pytest.raises(ValueError, match="critic_weight"):
        AdvantageConfig(critic_weight=-1.0)


def test_a_terminal_action_is_not_pooled_with_a_continuing_action_of_the_same_text():
    """Action "x" ended one rollout (reward 1, its true value) and began another that went on and failed (reward 0,
    critic 0.2). Weight 1: terminal (1 + 1) / 2 = 1.0; continuing (0 + 0.2) / 2 = 0.1. Pooled by text they would read
    (1 + 0 + 1) / 3 and (1 + 0 + 0.2) / 3."""
    cands = [Candidate("x", True, 1.0), Candidate("x", False, 0.0)]
    assert blend_with_rollouts(cands, [1.0, 0.2], 1.0) == pytest.approx([1.0, 0.1])

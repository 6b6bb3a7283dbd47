"""Rollout reuse: a rollout from state s_t whose first step is the kept solution's own step a_t is also a rollout
from s_{t+1} = s_t + a_t, so it can count towards s_{t+1}'s MC value instead of a freshly sampled one.

Why the estimate stays unbiased: given that a rollout's first step is a_t, the rest of it is a draw from the policy
at s_{t+1}, exactly as a fresh rollout from s_{t+1} would be, and its reward is that draw's reward. Whether a
rollout is reused depends only on its first step, never on its outcome, so s_{t+1}'s n completions (k reused, n - k
fresh) are n independent draws from the policy at s_{t+1} for every k (`tests/test_rollout_reuse.py` checks this on
a policy with known values). Reused rollouts are taken in generation order, at most n, never chosen by reward.
"""

from __future__ import annotations

from collections.abc import Sequence

from dapo.core.steps import first_step
from dapo.generation.protocol import Completion, is_truncated


def continuations_through(
    step: str, completions: Sequence[str], rewards: Sequence[float], delimiter: str
) -> tuple[list[str], list[float]]:
    """The completions (of some state s_t) whose first whole step is `step`, with that step cut off, and their
    rewards: completions of s_t + step. A cut-off completion stays cut off (its `Completion.truncated` is kept)."""
    texts: list[str] = []
    kept: list[float] = []
    for completion, reward in zip(completions, rewards, strict=True):
        if first_step(completion, delimiter) == step:
            texts.append(Completion(completion[len(step) :], is_truncated(completion)))
            kept.append(reward)
    return texts, kept

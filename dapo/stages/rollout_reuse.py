"""Rollout reuse: a rollout from state s_t whose first step is the kept solution's own step a_t is also a rollout
from s_{t+1} = s_t + a_t, so it can count towards s_{t+1}'s MC value instead of a freshly sampled one.

Why the estimate stays unbiased: given that a rollout's first step is a_t, the rest of it is a draw from the policy
at s_{t+1}, exactly as a fresh rollout from s_{t+1} would be (up to the token cap, below), and its reward is that
draw's reward. Whether a rollout is reused depends only on its first step, never on its outcome, so s_{t+1}'s n
completions (k reused, n - k fresh) are n independent draws from the policy at s_{t+1} for every k. Reused rollouts
are taken in generation order, at most n, never chosen by reward.

The token cap: the rest had only `max_new_tokens - |a_t|` tokens, a fresh rollout from s_{t+1} has
`max_new_tokens`. A rest the policy ended is what a fresh rollout would be (it ended within the smaller cap). A rest
the cap cut off is only the first tokens of a fresh rollout, and scoring it 0 would bias s_{t+1}'s value low; so it
is resumed: the policy continues s_{t+1} + rest with `max_new_tokens - (tokens of the rest)` more tokens
(`resume_budgets`), and rest + extension (`resumed`) is a draw of a fresh rollout with its full cap: the first
tokens from the policy at s_{t+1}, the rest from the policy given them. Dropping or replacing cut-off rests instead
would select on their length, which goes with the outcome. `tests/test_rollout_reuse.py` checks both cases on
policies with known values, one whose cap never binds and one whose cap binds.

Exactness: `Generator.count_tokens` encodes the rest alone. That is the tokens it took when tokens split at the
step boundary (the test policies' characters); with a BPE tokenizer the re-encoded rest can differ by a token or so
at its start, and the cap is met to within that. As before, states are identified by text: s_{t+1} + rest is
re-encoded, not continued from the sampled token ids.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

from dapo.core.steps import first_step
from dapo.generation.protocol import Completion, is_truncated

Key = TypeVar("Key", bound=Hashable)


def continuations_through(
    step: str, completions: Sequence[str], rewards: Sequence[float], delimiter: str
) -> tuple[list[str], list[float]]:
    """The completions (of some state s_t) whose first whole step is `step`, with that step cut off, and their
    rewards: completions of s_t + step. A cut-off completion stays cut off (its `Completion.truncated` is kept):
    the next state resumes it (`resume_budgets`)."""
    texts: list[str] = []
    kept: list[float] = []
    for completion, reward in zip(completions, rewards, strict=True):
        if first_step(completion, delimiter) == step:
            texts.append(Completion(completion[len(step) :], is_truncated(completion)))
            kept.append(reward)
    return texts, kept


def resume_budgets(keys: Sequence[Key], used: Sequence[int], max_new_tokens: int) -> dict[int, list[Key]]:
    """The keys of cut-off continuations grouped by the tokens each has left, `max_new_tokens - used`, so that
    partial + extension has the cap of a fresh rollout. One with nothing left (re-encoded, it already fills the
    cap) is not resumed: it stays cut off, as a fresh rollout of that many tokens would be."""
    groups: dict[int, list[Key]] = {}
    for key, spent in zip(keys, used, strict=True):
        if max_new_tokens - spent > 0:
            groups.setdefault(max_new_tokens - spent, []).append(key)
    return groups


def resumed(partial: str, extension: str) -> Completion:
    """A cut-off continuation with the tokens generated after it: cut off iff the extension was (it ran out of the
    budget the whole continuation has)."""
    return Completion(partial + extension, is_truncated(extension))

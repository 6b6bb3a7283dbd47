"""Stage B's pure math: which first steps are candidate actions, their values blended with the rollouts, and the
advantages and weights of the unique actions kept. No models and no I/O: Stage B (`candidate_advantages`), the
response-level baseline and the demo's diagnostics all call these."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

from dapo.core.steps import first_step, split_steps

ActionWeighting = Literal["uniform", "count"]
ACTION_WEIGHTINGS: tuple[str, ...] = get_args(ActionWeighting)


class Candidate(NamedTuple):
    action: str  # the first step of a completion ("" if the policy stopped at once)
    is_terminal: bool  # the completion had no further step
    reward: float  # the completion's reward


class ScoredAction(NamedTuple):
    candidate: Candidate
    value: float  # V(s + a)
    advantage: float
    weight: float = 1.0  # its share of the state's loss, nu(a | s), scaled so a state's weights average 1


def candidates(
    completions: Sequence[str], rewards: Sequence[float], delimiter: str, truncated: Sequence[bool] | None = None
) -> list[Candidate]:
    """The first step of each completion, terminal when the completion is a single step. A completion that the
    token limit cut off (`truncated`) never ends the solution: its first step is a candidate only if whole."""
    out = []
    cut_off = truncated if truncated is not None else [False] * len(completions)
    for completion, reward, cut in zip(completions, rewards, cut_off, strict=True):
        if cut:
            step = first_step(completion, delimiter)
            if step is not None:
                out.append(Candidate(step, False, float(reward)))
            continue
        steps = split_steps(completion, delimiter)
        out.append(Candidate(steps[0] if steps else "", len(steps) <= 1, float(reward)))
    return out


def blend_with_rollouts(cands: Sequence[Candidate], critic: Sequence[float], weight: float) -> list[float]:
    """V(s + a_i) = (sum of the rewards of the rollouts that began with a_i + weight * critic_i) / (n_i + weight),
    n_i those rollouts: the critic's value is a prior worth `weight` rollouts. E.g. a seen twice with rewards
    1 and 0, critic 0.8, weight 1: (1 + 0 + 0.8) / 3 = 0.6. An action is its text and whether it ends the solution,
    as `select_actions` keeps them apart: "Answer: 8" that ended a rollout and "Answer: 8" that went on are two
    actions with two values, never one pooled mean."""
    rewards_of: dict[tuple[str, bool], list[float]] = {}
    for cand in cands:
        rewards_of.setdefault((cand.action, cand.is_terminal), []).append(cand.reward)
    blended = []
    for cand, value in zip(cands, critic, strict=True):
        rewards = rewards_of[cand.action, cand.is_terminal]
        blended.append((sum(rewards) + weight * value) / (len(rewards) + weight))
    return blended


def select_actions(
    cands: Sequence[Candidate], values: Sequence[float], min_gap: float, weighting: ActionWeighting = "uniform"
) -> list[ScoredAction]:
    """Advantages against the mean over all candidates, then the unique actions in first-seen order; [] when the
    gap max A - min A is under `min_gap`. `weighting` sets each unique action's weight in its state's loss:
    "uniform" (the paper: all equal) or "count" (how many candidates were that action: the sampling policy's own
    distribution, so a slip seen once among 8 weighs 1/8 of the state, not 1/2)."""
    if not cands or len(cands) != len(values):
        raise ValueError(f"need one value per candidate, got {len(cands)} candidates and {len(values)} values")
    if weighting not in ACTION_WEIGHTINGS:
        raise ValueError(f"action weighting must be 'uniform' or 'count', got {weighting!r}")
    baseline = sum(values) / len(values)
    unique: dict[tuple[str, bool], ScoredAction] = {}
    counts: Counter[tuple[str, bool]] = Counter()
    for cand, value in zip(cands, values, strict=True):
        unique.setdefault((cand.action, cand.is_terminal), ScoredAction(cand, value, value - baseline))
        counts[cand.action, cand.is_terminal] += 1
    kept = list(unique.values())
    if weighting == "count":  # scaled to average 1 over the state's unique actions, as "uniform" does
        kept = [a._replace(weight=counts[key] * len(kept) / len(cands)) for key, a in unique.items()]
    gap = max(a.advantage for a in kept) - min(a.advantage for a in kept)
    return kept if gap >= min_gap else []

"""Picking one response out of several with a critic: the pure rules of value-guided inference.

A critic gives every state of a response a value, V(s_0) (the prompt alone) ... V(s_T) (after its last step).
`response_value` reduces those to one number (the final state's value, or the weakest or product of the values
after each step); `best_index` takes the response with the highest; `vote_index` takes the response whose final
answer has the most votes, each response voting with its weight (1 for plain majority vote). No models, no I/O:
`dapo.stages.value_guided` calls these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

Reduce = Literal["last", "min", "prod"]
REDUCTIONS: tuple[str, ...] = get_args(Reduce)


def response_value(state_values: Sequence[float], reduce: Reduce = "last") -> float:
    """One number for a response from its states' values V(s_0..s_T):
    "last" V(s_T); "min" min over V(s_1..s_T); "prod" the product of V(s_1..s_T).
    A response without steps (T = 0) has only V(s_0), which every reduction returns.
    E.g. V = [0.5, 0.9, 0.4, 0.8]: last 0.8, min 0.4, prod 0.9 * 0.4 * 0.8 = 0.288."""
    if not state_values:
        raise ValueError("a response needs at least the prompt's value V(s_0)")
    after_steps = state_values[1:] or state_values[:1]
    if reduce == "last":
        return float(after_steps[-1])
    if reduce == "min":
        return float(min(after_steps))
    if reduce == "prod":
        return float(math.prod(after_steps))
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


def best_index(values: Sequence[float]) -> int:
    """Index of the highest value; the first one on a tie (so equal values keep sampling order)."""
    if not values:
        raise ValueError("cannot choose among no responses")
    return max(range(len(values)), key=lambda i: (values[i], -i))


def vote_index(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> int:
    """Index of the first response whose answer has the largest total weight (`weights` None: one vote each).

    Responses without an answer (None) do not vote; when none has one, the first response is returned.
    E.g. answers [7, 5, 5, 7, None], weights [0.9, 0.2, 0.3, 0.1, 1.0]: 7 gets 1.0, 5 gets 0.5 -> index 0;
    without weights 7 and 5 tie at 2 votes and the answer seen first, 7, wins -> index 0."""
    if not answers:
        raise ValueError("cannot vote among no responses")
    weights = [1.0] * len(answers) if weights is None else weights
    if len(weights) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    totals: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    for i, (answer, weight) in enumerate(zip(answers, weights, strict=True)):
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + float(weight)
            first_seen.setdefault(answer, i)
    if not totals:
        return 0
    winner = max(totals, key=lambda answer: (totals[answer], -first_seen[answer]))
    return first_seen[winner]

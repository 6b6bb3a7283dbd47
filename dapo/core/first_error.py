"""First-error detection scored as in ProcessBench (Zheng et al. 2024): critic quality beyond calibration.

A labelled solution has steps a_0..a_{T-1} and `label`, the index of its earliest wrong step, or -1 when every step
is right. A critic predicts a label from its values: with `StepScorer.values` giving V(s_0), ..., V(s_T), where
s_0 is the prompt alone and s_t = prompt + a_0..a_{t-1}, the predicted first error is the first step t whose
*resulting* state falls below the threshold, V(s_{t+1}) < threshold, or -1 if none does. V(s_0) is never read:
no step has been taken yet, so a hard problem is not a wrong step.

    values = [0.8, 0.7, 0.4, 0.9]   # V(s_0..s_3) of a 3-step solution, threshold 0.5
    -> 1                           # V(s_2) = 0.4 < 0.5 is the state after step a_1

Scores: accuracy on flawed solutions (prediction == label exactly), accuracy on correct ones (prediction == -1),
and their harmonic mean, ProcessBench's F1. A group with no solutions has no accuracy (NaN), and then no F1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

THRESHOLD_GRID = tuple(i / 100 for i in range(1, 100))
"""Thresholds the sweep tries, 0.01..0.99: values are sigmoids, so 0 and 1 would never flag / always flag."""


class FirstErrorScore(NamedTuple):
    """ProcessBench's scores of a set of predictions."""

    error_accuracy: float
    """Fraction of flawed solutions (label >= 0) whose predicted first error is exactly the label; NaN if none."""
    correct_accuracy: float
    """Fraction of correct solutions (label -1) predicted correct (-1); NaN if none."""
    f1: float
    """Harmonic mean of the two accuracies (0 when both are 0; NaN when either is NaN)."""
    n_error: int
    n_correct: int


class SweptThreshold(NamedTuple):
    """The threshold with the best F1 on the data it was chosen on, and its scores."""

    threshold: float
    score: FirstErrorScore


def first_error_from_values(values: Sequence[float], threshold: float) -> int:
    """The predicted first wrong step: the first t with V(s_{t+1}) = values[t + 1] < threshold, else -1.

    values: V(s_0), ..., V(s_T) of a T-step solution (length T + 1; values[0], the prompt's, is not read)."""
    if not values:
        raise ValueError("no values: a solution of T steps has T + 1 states, s_0 (the prompt) included")
    return next((t for t, value in enumerate(values[1:]) if value < threshold), -1)


def first_error_f1(predictions: Sequence[int], labels: Sequence[int]) -> FirstErrorScore:
    """Accuracy on flawed solutions, on correct ones, and their harmonic mean (ProcessBench's F1)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    flawed = [p == y for p, y in zip(predictions, labels, strict=True) if y >= 0]
    correct = [p == -1 for p, y in zip(predictions, labels, strict=True) if y < 0]
    error_accuracy, correct_accuracy = _mean(flawed), _mean(correct)
    return FirstErrorScore(
        error_accuracy, correct_accuracy, _harmonic_mean(error_accuracy, correct_accuracy), len(flawed), len(correct)
    )


def score_at(values: Sequence[Sequence[float]], labels: Sequence[int], threshold: float) -> FirstErrorScore:
    """The scores of every solution's values (each V(s_0..s_T)) read at one threshold."""
    return first_error_f1([first_error_from_values(v, threshold) for v in values], labels)


def best_threshold(
    values: Sequence[Sequence[float]], labels: Sequence[int], grid: Sequence[float] = THRESHOLD_GRID
) -> SweptThreshold:
    """The threshold of `grid` with the highest F1 on these very solutions (the lowest one on a tie). Chosen on
    the data it is scored on, so its F1 is an optimistic bound, not a held-out result. A NaN F1 (a group with no
    solutions) never wins unless every one is NaN."""
    if not grid:
        raise ValueError("empty threshold grid")
    swept = [SweptThreshold(t, score_at(values, labels, t)) for t in grid]
    return max(swept, key=lambda s: -math.inf if math.isnan(s.score.f1) else s.score.f1)


def _mean(hits: Sequence[bool]) -> float:
    return sum(hits) / len(hits) if hits else math.nan


def _harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b); 0 when both are 0 (no solution of either kind right)."""
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)

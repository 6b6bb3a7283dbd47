"""Pictures and text for the fit's loggers (dapo.training.media writes them): pure functions from arrays to a
matplotlib figure or markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure  # no pyplot: no global figure state, no display backend needed


def reliability_bins(pred: torch.Tensor, outcome: torch.Tensor, bins: int) -> tuple[torch.Tensor, ...]:
    """pred, outcome (m,) -> per-bin mean prediction, observed frequency and count, each (bins,)."""
    which = (pred.clamp(0, 1 - 1e-9) * bins).long()  # (m,)
    count = torch.bincount(which, minlength=bins).float()
    mean_pred = torch.bincount(which, weights=pred.float(), minlength=bins) / count.clamp(min=1)
    freq = torch.bincount(which, weights=outcome.float(), minlength=bins) / count.clamp(min=1)
    return mean_pred, freq, count


def reliability_figure(pred: torch.Tensor, outcome: torch.Tensor, bins: int = 10) -> Figure:
    """Predicted V vs how often the solution was right, per bin; a calibrated critic sits on the diagonal."""
    mean_pred, freq, count = reliability_bins(pred, outcome, bins)
    seen = count > 0
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    ax.plot(mean_pred[seen].tolist(), freq[seen].tolist(), "o-", label="critic")
    ax.set(xlabel="predicted V(s)", ylabel="fraction correct", xlim=(0, 1), ylim=(0, 1), title="reliability")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def value_trace_markdown(prompt: str, steps: Sequence[str], values: Sequence[float], targets: Sequence[float]) -> str:
    """A table of V and the MC target at every state of one solution, to see where it goes wrong."""
    rows = [f"**prompt** `{prompt.strip()}`", "", "| t | V(s_t) | MC(s_t) | step ending s_t |", "|---|---|---|---|"]
    texts = ["(prompt)", *steps]
    for t, (value, target, text) in enumerate(zip(values, targets, texts, strict=False)):
        shown = text.strip().replace("|", "\\|") or "(blank)"
        rows.append(f"| {t} | {value:.3f} | {target:.3f} | `{shown}` |")
    return "\n".join(rows)


def histogram_figure(values: torch.Tensor, title: str, xlabel: str = "value", bins: int = 30) -> Figure:
    """values (m,) as a bar histogram: for loggers with no histogram type of their own (MLflow)."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.hist(values.float().tolist(), bins=bins)
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    fig.tight_layout()
    return fig


def mc_value_by_step_figure(mc_value_by_step: Mapping[int, float], solve_rate: float | None) -> Figure:
    """Stage A at a glance: the mean MC value of the states at each step t, one point per step, under the
    policy's solve rate (how much the rollouts' values can tell correct from wrong starts)."""
    steps = sorted(mc_value_by_step)
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.plot(steps, [mc_value_by_step[t] for t in steps], "o-")
    rate = "n/a" if solve_rate is None else f"{solve_rate:.1%}"
    ax.set(xlabel="step t (0: the prompt)", ylabel="mean MC value", ylim=(0, 1), title=f"Stage A: solve rate {rate}")
    fig.tight_layout()
    return fig


def advantage_gap_figure(gaps: Sequence[float], states_kept: float | None, bins: int = 20) -> Figure:
    """Stage B at a glance: the kept states' advantage gaps (max A - min A) under the share of states kept."""
    kept = "n/a" if states_kept is None else f"{states_kept:.1%}"
    return histogram_figure(
        torch.tensor(gaps, dtype=torch.float32),  # (m,)
        title=f"Stage B: {kept} of states kept",
        xlabel="advantage gap max A - min A",
        bins=bins,
    )

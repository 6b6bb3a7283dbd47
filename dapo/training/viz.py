"""Pictures and text for TensorBoard: pure functions from arrays to a figure or markdown."""

from __future__ import annotations

from collections.abc import Sequence

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

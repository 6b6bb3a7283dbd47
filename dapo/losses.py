"""Losses as pure functions: tensors in, tensors out; no module state, trainer or logging.

Shapes: b = batch rows, s = sequence length, n = step boundaries per row.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

ValueLossKind = Literal["bce", "mse"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` where `mask` is True (0 when nothing is selected, so an empty batch adds no gradient)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def gather_at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (b, s), index (b, n) -> values[i, index[i, j]] as (b, n)."""
    return values.gather(1, index)


def value_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, kind: ValueLossKind = "bce"
) -> torch.Tensor:
    """Critic loss at step boundaries, computed in fp32.

    logits (b, n): value-head outputs before the sigmoid; targets (b, n): MC values in [0, 1], kept soft
    (0.7 stays 0.7); mask (b, n): True where a boundary has a target.
    bce: binary cross-entropy with soft targets, -[y log V + (1 - y) log(1 - V)]; mse: (V - y)^2.
    """
    logits, targets = logits.float(), targets.float()
    if kind == "bce":
        per_boundary = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    elif kind == "mse":
        per_boundary = (torch.sigmoid(logits) - targets) ** 2
    else:
        raise ValueError(f"unknown value loss {kind!r}; expected 'bce' or 'mse'")
    return masked_mean(per_boundary, mask)

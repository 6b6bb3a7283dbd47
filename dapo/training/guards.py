"""Non-finite losses and gradients: stop training with a message naming the batch, or skip the optimizer step.

A NaN or inf that reaches `optimizer.step()` poisons every weight it touches (Adam's moments keep it forever), and
the run goes on writing checkpoints of a broken model. `NonFiniteGuard` (dapo.callbacks, installed by both modules)
checks the loss before backward and the gradients before every optimizer step. With `on_nonfinite="raise"` (the
default) the first bad step stops the fit with a `NonFiniteError` naming the epoch, batch, global step and the
records in the batch, and the last checkpoint is untouched. With "skip" the step's gradients are dropped (the
optimizer leaves every weight and moment as it was), the skip is counted, logged as `train/skipped_steps` and
reported at the end. Under fp16 mixed precision an inf gradient is the loss scaler's business: it skips that step
and lowers the scale, so only the loss is checked there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import torch

NonFinitePolicy = Literal["raise", "skip"]
POLICIES = ("raise", "skip")
SHOWN = 5  # parameter names or record ids quoted in a message


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient stopped training; the message says where."""


def check_policy(policy: str) -> NonFinitePolicy:
    if policy not in POLICIES:
        raise ValueError(f"on_nonfinite must be one of {POLICIES}, got {policy!r}")
    return policy  # type: ignore[return-value]


def is_finite(loss: torch.Tensor) -> bool:
    return bool(torch.isfinite(loss.detach()).all())


def nonfinite_grads(named_parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> list[str]:
    """Names of parameters whose gradient holds a NaN or inf (local shards under FSDP)."""
    named = [(name, _local(p.grad)) for name, p in named_parameters if p.grad is not None]
    if not named:
        return []
    finite = torch.stack([g.isfinite().all() for _, g in named])  # one device sync for all of them
    if bool(finite.all()):
        return []
    return [name for (name, _), ok in zip(named, finite.tolist(), strict=True) if not ok]


def drop_grads(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Make the coming optimizer step a no-op: optimizers skip parameters without a gradient."""
    for p in parameters:
        p.grad = None


def batch_where(epoch: int, batch_idx: int, global_step: int, keys: Sequence[str]) -> str:
    """ "epoch 0, batch 7 (global step 7), records ['p1/s0', ...]" for error messages."""
    where = f"epoch {epoch}, batch {batch_idx} (global step {global_step})"
    if keys:
        more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
        where += f", records {list(keys[:SHOWN])}{more}"
    return where


def loss_text(loss: torch.Tensor) -> str:
    value = float(loss.detach().float().reshape(-1)[0]) if loss.numel() else math.nan
    return f"{value}"


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), the tensor itself otherwise."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor

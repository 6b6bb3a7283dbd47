"""Callbacks every CriticModule and ActorModule installs on its Trainer (`TrainableBackbone.configure_callbacks`).

NonFiniteGuard: a NaN or inf loss or gradient stops the fit naming the batch, or skips that optimizer step
(`dapo.training.guards`). RngCheckpoint: the RNG states go into every checkpoint and come back right before a
resumed fit trains its next batch (`dapo.training.rng`), so dropout draws as it would have without the
interruption.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

from dapo.training.guards import (
    NonFiniteError,
    NonFinitePolicy,
    batch_where,
    check_policy,
    drop_grads,
    is_finite,
    loss_text,
    nonfinite_grads,
)
from dapo.training.rng import restore_rng, rng_states

log = logging.getLogger(__name__)

SCALED_PRECISIONS = ("16-mixed", "16")  # a GradScaler skips steps with inf gradients on its own


class NonFiniteGuard(L.Callback):
    """Checks the loss before backward and the gradients before each optimizer step."""

    def __init__(self, policy: NonFinitePolicy = "raise") -> None:
        self.policy = check_policy(policy)
        self.skipped = 0
        self._batch = (0, 0)  # (epoch, batch index) of the batch in flight
        self._bad_loss = ""

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = (trainer.current_epoch, batch_idx)

    def _describe(self, trainer: L.Trainer) -> str:
        epoch, batch_idx = self._batch
        keys_of = getattr(trainer.datamodule, "train_batch_keys", None)  # type: ignore[attr-defined]
        keys = keys_of(batch_idx) if callable(keys_of) else []
        return batch_where(epoch, batch_idx, trainer.global_step, keys)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if is_finite(loss):
            return
        message = f"non-finite loss {loss_text(loss)} at {self._describe(trainer)}"
        if self.policy == "raise":
            raise NonFiniteError(f"{message}; set on_nonfinite: skip to skip such steps")
        self._bad_loss = message  # its gradients are dropped before the optimizer step

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        bad = [] if trainer.precision in SCALED_PRECISIONS else nonfinite_grads(pl_module.named_parameters())
        local = bool(bad or self._bad_loss)
        if not trainer.strategy.reduce_boolean_decision(local, all=False):  # every rank skips or none does
            return
        what = self._bad_loss or (
            f"non-finite gradients of {bad[:5]} at {self._describe(trainer)}"
            if bad
            else "a non-finite step on another rank"
        )
        if self.policy == "raise":
            raise NonFiniteError(f"{what}; set on_nonfinite: skip to skip such steps")
        drop_grads(p for group in optimizer.param_groups for p in group["params"])
        self.skipped += 1
        self._bad_loss = ""
        log.warning("skipped optimizer step %d: %s", trainer.global_step, what)
        pl_module.log("train/skipped_steps", float(self.skipped), reduce_fx="max")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.skipped:
            log.warning("skipped %d optimizer step(s) with a non-finite loss or gradients", self.skipped)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


class RngCheckpoint(L.Callback):
    """Saves the RNG states with each checkpoint; restores them when training resumes, after everything that runs
    between restoring a checkpoint and the first batch (sanity checks, fit-start hooks) has drawn what it draws."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict or None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            restore_rng(self._pending)
            self._pending = None

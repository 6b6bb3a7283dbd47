"""Optimizer and scheduler from injected factories: the one `configure_optimizers` both LightningModules share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable


def injected_optimizers(
    parameters: Iterable[torch.nn.Parameter], optimizer: OptimizerCallable, lr_scheduler: LRSchedulerCallable | None
) -> Any:
    """What `configure_optimizers` returns: the optimizer, and the scheduler stepped every optimizer step."""
    built = optimizer(parameters)
    if lr_scheduler is None:
        return built
    return {"optimizer": built, "lr_scheduler": {"scheduler": lr_scheduler(built), "interval": "step"}}

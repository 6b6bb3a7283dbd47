"""Data: StepDataModule and its pure collate, featurize and batching pieces (installed as dapo.data_modules).

StepDataModule (and with it Lightning) loads on first use: Stage B imports `dapo.data_modules.featurize`, and
`dapo advantages --help` should not pay for Lightning's import."""

from __future__ import annotations

import importlib
from typing import Any

from dapo.core.batching import padding_fraction, token_budget_batches

from .collate import collate_actor, collate_critic
from .sampler import TokenBudgetBatchSampler

__all__ = [
    "StepDataModule",
    "TokenBudgetBatchSampler",
    "collate_actor",
    "collate_critic",
    "padding_fraction",
    "token_budget_batches",
]


def __getattr__(name: str) -> Any:
    if name == "StepDataModule":
        return importlib.import_module(".step_data", __name__).StepDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

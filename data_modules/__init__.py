"""Data: StepDataModule and its pure collate, featurize and batching pieces (installed as dapo.data_modules)."""

from .collate import collate_actor, collate_critic
from .sampler import TokenBudgetBatchSampler, padding_fraction, plan_batches
from .step_data import StepDataModule

__all__ = [
    "StepDataModule",
    "TokenBudgetBatchSampler",
    "collate_actor",
    "collate_critic",
    "padding_fraction",
    "plan_batches",
]

"""A DataLoader that continues an epoch where a checkpoint left it.

Lightning stores `state_dict()` of a train loader that has one in every checkpoint, and on resume calls
`load_state_dict()` before iterating again. The state here is the epoch and how many of its batches were handed
out; on resume the batch sampler skips that many (nothing skipped is loaded or collated), so a run killed mid-epoch
and resumed trains on exactly the batches an uninterrupted run would. Iteration starts at the first `next()`,
after Lightning has set the sampler's epoch, so a resumed epoch follows that epoch's order and not epoch 0's; and a
checkpoint written after an epoch's last batch resumes into the next epoch (Lightning counts that epoch done and
sets the next one, which then starts from its first batch).
Worker seeds come from the loader's own generator, so loading data never draws from the global RNG that dropout
uses (which the modules checkpoint: `dapo.training.rng`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader


class ResumableBatchSampler(Protocol):
    epoch: int

    def start_next_at(self, batch: int) -> None: ...


class ResumableDataLoader(DataLoader):
    """A DataLoader over a batch sampler with `epoch` and `start_next_at` (TokenBudgetBatchSampler)."""

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        super().__init__(*args, **kwargs)
        self._position = (0, 0)  # (epoch, batches of it handed out)
        self._resume_at: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        sampler: ResumableBatchSampler = self.batch_sampler  # type: ignore[assignment]
        epoch, start = sampler.epoch, 0
        if self._resume_at is not None and self._resume_at[0] == epoch:
            start = self._resume_at[1]
        self._resume_at = None
        sampler.start_next_at(start)
        self._position = (epoch, start)
        for batch in super().__iter__():
            self._position = (epoch, self._position[1] + 1)
            yield batch

    def state_dict(self) -> dict[str, int]:
        epoch, served = self._position
        return {"epoch": epoch, "batches": served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches"]))

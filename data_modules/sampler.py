"""The batch sampler every StepDataModule loader uses: the batches of `dapo.core.batching.token_budget_batches`,
planned once, dealt in a new order each epoch (as fairseq does), so an epoch always has the same number of batches:
Lightning reads that number once and would otherwise drop or miss the batches by which a re-planned epoch differs
(about 1% of them).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

from dapo.core.batching import token_budget_batches


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches from `token_budget_batches`, dealt in a new order each epoch (`set_epoch`) and split across data-parallel
    ranks. An epoch's batches depend only on (seed, epoch), so `start_next_at` can resume an epoch at any batch."""

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        rows: Sequence[int] | None = None,
        *,
        shuffle: bool = True,
        bucket: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.lengths, self.max_tokens = list(lengths), max_tokens
        self.rows = list(rows) if rows is not None else [1] * len(self.lengths)
        self.shuffle, self.bucket, self.seed = shuffle, bucket, seed
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0
        self._start = 0
        self._plan = token_budget_batches(
            self.lengths, self.rows, max_tokens, shuffle=shuffle, bucket=bucket, seed=seed
        )

    @property
    def sampler(self) -> TokenBudgetBatchSampler:
        """Itself: at every epoch start Lightning calls `set_epoch` on a batch sampler's `sampler` (not on the batch
        sampler), as it does on a DistributedSampler."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_next_at(self, batch: int) -> None:
        """The next iteration skips this epoch's first `batch` batches (a run resumed mid-epoch)."""
        self._start = batch

    def epoch_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, in order, the skipped ones included."""
        return self._rank_batches()

    def _rank_batches(self) -> list[list[int]]:
        batches = list(self._plan)  # epoch 0 keeps the plan's own order
        if self.shuffle and self.epoch:
            random.Random(self.seed + self.epoch).shuffle(batches)  # the same batches, this epoch's order
        per_rank = len(batches) // self.num_replicas if self.num_replicas > 1 else len(batches)
        return batches[self.rank :: self.num_replicas][:per_rank]  # equal counts keep ranks in step

    def __iter__(self) -> Iterator[list[int]]:
        start, self._start = self._start, 0
        return iter(self._rank_batches()[start:])

    def __len__(self) -> int:
        return len(self._rank_batches())

"""Length-bucketed batching under a token budget, so padding stays small.

A batch costs (rows in it) x (longest sequence in it) tokens once padded; batches are filled up to
`max_tokens`. With bucketing, items are shuffled, then sorted by length inside windows of `bucket_window`
items, so neighbours have similar lengths. The batches are planned once; every epoch deals the same batches in a
new order (as fairseq does), so an epoch always has the same number of batches: Lightning reads that number once
and would otherwise drop or miss the batches by which a re-planned epoch differs (about 1% of them).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


def plan_batches(
    lengths: Sequence[int],
    rows: Sequence[int],
    max_tokens: int,
    *,
    shuffle: bool,
    bucket: bool,
    seed: int,
    bucket_window: int = 1024,
) -> list[list[int]]:
    """Index batches whose padded cost stays within `max_tokens` (an item over budget gets a batch alone). With
    `bucket`, a batch never spans two windows: it would pair one window's longest items with the next one's
    shortest."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    windows = [order[i : i + bucket_window] for i in range(0, len(order), bucket_window)] if bucket else [order]
    batches: list[list[int]] = []
    for window in windows:
        batches += _fill(sorted(window, key=lambda k: lengths[k]) if bucket else window, lengths, rows, max_tokens)
    if shuffle:
        rng.shuffle(batches)
    return batches


def _fill(order: Sequence[int], lengths: Sequence[int], rows: Sequence[int], max_tokens: int) -> list[list[int]]:
    """`order` cut into consecutive batches, each as long as the budget allows."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = n_rows = 0
    for i in order:
        if current and max(longest, lengths[i]) * (n_rows + rows[i]) > max_tokens:
            batches.append(current)
            current, longest, n_rows = [], 0, 0
        current.append(i)
        longest, n_rows = max(longest, lengths[i]), n_rows + rows[i]
    if current:
        batches.append(current)
    return batches


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int], rows: Sequence[int]) -> float:
    """Share of padded tokens over all tokens in `batches` (0.0 = no padding)."""
    real = sum(lengths[i] * rows[i] for batch in batches for i in batch)
    padded = sum(max(lengths[i] for i in batch) * sum(rows[i] for i in batch) for batch in batches)
    return 1.0 - real / padded if padded else 0.0


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches from `plan_batches`, dealt in a new order each epoch (`set_epoch`) and split across data-parallel
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
        self._plan = plan_batches(self.lengths, self.rows, max_tokens, shuffle=shuffle, bucket=bucket, seed=seed)

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

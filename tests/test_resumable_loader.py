"""ResumableDataLoader under a real Lightning loop: every epoch deals its own batch order, and a run stopped at any
step, the last batch of an epoch included, resumes onto exactly the batches an uninterrupted run trains on.

A checkpoint written after an epoch's last batch (before the epoch ends) once resumed by skipping the whole next
epoch: the loader was asked for the rest of the finished epoch. Lightning never set the batch sampler's epoch either,
so every epoch replayed epoch 0's order. Both are checked here in-process with a one-weight model (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from dapo.callbacks import StepCheckpoint
from dapo.data_modules import TokenBudgetBatchSampler
from dapo.data_modules.resumable import ResumableDataLoader

N_ITEMS, BUDGET, EPOCHS = 12, 3, 3  # 4 batches of 3 items an epoch (every item costs one token)


class Died(RuntimeError):
    """Stands for a kill: Lightning tears down and re-raises it, without a checkpoint."""


class Recorder(L.LightningModule):
    """Records the item ids of every batch it trains on; dies (an exception) after optimizer step `die_after`."""

    def __init__(self, die_after: int | None = None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []
        self.die_after = die_after

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.tolist())
        return (self.weight - batch.float().mean()) ** 2

    def on_train_batch_end(self, *args: object) -> None:
        if self.global_step == self.die_after:
            raise Died

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> ResumableDataLoader:
        sampler = TokenBudgetBatchSampler([1] * N_ITEMS, BUDGET, seed=5)
        return ResumableDataLoader(list(range(N_ITEMS)), batch_sampler=sampler, collate_fn=torch.tensor)


def fit(root: Path, module: Recorder, ckpt_path: str | None = None) -> None:
    checkpoint = StepCheckpoint(dirpath=root, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=EPOCHS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint],
        default_root_dir=root,
    )
    trainer.fit(module, ckpt_path=ckpt_path)


def test_every_epoch_deals_the_same_batches_in_its_own_order(tmp_path):
    straight = Recorder()
    fit(tmp_path, straight)
    epochs = [straight.seen[i : i + 4] for i in range(0, 4 * EPOCHS, 4)]
    assert len(straight.seen) == 4 * EPOCHS
    assert len({str(epoch) for epoch in epochs}) == EPOCHS  # no epoch replays another's order
    assert all(sorted(map(sorted, epoch)) == sorted(map(sorted, epochs[0])) for epoch in epochs)  # same batches


@pytest.mark.parametrize(("die_after", "where"), [(6, "mid-epoch"), (4, "after epoch 0's last batch"), (8, "epoch 1")])
def test_a_run_stopped_anywhere_resumes_onto_the_uninterrupted_batches(tmp_path, die_after, where):
    straight = Recorder()
    fit(tmp_path / "straight", straight)

    first = Recorder(die_after=die_after)
    with pytest.raises(Died):
        fit(tmp_path / "killed", first)
    # callbacks' batch-end hooks run before the module's: step `die_after` was checkpointed, then the run died
    resumed = Recorder()
    fit(tmp_path / "killed", resumed, ckpt_path=str(tmp_path / "killed" / "last.ckpt"))
    replayed = first.seen[:die_after] + resumed.seen
    assert replayed == straight.seen, where

"""StepCheckpoint: Lightning's ModelCheckpoint for runs that must survive a kill at any moment.

Set `every_n_train_steps` and a checkpoint (and `last.ckpt`, with `save_last`) is written every that many
optimizer steps, mid-epoch included, so `dapo fit ... --ckpt_path last` loses at most those steps (the data
position, optimizer, LR schedule and RNG all resume: `ResumableDataLoader`, `RngCheckpoint`). Lightning's
ModelCheckpoint takes step and epoch triggers as mutually exclusive and, once any `last.ckpt` exists, does not
refresh it when training ends; this one does, so `last.ckpt` always ends as the final weights (`dapo export`).

Every checkpoint is written to a hidden sibling and renamed over the old one (a folder for FSDP's sharded
checkpoints, swapped whole by `replace_dir`), so a kill mid-save leaves the previous checkpoint intact. Lightning's
own save is atomic only when $TMPDIR shares the checkpoint's filesystem, and FSDP writes its shards in place.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from dapo.records import clear_leftovers, replace_dir


def publish(staged: Path, target: Path) -> None:
    """Rename a finished checkpoint (a file or a sharded folder) over `target` in one step."""
    if staged.is_dir() and target.is_dir():
        replace_dir(staged, target)
    else:
        os.replace(staged, target)


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes atomically and refreshes `last.ckpt` when training ends."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        target = Path(filepath)
        staged = target.with_name(f".{target.name}.tmp-{trainer.global_step}")  # the same name on every rank
        if trainer.is_global_zero:
            clear_leftovers(target)  # what a save killed earlier left behind
        trainer.strategy.barrier("step_checkpoint_clear")
        super()._save_checkpoint(trainer, str(staged))
        trainer.strategy.barrier("step_checkpoint_written")
        if trainer.is_global_zero:
            publish(staged, target)
        trainer.strategy.barrier("step_checkpoint_published")
        self._last_checkpoint_saved = filepath

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        behind = self._last_global_step_saved != trainer.global_step
        if self.save_last and behind and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

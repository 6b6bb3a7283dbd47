"""Stage A and Stage B figures into the fit's logger, at fit start: scalars through `log_metrics` (any logger),
histograms where the logger is TensorBoard. Rank zero only (the stages' outputs are the same on every rank)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from dapo.stages.stage_stats import stage_a_stats, stage_b_stats


def log_stage_a(trainer: L.Trainer, out_dir: str | Path) -> None:
    """`stage_a/solve_rate`, and `stage_a/mc_value_by_step` with the step t as the logger's step."""
    if trainer.logger is None or not trainer.is_global_zero:
        return
    stats = stage_a_stats(out_dir)
    if stats["solve_rate"] is not None:
        trainer.logger.log_metrics({"stage_a/solve_rate": stats["solve_rate"]}, step=0)
    for t, value in stats["mc_value_by_step"].items():
        trainer.logger.log_metrics({"stage_a/mc_value_by_step": value}, step=t)


def log_stage_b(trainer: L.Trainer, out_dir: str | Path) -> None:
    """`stage_b/share_states_kept`, and the histogram `stage_b/advantage_gap` of the kept states' gaps."""
    if trainer.logger is None or not trainer.is_global_zero:
        return
    summary: dict[str, Any] = json.loads((Path(out_dir) / "summary.json").read_text())
    stats = stage_b_stats(out_dir, int(summary["states"]))
    if stats["states_kept"] is not None:
        trainer.logger.log_metrics({"stage_b/share_states_kept": stats["states_kept"]}, step=0)
    if isinstance(trainer.logger, TensorBoardLogger) and stats["gaps"]:
        trainer.logger.experiment.add_histogram("stage_b/advantage_gap", torch.tensor(stats["gaps"]), 0)

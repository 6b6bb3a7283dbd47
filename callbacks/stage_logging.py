"""Stage A and Stage B summaries into every logger of the fit, at fit start: scalars through `log_metrics`, and one
picture each through dapo.training.media (TensorBoard, W&B, MLflow). Rank zero only (the stages' outputs are the
same on every rank)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch

from dapo.stages.stage_stats import stage_a_stats, stage_b_stats
from dapo.training.media import log_figure, log_histogram
from dapo.training.viz import advantage_gap_figure, mc_value_by_step_figure


def log_stage_a(trainer: L.Trainer, out_dir: str | Path) -> None:
    """`stage_a/solve_rate`, `stage_a/mc_value_by_step` with the step t as the logger's step, and the picture
    `stage_a/summary` (MC value by step under the solve rate)."""
    if not trainer.loggers or not trainer.is_global_zero:
        return
    stats = stage_a_stats(out_dir)
    for logger in trainer.loggers:
        if stats["solve_rate"] is not None:
            logger.log_metrics({"stage_a/solve_rate": stats["solve_rate"]}, step=0)
        for t, value in stats["mc_value_by_step"].items():
            logger.log_metrics({"stage_a/mc_value_by_step": value}, step=t)
    if stats["mc_value_by_step"]:
        figure = mc_value_by_step_figure(stats["mc_value_by_step"], stats["solve_rate"])
        log_figure(trainer.loggers, "stage_a/summary", figure, step=0)


def log_stage_b(trainer: L.Trainer, out_dir: str | Path) -> None:
    """`stage_b/share_states_kept`, the histogram `stage_b/advantage_gap` of the kept states' gaps, and the
    picture `stage_b/summary` (those gaps under the share of states kept)."""
    if not trainer.loggers or not trainer.is_global_zero:
        return
    summary: dict[str, Any] = json.loads((Path(out_dir) / "summary.json").read_text())
    stats = stage_b_stats(out_dir, int(summary["states"]))
    if stats["states_kept"] is not None:
        for logger in trainer.loggers:
            logger.log_metrics({"stage_b/share_states_kept": stats["states_kept"]}, step=0)
    if stats["gaps"]:
        log_histogram(trainer.loggers, "stage_b/advantage_gap", torch.tensor(stats["gaps"]), step=0)  # (m,)
        log_figure(trainer.loggers, "stage_b/summary", advantage_gap_figure(stats["gaps"], stats["states_kept"]), 0)

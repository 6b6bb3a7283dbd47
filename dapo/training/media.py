"""Figures, histograms and text into every logger of a fit: TensorBoard, W&B and MLflow.

Scalars reach any Lightning logger through `log_metrics`; pictures have no common API. TensorBoard takes
`add_figure` / `add_histogram` / `add_text`; W&B takes `wandb.Image`, `wandb.Histogram` and a one-cell
`wandb.Table` in a `log_metrics` call (so they share the `trainer/global_step` axis of the scalars); MLflow takes
artifact files, `<tag>/step_<step>.png` (a histogram is drawn as a picture) and `<tag>/step_<step>.md`.
A logger of any other kind (CSVLogger, ...) gets one warning per kind of media, naming its class and what it missed.
wandb and mlflow are imported by their loggers only, so neither is needed unless it is used.
Rank zero only: the other ranks' loggers write nothing.

Left out on purpose: images other than matplotlib figures, audio and video, loggers outside these three.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure

from dapo.training.viz import histogram_figure

log = logging.getLogger(__name__)

_warned: set[tuple[str, str]] = set()  # (logger class, kind of media) already warned about


@rank_zero_only
def log_figure(loggers: Iterable[Logger], tag: str, figure: Figure, step: int) -> None:
    """A matplotlib figure, e.g. `trainer.loggers` and `val/reliability`; the figure is left open (several
    loggers draw the same one)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, figure, step, close=False)
        elif isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({tag: wandb.Image(figure)}, step)  # type: ignore[dict-item]
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_figure(logger.run_id, figure, _artifact_file(tag, step, "png"))
        else:
            _not_written(logger, "figures", tag)


@rank_zero_only
def log_histogram(loggers: Iterable[Logger], tag: str, values: torch.Tensor, step: int) -> None:
    """The distribution of `values` (any shape, flattened to (m,)); MLflow gets it drawn as a picture."""
    values = values.detach().float().cpu().flatten()  # (m,)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_histogram(tag, values, step)
        elif isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({tag: wandb.Histogram(values.tolist())}, step)  # type: ignore[dict-item]
        elif isinstance(logger, MLFlowLogger):
            figure = histogram_figure(values, title=f"{tag}, step {step}")
            logger.experiment.log_figure(logger.run_id, figure, _artifact_file(tag, step, "png"))
        else:
            _not_written(logger, "histograms", tag)


@rank_zero_only
def log_text(loggers: Iterable[Logger], tag: str, text: str, step: int) -> None:
    """Markdown text (value traces, benchmark samples); W&B shows it as a one-cell table, MLflow as a .md file."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(tag, text, step)
        elif isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({tag: wandb.Table(columns=["text"], data=[[text]])}, step)  # type: ignore[dict-item]
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_text(logger.run_id, text, _artifact_file(tag, step, "md"))
        else:
            _not_written(logger, "text", tag)


def _artifact_file(tag: str, step: int, suffix: str) -> str:
    """MLflow artifact path: one folder per tag, one file per step, e.g. val/reliability/step_000120.png."""
    return f"{tag}/step_{step:06d}.{suffix}"


def _not_written(logger: Logger, kind: str, tag: str) -> None:
    """Say once per logger class and kind that something was dropped, rather than failing the fit or staying
    silent."""
    name = type(logger).__name__
    if (name, kind) in _warned:
        return
    _warned.add((name, kind))
    log.warning(
        "%s takes no %s: %r (and any later ones) not written to it; figures, histograms and text go to "
        "TensorBoardLogger, WandbLogger and MLFlowLogger",
        name,
        kind,
        tag,
    )

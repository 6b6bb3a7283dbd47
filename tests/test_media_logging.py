"""Figures, histograms and text reach TensorBoard, W&B (offline) and MLflow (local file store) through
dapo.training.media, read back from the files each one writes; any other logger is named in one warning; the
Stage A / Stage B pictures and their logging; wandb and mlflow stay unimported until their loggers are used."""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dapo.callbacks import stage_logging
from dapo.training import media
from dapo.training.media import log_figure, log_histogram, log_text
from dapo.training.viz import advantage_gap_figure, mc_value_by_step_figure

VALUES = torch.tensor([0.1, 0.2, 0.2, 0.7, 0.9])  # (5,)
TEXT = "| t | V |\n|---|---|\n| 0 | 0.5 |"
STEP = 3


def _figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


def _log_all_three(loggers: list) -> None:
    log_figure(loggers, "t/figure", _figure(), STEP)
    log_histogram(loggers, "t/histogram", VALUES, STEP)
    log_text(loggers, "t/text", TEXT, STEP)


def _events(logger: TensorBoardLogger) -> EventAccumulator:
    logger.experiment.flush()
    return EventAccumulator(logger.log_dir, size_guidance={"tensors": 0, "images": 0}).Reload()


def _is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()  # raises on a truncated or corrupt file
        return image.format == "PNG" and image.size[0] > 0


def test_tensorboard_gets_a_figure_a_histogram_and_text(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    _log_all_three([logger])
    events = _events(logger)
    (image,) = events.Images("t/figure")
    assert image.step == STEP and image.width > 0
    (histogram,) = events.Histograms("t/histogram")
    assert histogram.step == STEP and histogram.histogram_value.num == 5
    assert histogram.histogram_value.max == pytest.approx(0.9)
    (text,) = events.Tensors("t/text/text_summary")  # add_text's tag
    assert text.step == STEP and text.tensor_proto.string_val[0].decode() == TEXT


def _wandb_history(run_file: Path) -> list[dict[tuple[str, ...], object]]:
    """The history rows of an offline run's .wandb file. It is a LevelDB-style log: a 7-byte file header, then
    32 KiB blocks of records, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last;
    a block's tail shorter than a header is padding), whose payloads join into protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2

    data, pos, payload, rows = run_file.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if kind not in (1, 2, 3, 4):
            break
        payload, pos = payload + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            payload = b""
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append({tuple(i.nested_key) or (i.key,): json.loads(i.value_json) for i in items})
    return rows


def test_wandb_offline_gets_a_figure_a_histogram_and_text(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(offline=True, project="dapo", save_dir=str(tmp_path))
    _log_all_three([logger])
    logger.experiment.finish()

    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    (png,) = (run / "files/media/images/t").glob("figure_*.png")
    assert _is_png(png)
    (table,) = (run / "files/media/table/t").glob("text_*.table.json")
    assert json.loads(table.read_text()) == {"columns": ["text"], "data": [[TEXT]]}
    rows = _wandb_history(next(run.glob("run-*.wandb")))
    (histogram,) = [row for row in rows if ("t/histogram", "_type") in row]
    assert histogram[("t/histogram", "_type")] == "histogram"
    assert sum(histogram[("t/histogram", "values")]) == 5  # type: ignore[arg-type]
    assert histogram[("trainer/global_step",)] == STEP
    assert sum(("t/figure", "_type") in row for row in rows) == 1


def test_mlflow_file_store_gets_a_figure_a_histogram_picture_and_text(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file store without it
    logger = MLFlowLogger(experiment_name="dapo", tracking_uri=f"file:{tmp_path}/mlruns")
    _log_all_three([logger])
    logger.finalize("success")

    (artifacts,) = (tmp_path / "mlruns").glob(f"*/{logger.run_id}/artifacts")
    assert _is_png(artifacts / "t/figure/step_000003.png")
    assert _is_png(artifacts / "t/histogram/step_000003.png")
    assert (artifacts / "t/text/step_000003.md").read_text() == TEXT


def test_an_unknown_logger_is_named_once_per_kind_and_the_others_still_get_theirs(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(media, "_warned", set())
    tensorboard = TensorBoardLogger(tmp_path, name="tb", version=0)
    loggers = [CSVLogger(tmp_path), tensorboard]
    with caplog.at_level(logging.WARNING, logger="dapo.training.media"):
        _log_all_three(loggers)
        log_figure(loggers, "t/figure", _figure(), STEP + 1)  # a second figure: no second warning
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3, warnings
    for kind, tag in (("figures", "t/figure"), ("histograms", "t/histogram"), ("text", "t/text")):
        assert any(w.startswith(f"CSVLogger takes no {kind}: '{tag}'") for w in warnings), (kind, warnings)
    assert [e.step for e in _events(tensorboard).Images("t/figure")] == [STEP, STEP + 1]


def test_wandb_and_mlflow_are_not_imported_by_the_modules_that_log():
    code = (
        "import sys, dapo.training.critic, dapo.training.actor, dapo.callbacks; "
        "print(sorted(m for m in ('wandb', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_stage_a_picture_has_one_point_per_step_under_the_solve_rate():
    figure = mc_value_by_step_figure({2: 1.0, 0: 0.5, 1: 0.25}, solve_rate=0.25)
    (ax,) = figure.axes
    (line,) = ax.lines
    assert list(line.get_xdata()) == [0, 1, 2] and list(line.get_ydata()) == [0.5, 0.25, 1.0]
    assert ax.get_title() == "Stage A: solve rate 25.0%"
    assert mc_value_by_step_figure({0: 0.5}, None).axes[0].get_title() == "Stage A: solve rate n/a"


def test_stage_b_picture_is_a_histogram_of_the_gaps_under_the_share_kept():
    """Gaps 0.1, 0.5, 0.5, 0.9 in 4 bins over [0.1, 0.9] (width 0.2): counts 1, 0, 2, 1."""
    figure = advantage_gap_figure([0.1, 0.5, 0.5, 0.9], states_kept=0.4, bins=4)
    (ax,) = figure.axes
    assert [bar.get_height() for bar in ax.patches] == [1, 0, 2, 1]
    assert ax.get_title() == "Stage B: 40.0% of states kept"


def test_stage_summaries_are_logged_as_scalars_and_one_picture_each(tmp_path, monkeypatch):
    stage_a = {"solve_rate": 0.5, "mc_value_by_step": {0: 0.5, 1: 0.75}}
    monkeypatch.setattr(stage_logging, "stage_a_stats", lambda out_dir: stage_a)
    monkeypatch.setattr(stage_logging, "stage_b_stats", lambda out_dir, n: {"states_kept": 3 / n, "gaps": [0.2] * 3})
    (tmp_path / "summary.json").write_text(json.dumps({"states": 4}))
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = SimpleNamespace(loggers=[logger], is_global_zero=True)
    stage_logging.log_stage_a(trainer, tmp_path)  # type: ignore[arg-type]
    stage_logging.log_stage_b(trainer, tmp_path)  # type: ignore[arg-type]

    events = _events(logger)
    assert [(e.step, e.value) for e in events.Scalars("stage_a/mc_value_by_step")] == [(0, 0.5), (1, 0.75)]
    assert events.Scalars("stage_a/solve_rate")[0].value == 0.5
    assert events.Scalars("stage_b/share_states_kept")[0].value == 0.75
    assert events.Histograms("stage_b/advantage_gap")[0].histogram_value.num == 3
    assert len(events.Images("stage_a/summary")) == 1 and len(events.Images("stage_b/summary")) == 1

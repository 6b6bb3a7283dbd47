"""Fit configs as plain data: loaded from YAML, merged with overlays (as repeated `--config` flags would), and
pointed at a run's folders. `dapo iterate`, `dapo plan` and `dapo demo` build every fit they run from these."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from dapo.core.errors import MissingFile

Config = dict[str, Any]
# What the command line hands `iterate` and `plan` as overlays. A bare `dict`, because jsonargparse would build the
# objects named by `class_path` inside a `dict[str, Any]` (callbacks, tasks), and a fit config must stay plain data
# to be merged, placed and compared on resume.
Overlay = dict


def deep_merge(base: Config, overlay: Config) -> Config:
    """`base` with `overlay` on top: nested dicts merge key by key, anything else (lists too) is replaced."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str, overlays: list[Config]) -> Config:
    """A fit config from YAML with overlays merged in order (as repeated `--config` flags would)."""
    file = Path(path)
    if not file.is_file():
        raise MissingFile(f"no config at {file} (paths are relative to {Path.cwd()})")
    config = yaml.safe_load(file.read_text()) or {}
    for overlay in overlays:
        config = deep_merge(config, overlay)
    return config


def place_outputs(config: Config, root: Path) -> Config:
    """Point a fit's logs and checkpoints into `root`: default_root_dir, the logger's save_dir and every
    checkpoint callback's dirpath (`root/checkpoints`)."""
    config = copy.deepcopy(config)
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(root)
    logger = trainer.get("logger")
    if isinstance(logger, dict):
        logger.setdefault("init_args", {})["save_dir"] = str(root)
    for callback in trainer.get("callbacks") or []:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("Checkpoint"):
            callback.setdefault("init_args", {})["dirpath"] = str(root / "checkpoints")
    return config


def fit_overlay(
    trainer: Overlay | None = None,
    data: Overlay | None = None,
    stage_a: Overlay | None = None,
    advantages: Overlay | None = None,
    seed: int | None = None,
) -> Config:
    """What `iterate` merges into both fit configs (see its arguments)."""
    overlay = {"trainer": trainer or {}, "data": data or {}, "stage_a": stage_a or {}, "advantages": advantages or {}}
    if seed is not None:
        overlay = deep_merge(overlay, {"seed_everything": seed, "stage_a": {"rollout": {"seed": seed}}})
    return overlay

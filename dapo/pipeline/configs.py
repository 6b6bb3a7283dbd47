"""Fit configs as plain data: loaded from YAML, merged with overlays (as repeated `--config` flags would), and
pointed at a run's folders. `dapo iterate`, `dapo plan` and `dapo demo` build every fit they run from these."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from dapo.core.errors import MissingFile, UserError

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


def round_problems(base: Config, round_: int, per_round: int | None) -> Config:
    """The critic config whose Stage A takes round `round_`'s slice of the problems: the `per_round` after the
    earlier rounds' (from the config's own `skip` on), e.g. 2 rounds of 192: problems 0-191, then 192-383. None:
    the config's problems in every round."""
    if per_round is None:
        return base
    skip = int(_rollout_section(base).get("skip") or 0) + (round_ - 1) * per_round
    return deep_merge(base, {"stage_a": {"rollout": {"skip": skip, "limit": per_round}}})


def check_problems_per_round(base: Config, iterations: int, per_round: int | None) -> None:
    """Refuse rounds whose slices do not fit in the problems the critic config keeps (its stage_a.rollout.limit)."""
    if per_round is None:
        return
    if per_round < 1:
        raise ValueError(f"problems_per_round must be >= 1 or None, got {per_round}")
    limit = _rollout_section(base).get("limit")
    if limit is not None and iterations * per_round > int(limit):
        raise UserError(
            f"{iterations} rounds of {per_round} problems need {iterations * per_round}, but the critic config's "
            f"stage_a.rollout.limit keeps {limit}: lower problems_per_round or raise the limit"
        )


def _rollout_section(config: Config) -> Config:
    """A critic config's stage_a.rollout settings ({} where unset)."""
    return (config.get("stage_a") or {}).get("rollout") or {}


def merge_repeated_configs(args: list[str]) -> list[str]:
    """Command-line arguments in which each `--config FILE` after the first carries, for every section (a top-level
    mapping such as `trainer` or `stage_a`) it sets, that section merged over what the earlier files set.

    Why: a command's section is one `dict` argument, and jsonargparse lets a later `--config` replace it whole, so
    `--config configs/debug.yaml --config configs/ddp.yaml` would drop debug.yaml's `trainer` settings silently.
    `dapo fit` (LightningCLI) merges such files key by key; with this, every dapo command does. A `--section` flag
    between files starts that section over, as it would without files. Files are read as YAML and handed on as
    YAML text; a single `--config` is left as it is.
    """
    config_flags = [i for i, arg in enumerate(args) if arg == "--config" or arg.startswith("--config=")]
    if len(config_flags) < 2:
        return args
    out: list[str] = []
    sections: dict[str, Config] = {}  # each section as the files so far have set it
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--config" or arg.startswith("--config="):
            path = arg.partition("=")[2] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
            i += 1 if "=" in arg else 2
            config = _config_file(path)
            for key, value in config.items():
                if isinstance(value, dict):
                    sections[key] = config[key] = deep_merge(sections.get(key, {}), value)
            out += ["--config", yaml.safe_dump(config, sort_keys=False)]
            continue
        if arg.startswith("--"):
            sections.pop(arg[2:].partition("=")[0].partition(".")[0], None)
        out.append(arg)
        i += 1
    return out


def _config_file(path: str) -> Config:
    file = Path(path)
    if not file.is_file():
        raise MissingFile(f"--config {path}: no such file (paths are relative to {Path.cwd()})")
    config = yaml.safe_load(file.read_text()) or {}
    if not isinstance(config, dict):
        raise UserError(f"--config {path}: expected a mapping of options at the top, got {type(config).__name__}")
    return config

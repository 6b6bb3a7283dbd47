"""Errors whose message is the whole story: `dapo COMMAND` prints them as one line (no traceback) and exits 2.

The kinds every command can meet before any work starts:
- `MissingExtra`: an optional feature's package is not installed. Optional packages are imported only by the
  feature that uses them (`require`), so the core pipeline runs on `[project.dependencies]` alone.
- `MissingModelFolder`: a command was pointed at a model folder that does not exist yet (`check_model_folder`);
  `MissingFile`, its parent, for other files (a config, a GGUF file).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class UserError(Exception):
    """Bad input or set-up that the user fixes; the message says what and how."""


class MissingExtra(UserError, ImportError):
    """An optional package is missing; the message names the extra that installs it."""


class MissingFile(UserError, FileNotFoundError):
    """A file a command was pointed at (a config, a model folder) does not exist."""


class MissingModelFolder(MissingFile):
    """A model folder a command needs does not exist (or is not a Hugging Face folder)."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import optional package `module` for `feature`, or say which extra of dapo installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtra(
            f'{feature} needs the package {module!r}, which is not installed: pip install "dapo[{extra}]"'
        ) from error


def check_model_folder(path: str, what: str, made_by: Callable[[str], str] | None = None) -> None:
    """Refuse a model folder that is missing or has no config.json, naming it and the command that makes it
    (`made_by(path)`; default: a policy's, `make_policy`).

    A missing path shaped like a Hub id (`org/name`) is left to transformers while the Hub is reachable."""
    folder = Path(path)
    if (folder / "config.json").is_file():
        return
    if not folder.exists() and HUB_ID.fullmatch(path) and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", ""):
        return
    problem = "does not exist" if not folder.exists() else "has no config.json (not a Hugging Face model folder)"
    raise MissingModelFolder(f"{what} {path} {problem}; make it first: {(made_by or make_policy)(path)}")


def make_policy(path: str) -> str:
    """The commands that make a policy folder at `path`."""
    return f"dapo tiny-model --out {path} --sft_steps 300 (the bundled arith task) or dapo import-gguf --out {path}"


def make_critic(path: str) -> str:
    """The commands that make a critic folder at `path`."""
    return f"dapo fit --config configs/critic.yaml, then dapo export --ckpt <its checkpoints>/last.ckpt --out {path}"

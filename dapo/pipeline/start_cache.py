"""A cache of the demo's start policies on this machine, keyed by everything that makes one.

Why: the start policy is the demo's costliest stage and a pure function of the task, the start settings, the seed,
the code that trains it and the machine (the same seed trains another model on another CPU). A second demo with
the same start (another Stage B setting, another method, a comparison's rounds) copies it instead of training it
again. The key records all of that; a record that differs in anything trains anew, never reuses.

The cache lives in `$DAPO_CACHE/start-policies/KEY/` (default `~/.cache/dapo`): the model folder and its
fine-tuning logs, plus `key.json`, the record they were made from. Delete the folder to drop them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

from dapo.core.fingerprint import policy_fingerprint
from dapo.core.machine import cpu_model
from dapo.records import write_json
from dapo.records.atomic import staged_dir

log = logging.getLogger(__name__)

CACHE_ENV = "DAPO_CACHE"
KEY_FILE = "key.json"


def cache_root() -> Path:
    """`$DAPO_CACHE`, else `~/.cache/dapo`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dapo")


def start_record(
    settings: dict[str, Any], base_model: str | None, code: Sequence[Callable[..., Any]]
) -> dict[str, Any]:
    """What a start policy is made from: `settings` (task, start settings, seed), the base model's weights, the
    source of every module that holds a function in `code`, the library versions and the CPU."""
    modules = sorted({inspect.getsourcefile(fn) or "" for fn in code})
    source = hashlib.sha256()
    for path in modules:
        source.update(Path(path).read_bytes())
    return {
        **settings,
        "base_model": policy_fingerprint(base_model) if base_model else None,
        "code": source.hexdigest()[:16],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu_model(),
    }


def cached_or_trained(record: dict[str, Any], outputs: dict[str, Path], train: Callable[[], object]) -> bool:
    """Copy the folders made from `record` into `outputs` (name -> folder), or `train()` them and keep a copy of
    each; True when copied. `train` must write every folder in `outputs`."""
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_root() / "start-policies" / key
    if (cached / KEY_FILE).is_file() and json.loads((cached / KEY_FILE).read_text()) == record:
        for name, out in outputs.items():
            with staged_dir(out) as tmp:
                shutil.copytree(cached / name, tmp)
        log.info("start policy copied from the cache: %s", cached)
        print(f"start policy: copied from {cached} (made from the same settings, code and machine)")
        return True
    train()
    with staged_dir(cached) as tmp:
        for name, out in outputs.items():
            shutil.copytree(out, tmp / name)
        write_json(tmp / KEY_FILE, record)
    return False

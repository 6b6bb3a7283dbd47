"""On-disk records: the datasets that flow between stages, their schemas, and atomic writes with provenance.

problems -> solutions -> states (MC values, completions) -> actions (advantages, reference log-probs).
Each is a Hugging Face `datasets` folder (Arrow) with a `provenance.json` beside the data, so any stage can be
re-run, resumed or inspected on its own. A folder of `shard-NNNNN` sub-folders reads as one dataset: Stage A
writes one shard at a time, so a killed run keeps every finished shard.

Schemas (one row each):
- problems:  id, task, prompt (the exact text the policy continues), answer (reference, may be ""),
             example (the task's original row as JSON, so `Task.score(example, response)` works for any task).
- solutions: solution_id, problem_id, prompt, steps (the sampled response split into steps), reward (0..1).
- states:    state_id, problem_id, solution_id, t (s_t = prompt + steps[:t]), prompt, steps (all steps of the
             solution), mc_value (fraction of rollouts from s_t that were correct; for t = len(steps) the
             solution's own reward), n_rollouts (0 when mc_value is exact), completions (continuations
             sampled from s_t), completion_rewards.
- actions:   state_id, problem_id, prompt, state_steps (s = prompt + state_steps), action (candidate next step),
             value (V(s + action)), advantage, is_terminal (the action ends the solution), ref_logprob
             (log pi_ref(action | s), summed over the action's tokens).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Sequence, Value, concatenate_datasets, load_from_disk
from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
SHARD_PREFIX = "shard-"

_STR, _INT, _FLOAT, _BOOL = Value("string"), Value("int32"), Value("float32"), Value("bool")

SCHEMAS: dict[str, Features] = {
    "problems": Features({"id": _STR, "task": _STR, "prompt": _STR, "answer": _STR, "example": _STR}),
    "solutions": Features(
        {"solution_id": _STR, "problem_id": _STR, "prompt": _STR, "steps": Sequence(_STR), "reward": _FLOAT}
    ),
    "states": Features(
        {
            "state_id": _STR,
            "problem_id": _STR,
            "solution_id": _STR,
            "t": _INT,
            "prompt": _STR,
            "steps": Sequence(_STR),
            "mc_value": _FLOAT,
            "n_rollouts": _INT,
            "completions": Sequence(_STR),
            "completion_rewards": Sequence(_FLOAT),
        }
    ),
    "actions": Features(
        {
            "state_id": _STR,
            "problem_id": _STR,
            "prompt": _STR,
            "state_steps": Sequence(_STR),
            "action": _STR,
            "value": _FLOAT,
            "advantage": _FLOAT,
            "is_terminal": _BOOL,
            "ref_logprob": _FLOAT,
        }
    ),
}


class RecordError(ValueError):
    """A record that does not fit its schema; the message names the file, row and field."""


@dataclass
class Provenance:
    """Where a dataset came from: enough to tell whether it is stale and to reproduce it."""

    producer: str
    kind: str = ""
    seed: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    policy_path: str | None = None
    policy_hash: str | None = None
    grader_version: str | None = None
    created: float = field(default_factory=time.time)


def _check_value(value: Any, feature: Any, where: str) -> None:
    if isinstance(feature, Sequence):
        if not isinstance(value, list | tuple):
            raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check_value(item, feature.feature, f"{where}[{i}]")
        return
    dtype = feature.dtype
    if dtype == "string" and not isinstance(value, str):
        raise RecordError(f"{where}: expected a string, got {type(value).__name__}")
    if dtype == "bool" and not isinstance(value, bool):
        raise RecordError(f"{where}: expected a bool, got {type(value).__name__}")
    if dtype.startswith("int") and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise RecordError(f"{where}: expected an integer, got {type(value).__name__}")
    if dtype.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise RecordError(f"{where}: expected a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise RecordError(f"{where}: value {value} is not finite")


def validate_row(row: Mapping[str, Any], kind: str, where: str) -> None:
    """Raise RecordError naming `where` and the field if `row` does not match the `kind` schema."""
    schema = schema_of(kind)
    missing = [name for name in schema if name not in row]
    if missing:
        raise RecordError(f"{where}: missing field(s) {missing}")
    for name, feature in schema.items():
        _check_value(row[name], feature, f"{where}, field {name!r}")


def schema_of(kind: str) -> Features:
    if kind not in SCHEMAS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {sorted(SCHEMAS)}")
    return SCHEMAS[kind]


def write_records(rows: Iterable[Mapping[str, Any]], path: str | Path, kind: str, provenance: Provenance) -> Path:
    """Validate `rows` and write them to `path` atomically (temp folder, then rename), with provenance."""
    path = Path(path)
    schema = schema_of(kind)
    rows = list(rows)
    for i, row in enumerate(rows):
        validate_row(row, kind, f"{path} row {i}")
    dataset = Dataset.from_dict({name: [row[name] for row in rows] for name in schema}, features=schema)
    provenance.kind = kind
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    _quiet_save(dataset, tmp)
    (tmp / PROVENANCE_FILE).write_text(json.dumps(asdict(provenance), indent=2, default=str))
    replace_dir(tmp, path)
    return path


def _quiet_save(dataset: Dataset, path: Path) -> None:
    """save_to_disk without its per-call progress bar (our stages show their own progress)."""
    was_enabled = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        dataset.save_to_disk(str(path), num_shards=1)  # one file even when empty, so it loads back
    finally:
        if was_enabled:
            enable_progress_bar()


@contextmanager
def staged_dir(out: str | Path) -> Iterator[Path]:
    """A fresh temp sibling of `out` to write a folder into; when the block ends without error it replaces `out`
    (`replace_dir`), and it is removed whatever happens, so a kill or an error never leaves a half-written `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder `src` to `dst`; an existing `dst` is kept until the new one is in place."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a small JSON file atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def move_aside(path: Path, why: str) -> Path:
    """Rename an outdated artifact to `<path>.stale-<time>` (kept for inspection, never deleted) and say so."""
    aside = path.with_name(f"{path.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
    os.replace(path, aside)
    log.warning("%s %s; moved it to %s", path, why, aside)
    return aside


def shard_paths(path: str | Path) -> list[Path]:
    """Finished shards of a sharded dataset folder, in order (temp folders are ignored)."""
    return sorted(p for p in Path(path).glob(f"{SHARD_PREFIX}*") if p.is_dir())


def read_records(path: str | Path, kind: str) -> Dataset:
    """Load a dataset (or a folder of shards) of `kind`, checking that its columns match the schema."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {kind} records at {path}")
    parts = shard_paths(path) or [path]
    datasets = []
    for part in parts:
        dataset = load_from_disk(str(part))
        if not isinstance(dataset, Dataset):
            raise RecordError(f"{part}: expected one dataset, found a DatasetDict")
        missing = set(schema_of(kind)) - set(dataset.column_names)
        if missing:
            raise RecordError(f"{part}: not {kind} records, missing column(s) {sorted(missing)}")
        datasets.append(dataset.select_columns(list(schema_of(kind))))
    return datasets[0] if len(datasets) == 1 else concatenate_datasets(datasets)


def read_provenance(path: str | Path) -> Provenance:
    """Provenance of a dataset folder, or of the first shard of a sharded folder."""
    path = Path(path)
    first = (shard_paths(path) or [path])[0]
    return Provenance(**json.loads((first / PROVENANCE_FILE).read_text()))

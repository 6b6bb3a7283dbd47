"""On-disk records: the datasets that flow between stages, their schemas, and their provenance.

problems -> solutions -> states (MC values, completions) -> actions (advantages, reference log-probs).
Each is a Hugging Face `datasets` folder (Arrow) with a `provenance.json` beside the data, so any stage can be
re-run, resumed or inspected on its own. A folder of `shard-NNNNN` sub-folders reads as one dataset: Stage A
writes one shard at a time, so a killed run keeps every finished shard.

Schemas (one row each):
- problems:  id, task, prompt (the exact text the policy continues), answer (reference, may be ""),
             example (the task's original row as JSON, so `Task.score(example, response)` works for any task).
- solutions: solution_id, problem_id, prompt, steps (the sampled response split into steps), reward (0..1),
             truncated (the token limit cut the response off: only its whole steps are kept, reward 0).
- states:    state_id, problem_id, solution_id, t (s_t = prompt + steps[:t]), prompt, steps (all steps of the
             solution), mc_value (fraction of rollouts from s_t that were correct; for t = len(steps) the
             solution's own reward), n_rollouts (0 when mc_value is exact), completions (continuations
             sampled from s_t), completion_rewards, completion_truncated (the token limit cut it off).
- actions:   state_id, problem_id, prompt, state_steps (s = prompt + state_steps), action (candidate next step),
             value (V(s + action)), advantage, is_terminal (the action ends the solution), ref_logprob
             (log pi_ref(action | s), summed over the action's tokens), weight (its share of the state's loss,
             nu(a | s); a state's weights average 1).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, List, Sequence, Value, concatenate_datasets, load_from_disk
from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

from dapo.records.atomic import recover_moved_aside, staged_dir
from dapo.records.checks import RecordError, SkipCounter, checked, unique
from dapo.records.readers import read_file

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
SHARD_PREFIX = "shard-"

_STR, _INT, _FLOAT, _BOOL = Value("string"), Value("int32"), Value("float32"), Value("bool")

SCHEMAS: dict[str, Features] = {
    "problems": Features({"id": _STR, "task": _STR, "prompt": _STR, "answer": _STR, "example": _STR}),
    "solutions": Features(
        {
            "solution_id": _STR,
            "problem_id": _STR,
            "prompt": _STR,
            "steps": Sequence(_STR),
            "reward": _FLOAT,
            "truncated": _BOOL,
        }
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
            "completion_truncated": Sequence(_BOOL),
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
            "weight": _FLOAT,
        }
    ),
}


# Columns added after records were first written, with the value an older row means: a row or a saved dataset
# without them reads (and a writer that leaves them out writes) that value.
DEFAULTS: dict[str, dict[str, Any]] = {
    "solutions": {"truncated": lambda row: False},  # records from before truncation was recorded: not cut off
    "states": {"completion_truncated": lambda row: [False] * len(row.get("completions") or [])},
    "actions": {"weight": lambda row: 1.0},  # every action of a state weighed the same
}


def with_defaults(row: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """`row` with the later-added columns it lacks filled in (`DEFAULTS`)."""
    missing = {name: default(row) for name, default in DEFAULTS.get(kind, {}).items() if name not in row}
    return {**row, **missing} if missing else row


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
    rows = [with_defaults(row, kind) for row in rows]
    for i, row in enumerate(rows):
        validate_row(row, kind, f"{path} row {i}")
    dataset = Dataset.from_dict({name: [row[name] for row in rows] for name in schema}, features=schema)
    provenance.kind = kind
    with staged_dir(path) as tmp:
        _quiet_save(dataset, tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(asdict(provenance), indent=2, default=str))
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


def shard_paths(path: str | Path) -> list[Path]:
    """Finished shards of a sharded dataset folder, in order (temp folders are ignored)."""
    return sorted(p for p in Path(path).glob(f"{SHARD_PREFIX}*") if p.is_dir())


def read_records(path: str | Path, kind: str, strict: bool = True) -> Dataset:
    """Records of `kind` from a dataset folder, a folder of shards, or a `.jsonl` / `.json` / `.parquet` file of
    rows (records made by other tools). Columns must match the schema; rows must pass `dapo.records.checks` (no
    empty prompt, NaN, out-of-range value, null or repeated id) or a RecordError names the file, row and field.
    strict=False drops such rows instead, and reports how many for which reason."""
    path = Path(path)
    recover_moved_aside(path)
    if not path.exists():
        raise FileNotFoundError(f"no {kind} records at {path}")
    skipped = SkipCounter()
    if path.is_file():
        parts = [checked(_rows_file(path, kind, strict, skipped), kind, str(path), strict, skipped)]
    else:
        parts = [checked(_dataset_part(p, kind), kind, str(p), strict, skipped) for p in shard_paths(path) or [path]]
    dataset = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    dataset = unique(dataset, kind, str(path), strict, skipped)
    skipped.report(f"{kind} records of {path}")
    return dataset


def _dataset_part(part: Path, kind: str) -> Dataset:
    """One saved dataset, its schema columns only, after checking their names and types."""
    dataset = load_from_disk(str(part))
    if not isinstance(dataset, Dataset):
        raise RecordError(f"{part}: expected one dataset, found a DatasetDict")
    schema = schema_of(kind)
    for name, default in DEFAULTS.get(kind, {}).items():  # a dataset written before the column existed
        if name not in dataset.column_names and set(schema) - {name} <= set(dataset.column_names):
            dataset = dataset.add_column(name, [default(row) for row in dataset])
    missing = set(schema) - set(dataset.column_names)
    if missing:
        raise RecordError(f"{part}: not {kind} records, missing column(s) {sorted(missing)}")
    dataset = dataset.select_columns(list(schema))
    for name, feature in schema.items():
        if not _compatible(dataset.features[name], feature):
            raise RecordError(f"{part}: column {name!r} holds {dataset.features[name]}, expected {feature}")
    return dataset.cast(schema) if dataset.features != schema else dataset


def _compatible(found: Any, expected: Any) -> bool:
    """Same type, or numbers where numbers are expected (an int or float64 column casts to float32 exactly enough)."""
    if isinstance(expected, List):
        return isinstance(found, List) and _compatible(found.feature, expected.feature)
    if not isinstance(found, Value):
        return False
    numeric = ("int", "uint", "float")
    if expected.dtype.startswith(numeric):
        return found.dtype.startswith(numeric)
    return found.dtype == expected.dtype or (expected.dtype == "string" and found.dtype == "large_string")


def _rows_file(path: Path, kind: str, strict: bool, skipped: SkipCounter) -> Dataset:
    """Rows of a JSONL / JSON / Parquet file checked against the schema (missing fields, wrong types)."""
    schema, rows = schema_of(kind), []
    for i, row in enumerate(read_file(path)):  # malformed JSON, non-UTF-8: errors naming the file and line
        row = dict(with_defaults(row, kind))
        try:
            validate_row(row, kind, f"{path} row {i}")
        except RecordError as error:
            skipped.skip_or_raise(strict, str(error), "missing field or wrong type")
            continue
        rows.append(row)
    return Dataset.from_dict({name: [row[name] for row in rows] for name in schema}, features=schema)


def read_provenance(path: str | Path) -> Provenance:
    """Provenance of a dataset folder, or of the first shard of a sharded folder."""
    path = Path(path)
    first = (shard_paths(path) or [path])[0]
    return Provenance(**json.loads((first / PROVENANCE_FILE).read_text()))

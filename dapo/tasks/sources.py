"""Rows of a task's data, from a local file, a local folder of split files, or a Hugging Face hub dataset.

Benchmarks (MATH, GSM8K, MBPP) live on the hub, but this machine kind is offline, so every task's `data` may
also be a local file in the dataset's original format (tests ship small fixtures). One function reads them all:

  * a file (`.jsonl`, `.jsonl.gz`, `.json` holding a list of rows or JSON lines, `.parquet`) is the split asked
    for, whatever its name: one file holds one split;
  * a folder holds one file per split: `{folder}/{split}.jsonl` (or `.jsonl.gz`, `.json`, `.parquet`);
  * anything else is a hub dataset name, passed to `datasets.load_dataset(source, subset, split=split)`.

Errors name the file and the line (malformed JSON, a line that is not an object), so a broken fixture or export
is found without a debugger. Rows come back as plain dicts, untouched.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")  # in the order a split folder is searched


def load_rows(source: str, split: str, subset: str | None = None) -> list[Row]:
    """Rows of `split` from `source`: a local file, a folder of split files, or a hub dataset name."""
    path = Path(source).expanduser()
    if path.is_dir():
        return read_file(split_file(path, split))
    if path.is_file():
        return read_file(path)
    if source.endswith(SUFFIXES):  # clearly meant as a file: the hub would only add a confusing error
        raise FileNotFoundError(f"data file {source!r} does not exist (resolved to {path.resolve()})")
    return _load_hub(source, subset, split)


def split_file(folder: Path, split: str) -> Path:
    """The file of `split` in `folder`: the first of `{split}.jsonl`, `.jsonl.gz`, `.json`, `.parquet` present."""
    for suffix in SUFFIXES:
        if (candidate := folder / f"{split}{suffix}").is_file():
            return candidate
    names = ", ".join(f"{split}{suffix}" for suffix in SUFFIXES)
    raise FileNotFoundError(f"data folder {str(folder)!r} has no file for split {split!r} (looked for {names})")


def read_file(path: Path) -> list[Row]:
    """All rows of one local file, by its suffix."""
    name = path.name
    if name.endswith(".parquet"):
        return _read_parquet(path)
    if name.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return _parse_json_lines(f.read(), path)
    if name.endswith(".jsonl"):
        return _parse_json_lines(path.read_text(encoding="utf-8"), path)
    if name.endswith(".json"):
        return _parse_json(path.read_text(encoding="utf-8"), path)
    raise ValueError(f"data file {str(path)!r} has an unsupported suffix; expected one of {', '.join(SUFFIXES)}")


def check_fields(rows: Sequence[Row], required: Sequence[str], source: str) -> None:
    """Fail on the first row that lacks a required field, naming the source, the row index and the field: a task
    would otherwise fail later, in scoring, far from the bad row."""
    for i, row in enumerate(rows):
        for field in required:
            if field not in row:
                raise ValueError(f"{source}: row {i} has no field {field!r} (it has: {', '.join(sorted(row))})")


def with_ids(rows: Sequence[Row], task: str, split: str) -> list[Row]:
    """Rows with a deterministic `"id"` (`{task}-{split}-{i:05d}`) where they have none; other fields untouched."""
    return [row if "id" in row else {"id": f"{task}-{split}-{i:05d}", **row} for i, row in enumerate(rows)]


def _parse_json_lines(text: str, path: Path) -> list[Row]:
    """One JSON object per non-blank line."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number} is not valid JSON: {error.msg} (column {error.colno})") from None
        rows.append(_as_row(row, path, f"line {number}"))
    return rows


def _parse_json(text: str, path: Path) -> list[Row]:
    """A JSON list of rows, or (if the text does not open with "[") JSON lines under a `.json` name."""
    if not text.lstrip().startswith("["):
        return _parse_json_lines(text, path)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno} is not valid JSON: {error.msg} (column {error.colno})") from None
    return [_as_row(row, path, f"item {i}") for i, row in enumerate(rows)]


def _as_row(value: Any, path: Path, where: str) -> Row:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {where} is a JSON {type(value).__name__}, not an object (one row per object)")
    return value


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    return list(pq.read_table(path).to_pylist())


def _load_hub(source: str, subset: str | None, split: str) -> list[Row]:
    """`split` of hub dataset `source` (cached, or downloaded when online)."""
    import datasets

    try:
        dataset = datasets.load_dataset(source, subset, split=split)
    except (ConnectionError, FileNotFoundError) as error:  # offline, or no such dataset on the hub
        raise FileNotFoundError(
            f"data source {source!r} is not a local file or folder (resolved to {Path(source).resolve()}), and "
            f"loading it as a Hugging Face hub dataset failed ({type(error).__name__}: {error}); offline, pass the "
            f"path of a local .jsonl/.json/.parquet file or of a folder holding {split}.jsonl"
        ) from error
    return [dict(row) for row in dataset]

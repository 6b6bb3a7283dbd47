"""Rows of a task's data, from a local file, a local folder of split files, or a Hugging Face hub dataset, checked.

Benchmarks (MATH, GSM8K, MBPP) live on the hub, but this machine kind is offline, so every task's `data` may
also be a local file in the dataset's original format (tests ship small fixtures). One function reads them all:

  * a file (`.jsonl`, `.jsonl.gz`, `.json` holding a list of rows or JSON lines, `.parquet`) is the split asked
    for, whatever its name: one file holds one split;
  * a folder holds one file per split: `{folder}/{split}.jsonl` (or `.jsonl.gz`, `.json`, `.parquet`);
  * anything else is a hub dataset name, passed to `datasets.load_dataset(source, subset, split=split)`.

A problem file is often exported or edited by hand, and a bad row would otherwise fail far from its cause (in a
prompt, in scoring, in a worker process). So every bad input is named where it is: the file, the row and the field.
"row i" is the i-th row of the file (its i-th non-blank line, list item or table row, from 0); JSON lines add the
line number (", at line 7"), JSON lists the item (", at item 3"). Bad inputs, with the reason they are counted under:

  * "not UTF-8": a line (or, in a JSON list, the item) holding bytes that are not UTF-8; the error gives the line
    and the byte offset in the (uncompressed) file;
  * "not JSON", "not an object": a JSON line that does not parse, or a line or list item that is not an object;
  * "missing field", "wrong type", "empty field": a field the task needs that is absent, not of its type (text
    where text is needed, a list of texts for MBPP's asserts), or blank ("", whitespace only, an empty list);
  * "duplicate id": a row whose "id" an earlier row already has (the first one is kept);
  * a task's own checks (e.g. "no final answer" when there is nothing to grade against).

A task with strict=True (the default) raises a ValueError on the first one. With strict=False it skips the bad
row, counts it by reason, and logs one warning at the end: "skipped 3 of 50 rows of F: {'empty field': 3}". A file
that cannot be read at all (a JSON list that does not parse, a broken gzip or parquet file) raises either way.
Rows come back as plain dicts, untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, get_args, get_origin

import datasets

from dapo.records.checks import SkipCounter
from dapo.records.readers import SUFFIXES, Placed, Row, read_placed

log = logging.getLogger(__name__)

Kind = type | tuple[type, ...]
"""What a field must hold: a type (`str`), any of several (`(int, str)`), or a list of one (`list[str]`)."""

ID_KINDS = (str, int)  # an "id" becomes the text id of a `problems` record


class Flaw(NamedTuple):
    """Why a row is unusable: `reason` is what it is counted under when skipped ("empty field"), `detail` the
    rest of the error after "row i", so it starts with a space or a colon (" has no field 'question'")."""

    reason: str
    detail: str


def load_rows(source: str, split: str, subset: str | None = None, strict: bool = True) -> list[Row]:
    """Rows of `split` from `source`: a local file, a folder of split files, or a hub dataset name (rows that do
    not parse are errors, or with strict=False skipped and reported; their fields are not checked)."""
    skips = SkipCounter()
    name, placed = locate_rows(source, split, subset, strict, skips)
    skips.report(f"rows of {name}", len(placed), log)
    return [p.row for p in placed]


def load_valid_rows(
    source: str,
    split: str,
    subset: str | None,
    fields: Mapping[str, Kind],
    strict: bool = True,
    check: Callable[[Row], Flaw | None] | None = None,
) -> list[Row]:
    """Rows of `split` from `source` that parse, hold the required `fields` and pass `check`, with unique ids (see
    `valid_rows`); with strict=False the others are skipped and the counts logged once, naming the file read."""
    skips = SkipCounter()
    name, placed = locate_rows(source, split, subset, strict, skips)
    rows = valid_rows(placed, fields, name, strict, skips, check)
    skips.report(f"rows of {name}", len(rows), log)
    return rows


def locate_rows(
    source: str, split: str, subset: str | None, strict: bool, skips: SkipCounter
) -> tuple[str, list[Placed]]:
    """The name errors should give (the file actually read, or the hub dataset) and the rows of `split`, placed."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = split_file(path, split)
    if path.is_file():
        return str(path), read_placed(path, strict, skips)
    if source.endswith(SUFFIXES):  # clearly meant as a file: the hub would only add a confusing error
        raise FileNotFoundError(f"data file {source!r} does not exist (resolved to {path.resolve()})")
    return source, [Placed(i, row) for i, row in enumerate(_load_hub(source, subset, split))]


def split_file(folder: Path, split: str) -> Path:
    """The file of `split` in `folder`: the first of `{split}.jsonl`, `.jsonl.gz`, `.json`, `.parquet` present."""
    for suffix in SUFFIXES:
        if (candidate := folder / f"{split}{suffix}").is_file():
            return candidate
    names = ", ".join(f"{split}{suffix}" for suffix in SUFFIXES)
    raise FileNotFoundError(f"data folder {str(folder)!r} has no file for split {split!r} (looked for {names})")


def _load_hub(source: str, subset: str | None, split: str) -> list[Row]:
    """`split` of hub dataset `source` (cached, or downloaded when online)."""
    try:
        dataset = datasets.load_dataset(source, subset, split=split)
    except (ConnectionError, FileNotFoundError) as error:  # offline, or no such dataset on the hub
        raise FileNotFoundError(
            f"data source {source!r} is not a local file or folder (resolved to {Path(source).resolve()}), and "
            f"loading it as a Hugging Face hub dataset failed ({type(error).__name__}: {error}); offline, pass the "
            f"path of a local .jsonl/.json/.parquet file or of a folder holding {split}.jsonl"
        ) from error
    return [dict(row) for row in dataset]


# -- checking ----------------------------------------------------------------------------------------------------


def valid_rows(
    placed: Sequence[Placed],
    fields: Mapping[str, Kind],
    source: str,
    strict: bool = True,
    skips: SkipCounter | None = None,
    check: Callable[[Row], Flaw | None] | None = None,
) -> list[Row]:
    """The rows whose required `fields` hold non-blank values of their kind (`field_flaw`), whose "id" (if any) is
    text or a number, that pass the task's own `check`, and whose "id" no earlier row has. A bad row raises a
    ValueError naming `source`, the row, its place and the field, or with strict=False is counted in `skips`:
    a task would otherwise fail later, in prompting or scoring, far from the bad row."""
    skips = SkipCounter() if skips is None else skips
    good = []
    for p in placed:
        flaw = _row_flaw(p.row, fields, check)
        if flaw is None:
            good.append(p)
        else:
            skips.skip_or_raise(strict, f"{source}: row {p.position}{flaw.detail}{_at(p)}", flaw.reason)
    return [p.row for p in _first_of_each_id(good, source, strict, skips)]


def field_flaw(row: Row, field: str, kind: Kind) -> Flaw | None:
    """What makes `row[field]` unusable: absent, not of `kind`, or blank (text that is empty or whitespace only,
    an empty list, or such an item in a list); None if it is fine."""
    if field not in row:
        return Flaw("missing field", f" has no field {field!r} (it has: {', '.join(sorted(row))})")
    return type_flaw(repr(field), row[field], kind) or _blank_flaw(repr(field), row[field])


def type_flaw(label: str, value: Any, kind: Kind) -> Flaw | None:
    """What makes `value` (named `label` in the message) not of `kind`, item by item for a list; None if it is.
    A bool is not a number here (JSON true is no id), unless `kind` asks for bool."""
    if get_origin(kind) is list:
        if not isinstance(value, list):
            return _wrong_type(label, value, kind)
        (item_kind,) = get_args(kind)
        return next((f for k, item in enumerate(value) if (f := type_flaw(f"{label}[{k}]", item, item_kind))), None)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)):
        return None
    return _wrong_type(label, value, kind)


def _blank_flaw(label: str, value: Any) -> Flaw | None:
    if isinstance(value, str) and not value.strip():
        return Flaw("empty field", f" has an empty field {label} ({'no text' if not value else 'only whitespace'})")
    if isinstance(value, list):
        if not value:
            return Flaw("empty field", f" has an empty field {label} (no items)")
        return next((f for k, item in enumerate(value) if (f := _blank_flaw(f"{label}[{k}]", item))), None)
    return None


def _wrong_type(label: str, value: Any, kind: Kind) -> Flaw:
    found = "null" if value is None else type(value).__name__
    return Flaw("wrong type", f" has field {label} of type {found} (expected {_kind_name(kind)})")


def _kind_name(kind: Kind) -> str:
    if get_origin(kind) is list:
        return f"list of {_kind_name(get_args(kind)[0])}"
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _row_flaw(row: Row, fields: Mapping[str, Kind], check: Callable[[Row], Flaw | None] | None) -> Flaw | None:
    """The first flaw of `row`: a required field, then its "id", then the task's own check (which may rely on
    the fields being there and of their kind)."""
    for field, kind in fields.items():
        if flaw := field_flaw(row, field, kind):
            return flaw
    if "id" in row and (flaw := field_flaw(row, "id", ID_KINDS)):
        return flaw
    return check(row) if check is not None else None


def _first_of_each_id(placed: Sequence[Placed], source: str, strict: bool, skips: SkipCounter) -> list[Placed]:
    """The rows whose "id" no earlier row has (as text: a `problems` record's id is text, so 7 and "7" clash);
    a repeat raises, naming both rows, or with strict=False is counted and dropped."""
    first: dict[str, Placed] = {}
    kept = []
    for p in placed:
        if "id" in p.row:
            key = str(p.row["id"])
            if key in first:
                earlier = first[key]
                was = f" ({earlier.where})" if earlier.where else ""
                message = f"{source}: row {p.position} repeats the id {key!r} of row {earlier.position}{was}{_at(p)}"
                skips.skip_or_raise(strict, message, "duplicate id")
                continue
            first[key] = p
        kept.append(p)
    return kept


def _at(p: Placed) -> str:
    return f", at {p.where}" if p.where else ""


def with_ids(rows: Sequence[Row], task: str, split: str) -> list[Row]:
    """Rows with a deterministic `"id"` (`{task}-{split}-{i:05d}`) where they have none; other fields untouched."""
    return [row if "id" in row else {"id": f"{task}-{split}-{i:05d}", **row} for i, row in enumerate(rows)]


def with_own_ids(rows: Sequence[Row], field: str, source: str) -> list[Row]:
    """Rows whose `"id"` is their own `field` (HumanEval's `task_id`: `HumanEval/0`), so outputs carry the ids
    other tools use; a row that has an `"id"` keeps it. A repeated id raises, naming the source and the id."""
    out, seen = [], set()
    for row in rows:
        row = row if "id" in row else {"id": str(row[field]), **row}
        if row["id"] in seen:
            raise ValueError(f"{source}: the id {row['id']!r} ({field}) appears more than once")
        seen.add(row["id"])
        out.append(row)
    return out

"""Rows of a local file of records made elsewhere (a task's data, or `read_records` on a `.jsonl` / `.json` /
`.parquet` file): parsed by suffix, each bad input named by file, line (or item) and reason.

Formats: `.jsonl` and `.jsonl.gz` (one object per non-blank line), `.json` (a list of objects, or JSON lines), and
`.parquet`. A line that is not UTF-8 or not JSON, or an item that is not an object, raises a ValueError naming the
file and line; with strict=False it is skipped and counted in a `SkipCounter` by reason ("not UTF-8", "not JSON",
"not an object"). A file that cannot be read at all (a JSON list that does not parse, a broken gzip or parquet
file) raises either way.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from dapo.records.checks import SkipCounter

log = logging.getLogger(__name__)

Row = dict[str, Any]
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")  # in the order a split folder is searched


class Placed(NamedTuple):
    """A row and where it stands in its source, so an error can point at it: `position` among the source's rows,
    and `where` for files whose rows are better found another way ("line 7", "item 3")."""

    position: int
    row: Row
    where: str | None = None


def read_file(path: Path, strict: bool = True, skips: SkipCounter | None = None) -> list[Row]:
    """All rows of one local file, by its suffix. Lines that do not parse raise, or with strict=False are counted
    in `skips` (which the caller reports; without one they are reported here)."""
    own = skips is None
    counted = SkipCounter() if skips is None else skips
    rows = [p.row for p in read_placed(path, strict, counted)]
    if own:
        counted.report(f"rows of {path}", len(rows), log)
    return rows


def read_placed(path: Path, strict: bool, skips: SkipCounter) -> list[Placed]:
    """All rows of one local file with their places, by its suffix. JSON is read as bytes and decoded line by
    line, so a bad byte is named by line and offset (and, lenient, costs only its own row)."""
    name = path.name
    if name.endswith(".parquet"):
        return [Placed(i, row) for i, row in enumerate(_read_parquet(path))]
    if not name.endswith((".jsonl", ".jsonl.gz", ".json")):
        raise ValueError(f"data file {str(path)!r} has an unsupported suffix; expected one of {', '.join(SUFFIXES)}")
    data = _read_gzip(path) if name.endswith(".gz") else path.read_bytes()
    if name.endswith(".json") and data.lstrip().startswith(b"["):
        return _parse_json_list(data, path, strict, skips)
    return _parse_json_lines(data, path, strict, skips)


def _read_gzip(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:  # not gzip, or cut short
        raise ValueError(f"{path}: not a readable gzip file ({type(error).__name__}: {error})") from None


def _parse_json_lines(data: bytes, path: Path, strict: bool, skips: SkipCounter) -> list[Placed]:
    """One JSON object per non-blank line; a blank line is not a row."""
    placed: list[Placed] = []
    index = offset = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        row = _line_row(line, start, number, path, strict, skips)
        if row is not None:
            placed.append(Placed(index, row, f"line {number}"))
        index += 1
    return placed


def _line_row(line: bytes, start: int, number: int, path: Path, strict: bool, skips: SkipCounter) -> Row | None:
    """The object on line `number` (which starts at byte `start`), or None when it is skipped."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        skips.skip_or_raise(strict, _not_utf8(path, number, start + error.start, error), "not UTF-8")
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        message = f"{path}: line {number} is not valid JSON: {error.msg} (column {error.colno})"
        skips.skip_or_raise(strict, message, "not JSON")
        return None
    return _as_row(value, path, f"line {number}", strict, skips)


def _parse_json_list(data: bytes, path: Path, strict: bool, skips: SkipCounter) -> list[Placed]:
    """A JSON list of rows. It parses whole or not at all, so only its items can be skipped."""
    try:
        items = json.loads(_decode_all(data, path, strict))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno} is not valid JSON: {error.msg} (column {error.colno})") from None
    placed = []
    for i, item in enumerate(items):
        if not strict and _holds_undecodable(item):
            skips["not UTF-8"] += 1
            continue
        if (row := _as_row(item, path, f"item {i}", strict, skips)) is not None:
            placed.append(Placed(i, row, f"item {i}"))
    return placed


def _decode_all(data: bytes, path: Path, strict: bool) -> str:
    """`data` as text. A bad byte is an error naming its line and offset; lenient, it becomes a lone surrogate
    (errors="surrogateescape"), so the list item holding it can be found and skipped (`_holds_undecodable`)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if strict:
            raise ValueError(_not_utf8(path, data.count(b"\n", 0, error.start) + 1, error.start, error)) from None
    return data.decode("utf-8", errors="surrogateescape")


def _not_utf8(path: Path, line: int, offset: int, error: UnicodeDecodeError) -> str:
    return f"{path}: line {line} is not valid UTF-8 (byte offset {offset}: {error.reason})"


def _holds_undecodable(value: Any) -> bool:
    """Whether a value parsed from surrogate-escaped text holds an escaped byte (text that is not UTF-8)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _as_row(value: Any, path: Path, where: str, strict: bool, skips: SkipCounter) -> Row | None:
    if isinstance(value, dict):
        return value
    message = f"{path}: {where} is a JSON {type(value).__name__}, not an object (one row per object)"
    skips.skip_or_raise(strict, message, "not an object")
    return None


def _read_parquet(path: Path) -> list[Row]:
    try:
        return list(pq.read_table(path).to_pylist())
    except pa.ArrowException as error:
        raise ValueError(f"{path}: not a readable parquet file ({error})") from None

"""What records must satisfy beyond their column types, checked wherever a stage reads them.

The schema (`dapo.records.SCHEMAS`) fixes column names and types; a dataset written by another tool, edited by
hand, or imported from a JSONL file can still hold values no stage should train on: an empty prompt, a NaN or
infinite MC value or advantage, a value outside its range, a missing (null) cell, or two rows with one id. Each
is found here with Arrow compute (no Python loop over rows) and named by file, row and field. With strict=False
the bad rows are dropped instead, counted by reason, and the counts reported once the read is done.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

log = logging.getLogger(__name__)

LOGPROB_SLACK = 1e-3  # a summed log-probability is <= 0; float rounding may leave it a hair above


class RecordError(ValueError):
    """A record that does not fit its schema or its checks; the message names the file, row and field."""


class SkipCounter(Counter[str]):
    """Reasons for skipped records or rows, counted when the user asked for lenience (strict=False)."""

    def skip_or_raise(self, strict: bool, message: str, reason: str) -> None:
        """Raise `message` (strict), or count one skip under `reason`."""
        if strict:
            raise RecordError(message) from None  # the message says it all; a decode error's context would not
        self[reason] += 1

    def report(self, what: str, kept: int | None = None, logger: logging.Logger = log) -> None:
        """One warning with the counts by reason, "skipped 3 of 50 rows of F: {...}" when `kept` is given, so a
        lenient read still says how much it dropped and why."""
        if self:
            skipped = sum(self.values())
            out_of = "" if kept is None else f" of {skipped + kept}"
            logger.warning("skipped %d%s %s: %s", skipped, out_of, what, dict(self))


@dataclass(frozen=True)
class Rule:
    field: str
    reason: str
    bad: Callable[[pa.ChunkedArray], pa.ChunkedArray]  # column -> True where the row breaks the rule


def _blank(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)


def _not_finite(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.invert(pc.is_finite(column))


def _outside_unit(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.or_(pc.less(column, 0.0), pc.greater(column, 1.0))


def _not_positive(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.less_equal(column, 0.0)


def _positive_logprob(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.greater(column, LOGPROB_SLACK)


EMPTY, NOT_FINITE, OUT_OF_RANGE = "empty text", "not a finite number", "outside [0, 1]"
RULES: dict[str, list[Rule]] = {
    "problems": [Rule("id", EMPTY, _blank), Rule("prompt", EMPTY, _blank)],
    "solutions": [
        Rule("solution_id", EMPTY, _blank),
        Rule("prompt", EMPTY, _blank),
        Rule("reward", NOT_FINITE, _not_finite),
        Rule("reward", OUT_OF_RANGE, _outside_unit),
    ],
    "states": [
        Rule("state_id", EMPTY, _blank),
        Rule("solution_id", EMPTY, _blank),
        Rule("prompt", EMPTY, _blank),
        Rule("mc_value", NOT_FINITE, _not_finite),
        Rule("mc_value", OUT_OF_RANGE, _outside_unit),
    ],
    "actions": [
        Rule("state_id", EMPTY, _blank),
        Rule("prompt", EMPTY, _blank),
        Rule("value", NOT_FINITE, _not_finite),
        Rule("advantage", NOT_FINITE, _not_finite),
        Rule("ref_logprob", NOT_FINITE, _not_finite),
        Rule("ref_logprob", "a log-probability above 0", _positive_logprob),
        Rule("weight", NOT_FINITE, _not_finite),
        Rule("weight", "not above 0", _not_positive),
    ],
}
UNIQUE = {"problems": "id", "solutions": "solution_id", "states": "state_id"}  # actions repeat their state_id


def _problems(dataset: Dataset, kind: str) -> list[tuple[int, str, str]]:
    """(row, field, reason) of every broken rule, nulls first, in row order within each rule."""
    table = dataset.data.table
    found: list[tuple[int, str, str]] = []
    for name in dataset.column_names:
        nulls = pc.is_null(table.column(name))
        found += [(int(i), name, "missing (null)") for i in pc.indices_nonzero(nulls).to_pylist()]
    for rule in RULES.get(kind, []):
        bad = pc.fill_null(rule.bad(table.column(rule.field)), False)  # nulls were reported above
        found += [(int(i), rule.field, rule.reason) for i in pc.indices_nonzero(bad).to_pylist()]
    return found


def checked(dataset: Dataset, kind: str, where: str, strict: bool, skipped: SkipCounter) -> Dataset:
    """`dataset` if every row passes the `kind` rules; else a RecordError naming the first bad row (strict), or the
    dataset without the bad rows, each counted in `skipped` by reason."""
    found = sorted(_problems(dataset, kind))
    if not found:
        return dataset
    if strict:
        row, field, reason = found[0]
        value = dataset[row][field]
        more = f" ({len(found) - 1} more problem(s); strict: false skips such rows)" if len(found) > 1 else ""
        raise RecordError(f"{where}: row {row}, field {field!r}: {reason} (value {value!r}){more}")
    bad_rows: dict[int, str] = {}
    for row, field, reason in found:
        bad_rows.setdefault(row, f"{field}: {reason}")
    skipped.update(bad_rows.values())
    return dataset.select([i for i in range(dataset.num_rows) if i not in bad_rows])


def unique(dataset: Dataset, kind: str, where: str, strict: bool, skipped: SkipCounter) -> Dataset:
    """`dataset` with each id once: a RecordError naming the repeated id and its rows (strict), or the first row of
    each id kept and the repeats counted."""
    key = UNIQUE.get(kind)
    if key is None:
        return dataset
    first: dict[str, int] = {}
    repeats: list[int] = []
    for row, value in enumerate(dataset.data.table.column(key).to_pylist()):
        if value in first:
            if strict:
                raise RecordError(f"{where}: duplicate {key} {value!r} at rows {first[value]} and {row}")
            repeats.append(row)
        else:
            first[value] = row
    if not repeats:
        return dataset
    skipped[f"duplicate {key}"] += len(repeats)
    drop = set(repeats)
    return dataset.select([i for i in range(dataset.num_rows) if i not in drop])

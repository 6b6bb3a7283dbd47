"""`dapo convert`: step-labelled data into dapo's `states` records and out again, so a critic can train on existing
labelled data without Stage A, and dapo's MC values can feed other trainers.

    dapo convert --source math_shepherd.jsonl --out runs/ms/states --from_format math-shepherd --to_format states
    dapo fit --config configs/critic.yaml --stage_a.policy_path null --data.train_path runs/ms/states   (no Stage A)
    dapo convert --source runs/arith/stage_a/states --out states.trl.jsonl --from_format states --to_format trl

Formats: `states` (a dapo dataset folder, or a .jsonl / .json / .parquet file of states rows), `trl` (TRL
stepwise supervision: prompt, completions, labels), `math-shepherd` (input / label with "ки" step tags) and
`prm800k` (in only). What each keeps and loses, and why: `dapo.records.formats`. Foreign rows are read from a
.jsonl / .jsonl.gz / .json / .parquet file; foreign output is a .jsonl file. Both are written atomically, states
with their provenance. A bad row is an error naming the file and line; `--lenient true` skips it instead and
reports the count by reason. Two foreign formats convert through states (e.g. math-shepherd -> trl).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from dapo.core.errors import MissingFile, UserError
from dapo.records import Provenance, RecordError, SkipCounter, read_records, write_jsonl, write_records
from dapo.records.formats import (
    from_math_shepherd,
    from_prm800k,
    from_trl_stepwise,
    to_math_shepherd,
    to_trl_stepwise,
)
from dapo.records.readers import read_placed

InFormat = Literal["states", "trl", "math-shepherd", "prm800k"]
OutFormat = Literal["states", "trl", "math-shepherd"]
Row = dict[str, Any]


@dataclass(frozen=True)
class LabelMapping:
    """How labels map between formats (see `dapo.records.formats`)."""

    delimiter: str = "\n"
    """The step delimiter: appended to imported steps, dropped from exported ones."""
    threshold: float = 0.5
    """Out: a step's label is mc_value >= threshold. In: our soft `mc_values` must agree with the labels at it."""
    neutral: float = 1.0
    """PRM800K in: the value of a step rated 0 (no mistake, no progress)."""
    task: str = ""
    """Math-Shepherd out: its `task` column (GSM8K, MATH); states do not record it."""

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise UserError("--delimiter must be a non-empty string")
        for name in ("threshold", "neutral"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"--{name} must be in [0, 1], got {getattr(self, name)}")


def foreign_states(row: Mapping[str, Any], fmt: InFormat, solution_id: str, mapping: LabelMapping) -> list[Row]:
    """The `states` rows of one foreign row."""
    if fmt == "trl":
        return from_trl_stepwise(row, solution_id, mapping.delimiter, mapping.threshold)
    if fmt == "math-shepherd":
        return from_math_shepherd(row, solution_id, mapping.delimiter, mapping.threshold)
    return from_prm800k(row, solution_id, mapping.delimiter, mapping.neutral)


def foreign_row(states: list[Row], fmt: OutFormat, mapping: LabelMapping) -> Row:
    """One foreign row from the `states` rows of one solution."""
    if fmt == "trl":
        return to_trl_stepwise(states, mapping.threshold, mapping.delimiter)
    return to_math_shepherd(states, mapping.threshold, mapping.delimiter, mapping.task)


def _foreign_solutions(
    source: Path, fmt: InFormat, mapping: LabelMapping, strict: bool, skipped: SkipCounter
) -> list[list[Row]]:
    """The states of every row of a foreign file, one list per solution; a bad row is named by file and line.
    A row without our own `solution_id` column gets `<file stem>/<row index>`."""
    solutions, seen = [], set()
    for placed in tqdm(read_placed(source, strict, skipped), desc=f"convert {fmt}", unit="row", dynamic_ncols=True):
        where = f"{source} {placed.where or f'row {placed.position}'}"
        try:
            states = foreign_states(placed.row, fmt, f"{source.stem}/{placed.position}", mapping)
        except RecordError as error:
            skipped.skip_or_raise(strict, f"{where}: {error}", "malformed row")
            continue
        sid = states[0]["solution_id"]
        if sid in seen:
            skipped.skip_or_raise(strict, f"{where}: solution_id {sid!r} repeats an earlier row's", "repeated id")
            continue
        seen.add(sid)
        solutions.append(states)
    return solutions


def _states_solutions(source: Path, strict: bool) -> list[list[Row]]:
    """The rows of a `states` dataset or file (checked as every stage reads them), grouped by solution, in order."""
    groups: dict[str, list[Row]] = {}
    for row in read_records(source, "states", strict).to_list():
        groups.setdefault(row["solution_id"], []).append(row)
    return list(groups.values())


def _foreign_rows(
    solutions: list[list[Row]], fmt: OutFormat, mapping: LabelMapping, strict: bool, skipped: SkipCounter
) -> Iterable[Row]:
    """One foreign row per solution, lazily, so the writer streams them to its file."""
    for states in tqdm(solutions, desc=f"convert to {fmt}", unit="solution", dynamic_ncols=True):
        try:
            yield foreign_row(states, fmt, mapping)
        except RecordError as error:
            skipped.skip_or_raise(strict, str(error), "solution without labels")


def convert(
    source: str,
    out: str,
    from_format: InFormat,
    to_format: OutFormat,
    delimiter: str = "\n",
    threshold: float = 0.5,
    neutral: float = 1.0,
    task: str = "",
    lenient: bool = False,
) -> Path:
    """Convert step-labelled data between dapo `states` records and TRL stepwise, Math-Shepherd or PRM800K rows.

    Args:
        source: the input: a `states` dataset folder or file, or a .jsonl / .jsonl.gz / .json / .parquet file of
            foreign rows.
        out: the output: a `states` dataset folder, or a .jsonl file of foreign rows (replaced atomically).
        from_format: the input's format.
        to_format: the output's format (PRM800K is read only: dapo.records.formats says why).
        delimiter: the step delimiter, appended to imported steps and dropped from exported ones.
        threshold: a step's exported label is mc_value >= threshold (the soft value stays in `mc_values`).
        neutral: PRM800K: the value of a step rated 0 (no mistake, no progress); TRL's own script uses 0.0.
        task: Math-Shepherd out: the `task` column (GSM8K, MATH); states do not record it.
        lenient: skip bad rows (counted by reason, reported) instead of stopping at the first.
    """
    source_path, out_path = Path(source), Path(out)
    mapping = LabelMapping(delimiter, threshold, neutral, task)
    if from_format == to_format:
        raise UserError(f"--from_format and --to_format are both {from_format!r}: nothing to convert")
    if not source_path.exists():
        raise MissingFile(f"no {from_format} data at {source_path}")
    if from_format != "states" and source_path.is_dir():
        raise UserError(f"--source {source_path} is a folder; {from_format} rows are read from one file")
    if to_format != "states" and out_path.suffix != ".jsonl":
        raise UserError(f"--out {out_path} should be a .jsonl file: {to_format} rows are written as JSON lines")
    strict, skipped = not lenient, SkipCounter()
    if from_format == "states":
        solutions = _states_solutions(source_path, strict)
    else:
        solutions = _foreign_solutions(source_path, from_format, mapping, strict, skipped)
    if to_format == "states":
        rows = [state for states in solutions for state in states]
        if not rows:
            raise UserError(f"no row of {source_path} could be converted")
        config = {"source": str(source_path), "from_format": from_format, **asdict(mapping), "lenient": lenient}
        provenance = Provenance(producer="dapo convert", config=config)
        write_records(rows, out_path, "states", provenance)
        written = len(solutions)
    else:
        written = write_jsonl(out_path, _foreign_rows(solutions, to_format, mapping, strict, skipped))
    skipped.report(f"rows of {source_path}", written)
    print(f"converted {written} solutions of {source_path} ({from_format}) to {out_path} ({to_format})")
    return out_path

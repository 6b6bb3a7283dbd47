"""Solutions labelled with their first wrong step, in ProcessBench's row format (Zheng et al. 2024).

One real row (ProcessBench, gsm8k split, shortened):

    {"id": "gsm8k-0", "generator": "Qwen2-7B-Instruct",
     "problem": "Sue lives in a fun neighborhood. ...",
     "steps": ["To find out how many more pink plastic flamingos ...", "On Saturday, ...", ...],
     "final_answer_correct": false, "label": 1}

`label` is the index of the earliest wrong step, or -1 when every step is right. Only `problem`, `steps` and
`label` are required; `id` is kept when given (else `<file name>-<row>`), other fields are ignored. ProcessBench's
steps are paragraphs without their separator; dapo's steps end with their newline (`dapo.core.steps`), so each
step but the last gets a "\\n" unless it already ends with one. A step may still hold newlines inside it: it is
one step all the same, the critic is read only at its end.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from dapo.tasks.sources import Flaw, Row, load_valid_rows

FIELDS = {"problem": str, "steps": list[str], "label": int}


class LabelledSolution(NamedTuple):
    """A problem, a solution cut into steps (each ending with its delimiter, the last one possibly not), and the
    index of its first wrong step, -1 if none."""

    id: str
    problem: str
    steps: list[str]
    label: int


def label_flaw(row: Row) -> Flaw | None:
    """A label names a step of the row, or is -1: anything else cannot be scored."""
    if -1 <= row["label"] < len(row["steps"]):
        return None
    return Flaw("label out of range", f": label {row['label']} is outside -1..{len(row['steps']) - 1}")


def with_newlines(steps: list[str]) -> list[str]:
    """Steps as dapo joins them: every one but the last ends with "\\n" (["a", "b"] -> ["a\\n", "b"])."""
    return [step if step.endswith("\n") or i == len(steps) - 1 else step + "\n" for i, step in enumerate(steps)]


def read_labelled_solutions(path: str | Path) -> list[LabelledSolution]:
    """The rows of a local .jsonl / .json / .parquet file of ProcessBench-style rows. A row without problem, steps
    or label, with a blank step, or with a label outside -1..len(steps)-1 raises a ValueError naming the file,
    the row and its line: a mislabelled row would silently skew the F1."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"labelled solutions file {str(path)!r} does not exist")
    rows = load_valid_rows(str(path), "test", None, FIELDS, strict=True, check=label_flaw)
    stem = Path(path).name.split(".")[0]
    return [
        LabelledSolution(str(row.get("id", f"{stem}-{i}")), row["problem"], with_newlines(row["steps"]), row["label"])
        for i, row in enumerate(rows)
    ]

"""`amc` and `aime`: competition problems with integer answers, graded exactly.

Rows keep their dataset's format, plus an `"id"` where they have none. Two layouts are read, row by row:
  * lower-case `problem` and `answer` (AI-MO's AMC and AIME validation sets; AMC answers are often written as
    floats, "142.0"), with an optional `solution`;
  * the capitalised `Problem` and `Answer` columns (with `ID` and `Solution`) of other AIME collections.
Every reference answer must be an integer (AIME's are 0 to 999): a row whose answer is not one is refused, naming
the file and row (or skipped and counted when lenient). A response is right when its final answer (the last
`\\boxed{}`, "The answer is N" or "#### N", as `dapo.graders.answers` extracts it) reads as exactly that integer:
"042" and "42.0" do, "42.5" and "41.99" do not. No symbolic equivalence is needed, so none is tried.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dapo.graders.answers import extract_answer
from dapo.tasks.base import Example
from dapo.tasks.math import INSTRUCTION
from dapo.tasks.sources import Flaw, Row, load_valid_rows, with_ids

_INTEGER = re.compile(r"[+-]?\d+(?:\.0*)?")
_DECORATION = re.compile(r"^\$+|\$+$|\\[,!;: ]|\s")


def integer_value(value: Any) -> int | None:
    """`value` as an exact integer: an int (not a bool), a float with no fraction, or text such as "042", "1,000"
    or "142.0" (TeX spacing and dollar signs ignored); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if not isinstance(value, str):
        return None
    text = _DECORATION.sub("", value).replace(",", "").rstrip(".")
    return int(text.split(".")[0]) if _INTEGER.fullmatch(text) else None


def _field(row: Row, name: str) -> Any:
    """`row[name]` under its lower-case or capitalised key (None if neither)."""
    return row.get(name, row.get(name.capitalize()))


def competition_flaw(row: Row) -> Flaw | None:
    """A row needs problem text and an integer answer, under either layout's keys."""
    problem = _field(row, "problem")
    if not isinstance(problem, str) or not problem.strip():
        return Flaw("missing field", f" has no problem text under 'problem' or 'Problem' (it has: {', '.join(row)})")
    answer = _field(row, "answer")
    if answer is None:
        return Flaw("missing field", f" has no 'answer' or 'Answer' (it has: {', '.join(row)})")
    if integer_value(answer) is None:
        return Flaw("not an integer answer", f" has answer {answer!r}, not an integer")
    return None


@dataclass
class _CompetitionTask:
    """Problems with integer answers; `name` and the default `data` come from the subclass."""

    name = ""
    data: str = ""
    """Hugging Face hub dataset, local file (.jsonl, .jsonl.gz, .json, .parquet) or folder of {split}.jsonl files.
    Offline, only local paths work."""
    strict: bool = True
    """Raise on a malformed row (naming file, row and field); False: skip it, count it, report the counts."""

    def load(self, split: str) -> Sequence[Example]:
        """Rows of `split` as stored, plus an "id"; each must have problem text and an integer answer."""
        rows = load_valid_rows(self.data, split, None, {}, self.strict, competition_flaw)
        return with_ids(rows, self.name, split)

    def prompt(self, example: Example) -> str:
        return f"{INSTRUCTION}\n\nProblem: {_field(example, 'problem')}\nSolution:\n"

    def messages(self, example: Example) -> list[dict[str, str]]:
        """The problem as one user turn, for `tokenizer.apply_chat_template`."""
        return [{"role": "user", "content": f"{INSTRUCTION}\n\n{_field(example, 'problem')}"}]

    def score(self, example: Example, response: str) -> float:
        """1.0 iff the response's final answer is exactly the reference integer; never raises on any string."""
        if not isinstance(response, str):
            return 0.0
        answer = extract_answer(response)
        if answer is None:
            return 0.0
        return 1.0 if integer_value(answer) == integer_value(_field(example, "answer")) else 0.0

    def reference_solution(self, example: Example) -> str | None:
        solution = _field(example, "solution")
        return solution if isinstance(solution, str) and solution.strip() else None

    def final_answer(self, example: Example) -> str:
        """The reference answer as a plain integer ("142.0" -> "142")."""
        return str(integer_value(_field(example, "answer")))

    def answer_key(self, response: str) -> str | None:
        """The final answer as a plain integer's text; None when it is not an integer."""
        answer = extract_answer(response) if isinstance(response, str) else None
        value = None if answer is None else integer_value(answer)
        return None if value is None else str(value)


@dataclass
class AMCTask(_CompetitionTask):
    """AMC 10/12 problems with integer answers (AI-MO's validation set by default)."""

    name = "amc"
    data: str = "AI-MO/aimo-validation-amc"


@dataclass
class AIMETask(_CompetitionTask):
    """AIME problems, answers 0 to 999 (AI-MO's validation set by default)."""

    name = "aime"
    data: str = "AI-MO/aimo-validation-aime"

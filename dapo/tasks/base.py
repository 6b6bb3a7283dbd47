"""The shape every task follows: load examples, render a prompt, score a response.

`score` is a pure function of (example, response): Stage A's rewards, the advantage stage's terminal rewards
and benchmark evaluation all call the same one, so a grader is never written twice. Prompts come in two forms, the
plain `prompt` (base models) and `messages` rendered by a tokenizer's chat template (`chat_renderer`, instruct
models); `problems` records and `dapo evaluate` use the same renderer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dapo.records import Provenance, write_records

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


@runtime_checkable
class AnswerKeyed(Protocol):
    """A task whose responses end in a final answer that can be compared as text: what votes count
    (`dapo evaluate --select majority_vote | weighted_vote`). Code tasks have no such answer."""

    def answer_key(self, response: str) -> str | None:
        """The response's final answer in a canonical text form, or None if it has none."""
        ...


def chat_renderer(task: Task, tokenizer: Any) -> Callable[[Example], str]:
    """Render an example as the tokenizer's chat template applied to the task's messages, ready for generation.

    The generator tokenizes prompts with the tokenizer's special tokens (`HFGenerator._encode`), so a BOS that the
    template writes and the tokenizer adds again would double: such a leading BOS is dropped from the text."""
    if not tokenizer.chat_template:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template to render {task.name!r} prompts")
    bos = tokenizer.bos_token if tokenizer.bos_token_id in tokenizer("").input_ids else None

    def render(example: Example) -> str:
        text = str(tokenizer.apply_chat_template(task.messages(example), add_generation_prompt=True, tokenize=False))
        return text[len(bos) :] if bos and text.startswith(bos) else text

    return render


def problem_rows(task: Task, examples: Sequence[Example], tokenizer: Any = None) -> list[dict[str, str]]:
    """`problems` records for `examples`: the rendered prompt plus the original row as JSON for scoring.

    The prompt is `task.prompt` (plain text, for base models), or with a `tokenizer` its chat template applied to
    `task.messages` with the generation prompt (for instruct models): Stage A continues it verbatim."""
    render = task.prompt if tokenizer is None else chat_renderer(task, tokenizer)
    rows = []
    for i, example in enumerate(examples):
        rows.append(
            {
                "id": str(example.get("id", f"{task.name}-{i:06d}")),
                "task": task.name,
                "prompt": render(example),
                "answer": task.final_answer(example),
                "example": json.dumps(example, sort_keys=True),
            }
        )
    return rows


def write_problems(
    task: Task, out: str | Path, split: str = "train", limit: int | None = None, tokenizer: Any = None
) -> Path:
    """Write the first `limit` examples of `split` as a `problems` dataset (atomically, with provenance); with a
    `tokenizer`, prompts are its chat template rendering (see `problem_rows`), and the provenance says so."""
    rows = problem_rows(task, list(task.load(split))[:limit], tokenizer)
    config = {"task": task.name, "split": split, "limit": limit, "chat_template": tokenizer is not None}
    config["chat_template_from"] = None if tokenizer is None else str(tokenizer.name_or_path)
    return write_records(rows, out, "problems", Provenance(producer="dapo problems", config=config))

"""CHAMP's first-wrong-step annotations (Mao et al. 2024, package `champ-dataset`) as labelled solutions.

How `champ_dataset/dataset_files/v0.json` (version v0, the one the package ships) stores them: 270 competition
problems under "problems", keyed by id ("P_Combinatorics_1"). Each problem has `_text` (the statement), and
`fws_annotations`, a dict from "<model>|<prompt setting>" to one annotated model solution; every problem has two
(540 in all), from GPT-3.5, GPT-4, GPT-4 Turbo and PaLM 2 Medium under the settings "No C w/o H" and
"Direct C w/ H". One real annotation, shortened:

    "GPT-3.5|No C w/o H": {
      "text": "To solve this problem, we can use the concept of recursion.\\n\\nLet's define ... f(6).\\n\\n...",
      "start_idx": 319, "end_idx": 469, "author": "GPT-3.5"}

`text` is the model's whole solution (the first model turn of `conversations[<same key>]`), and
text[start_idx:end_idx] the span an annotator marked as its first wrong step; both indices are null when the
solution has "No mistake" (96 of 540). The span is free-form: it may start mid-line or cover several lines.

Mapping to steps: the text is split with `dapo.core.steps.split_steps` (one step per line, blank lines joined to
the line after them, exactly as dapo splits the policy's responses), and the label is the index of the step that
holds the span's first non-blank character; -1 for "No mistake". So a mark from the middle of line 3 labels
step 3, and a mark over lines 3-5 labels step 3: the first wrong step.

Skipped, counted by reason and logged (`champ_solutions(...).skipped`), never silently:
  1. "cut off, no mistake marked": the model's turn hit the length limit (its message has error
     "LENGTH_CURRENT") and no mistake is marked, so -1 would call an unfinished solution right (none in v0: all 6
     cut-off solutions have a marked mistake, which stays a valid first error and is kept);
  2. "span outside the text" / "blank span": a mark that does not point at text (none in v0).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

from dapo.core.errors import MissingExtra
from dapo.core.steps import split_steps
from dapo.records.checks import SkipCounter
from dapo.tasks.processbench import LabelledSolution

VERSION = "v0"
CUT_OFF = "LENGTH_CURRENT"  # champ's error on a model turn that stopped at the length limit

log = logging.getLogger(__name__)


class ChampSolutions(NamedTuple):
    """The annotated solutions kept, and how many were skipped by reason."""

    items: list[LabelledSolution]
    skipped: dict[str, int]


def load_champ() -> Any:
    """champ's dataset object (`champ_dataset.load`), or a MissingExtra naming the package to install."""
    try:
        import champ_dataset
    except ImportError as error:
        raise MissingExtra(
            "data='champ' needs the package 'champ-dataset' (module champ_dataset), which is not installed: "
            'pip install champ-dataset (or pip install "dapo[dev]")'
        ) from error
    return champ_dataset.load(VERSION)


def step_holding(steps: list[str], position: int) -> int:
    """Index of the step holding character `position` of "".join(steps) (["ab\\n", "cd"], 3 -> 1)."""
    end = 0
    for index, step in enumerate(steps):
        end += len(step)
        if position < end:
            return index
    raise ValueError(f"position {position} is past the end of the text ({end} characters)")


def first_wrong_step(text: str, start: int | None, end: int | None) -> tuple[int | None, str]:
    """(label, "") for an annotation of `text`, or (None, reason) when it cannot be used. The label is the step
    holding the first non-blank character of text[start:end]; -1 when nothing is marked."""
    if start is None or end is None:
        return -1, ""
    if not 0 <= start < end <= len(text):
        return None, "span outside the text"
    span = text[start:end]
    if not span.strip():
        return None, "blank span"
    return step_holding(split_steps(text), start + len(span) - len(span.lstrip())), ""


def champ_solutions(limit: int | None = None) -> ChampSolutions:
    """The first `limit` (default all) usable annotated solutions of champ, in the file's order, with the skip
    counts (also logged). The id is "<problem id>|<model>|<prompt setting>"."""
    skips = SkipCounter()
    items: list[LabelledSolution] = []
    for item, reason in _annotations(load_champ()):
        if limit is not None and len(items) >= limit:
            break
        if item is None:
            skips[reason] += 1
        else:
            items.append(item)
    skips.report(f"annotated solutions of champ {VERSION}", len(items), log)
    return ChampSolutions(items, dict(skips))


def _annotations(dataset: Any) -> Iterator[tuple[LabelledSolution | None, str]]:
    """Every annotated solution as (item, "") or (None, why it is skipped)."""
    for problem_id, problem in dataset.problems.items():
        for key, note in problem.fws_annotations.items():
            label, reason = first_wrong_step(note.text, note.start_idx, note.end_idx)
            if label == -1 and _cut_off(problem, key):
                label, reason = None, "cut off, no mistake marked"
            if label is None:
                yield None, reason
            else:
                yield LabelledSolution(f"{problem_id}|{key}", problem.text, split_steps(note.text), label), ""


def _cut_off(problem: Any, key: str) -> bool:
    """Whether the annotated model turn (the first model message of the same conversation) hit the length limit."""
    conversation = problem.conversations.get(key)
    turns = [m for m in conversation.messages if m.role.startswith("Model.")] if conversation else []
    return bool(turns) and turns[0].error == CUT_OFF

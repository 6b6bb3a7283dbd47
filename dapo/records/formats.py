"""Row converters between dapo's `states` records and three step-labelled formats, so a critic can train on
existing labelled data without Stage A, and dapo's MC values can feed other trainers. Pure: rows in, rows out.

One foreign row is one solution; it maps to the `states` rows of that solution. A label on step k (the state
after taking it) is the value of s_{k+1}: "the probability of finishing correctly from here".

    TRL stepwise supervision (one row):
      {"prompt": "Q: 2 + 3 * 4?", "completions": ["3 * 4 = 12", "2 + 12 = 14"], "labels": [true, true]}
    Math-Shepherd (peiyi9979/Math-Shepherd, one row; "ки" tags each step, `label` puts + or - in its place):
      {"input": "Q? Step 1: 3 * 4 = 12 ки\\nStep 2: 2 + 12 = 14 ки", "label": "Q? Step 1: 3 * 4 = 12 +\\n...", ...}
    PRM800K (openai/prm800k, one row): {"question": {"problem": ...}, "label": {"steps": [{"completions":
      [{"text", "rating": -1 | 0 | 1, "flagged"}], "human_completion", "chosen_completion"}], "finish_reason"}}

| format        | dir | kept                                           | lost                                      |
|---------------|-----|------------------------------------------------|-------------------------------------------|
| TRL stepwise  | in  | prompt, steps, labels as 1.0 / 0.0; our extra  | s_0: no format labels it, so no row (the  |
|               |     | columns (soft mc_values, s_0's value, ids)     | critic leaves absent states out)          |
| TRL stepwise  | out | prompt, steps (trailing delimiter dropped),    | softness of `labels` (kept in the extra   |
|               |     | labels = mc_value >= threshold; extra columns  | column `mc_values`); n_rollouts and the   |
|               |     | mc_values, prompt_mc_value, solution_id,       | rollout completions                       |
|               |     | problem_id                                     |                                           |
| Math-Shepherd | in  | question (the text before "Step 1:"), steps,   | `task`; s_0 as for TRL                    |
|               |     | + / - as 1.0 / 0.0 (also a + after a -); our   |                                           |
|               |     | extra columns                                  |                                           |
| Math-Shepherd | out | as TRL out, as `input` / `label` with ки tags, | as TRL out; `task` is the name given      |
|               |     | plus the same extra columns                    | (states do not record it)                 |
| PRM800K       | in  | problem, the chosen steps; rating 1 -> 1.0,    | unchosen alternative completions, steps   |
|               |     | -1 -> 0.0, 0 -> `neutral` (default 1.0); where | after the first -1, the 3-way rating,     |
|               |     | labelling stopped on an error, its first -1    | labeler and timing, `flagged`, the ground |
|               |     | completion as the last step                    | truth answer (states hold none)           |
| PRM800K       | out | not written (see below)                        |                                           |

PRM800K is not written: its rows record human judgements (three ratings, alternatives at a step, the labeler, a
stop at the first error); writing them from MC values would invent those. TRL rows are what trainers read.

Decisions:
1. Steps in: each step gets the delimiter (default "\\n") appended unless it ends with it, except the last, so
   join(steps) is the response and a state's text is a literal prefix, as for dapo's own records. A foreign step
   holding the delimiter inside stays one step: its label belongs to the whole step.
2. A prompt that does not end in whitespace gets the delimiter too (TRL's "Q?" + "Step 1" would run together).
3. s_0 (the prompt alone) is labelled by none of these formats, so it gets no row rather than an invented value;
   the critic's targets simply leave it out. A row carrying our own `prompt_mc_value` gets its s_0 back.
4. PRM800K: a rating judges one step given the ones before it, not the chance of finishing correctly. After the
   first bad step a later "good" rating says nothing about reaching the answer, so the solution ends at its first
   -1 step (PRM800K's phase 2 stops labelling there too). Math-Shepherd's labels are MC estimates of the state
   itself, so a + after a - is kept.
5. Out: labels are `mc_value >= threshold` (default 0.5; Math-Shepherd's own "hard estimate" is `> 0`, i.e. a
   threshold just above 0). A solution whose last state is absent (cut off by the token limit) loses its last,
   unlabelled step; any other absent state is an error.
6. PRM800K's rating 0 (no mistake, but no progress) becomes `neutral`, default 1.0: such a step does not lower the
   chance of finishing correctly. TRL's own PRM800K script counts it as False; `neutral=0.0` does the same.
7. Imported states have n_rollouts 0 and no completions: they train a critic, not Stage B.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from dapo.records.checks import RecordError

TAG = "ки"  # Math-Shepherd's step tag (Cyrillic), replaced by "+" or "-" in its `label`
STEP_ONE = re.compile(r"[Ss]tep 1:")  # where a Math-Shepherd solution starts inside `input`
Row = dict[str, Any]


@dataclass(frozen=True)
class StepLabels:
    """One solution as every format sees it: a prompt, its steps as plain texts, and the value of the state after
    each step (values[k] = V(s_{k+1})); prompt_value is V(s_0) when known (only from our own extra columns)."""

    prompt: str
    texts: list[str]
    values: list[float]
    prompt_value: float | None = None
    solution_id: str | None = None
    problem_id: str | None = None


# ---------------------------------------------------------------------------------------------- shared helpers


_KINDS: dict[Any, str] = {str: "a string", list: "a list", Mapping: "an object"}


def _field(row: Mapping[str, Any], name: str, kind: type) -> Any:
    """row[name] if it has the expected type, else a RecordError naming the field."""
    if not isinstance(row, Mapping) or name not in row:
        raise RecordError(f"missing field {name!r}")
    value = row[name]
    if not isinstance(value, kind):
        raise RecordError(f"field {name!r} should be {_KINDS.get(kind, kind)}, got a {type(value).__name__}")
    return value


def _unit(value: Any, where: str) -> float:
    """A probability in [0, 1], or a RecordError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise RecordError(f"{where} is {value!r}, not a number in [0, 1]")
    return float(value)


def _short(value: float) -> float:
    """A float32 value as the shortest decimal that reads back to it (0.7, not 0.699999988), for JSON rows."""
    return float(str(np.float32(value)))


def problem_id_of(prompt: str) -> str:
    """A stable id from the question text, so the solutions of one problem share it (the critic's validation
    split holds problems out whole)."""
    return "p-" + hashlib.sha256(prompt.encode()).hexdigest()[:16]


def _soft_values(row: Mapping[str, Any], labels: Sequence[bool], threshold: float) -> list[float]:
    """Hard labels as 1.0 / 0.0, or the soft `mc_values` our own rows carry once checked against the labels (a
    label edited after export, or another threshold, would otherwise be silently overruled)."""
    if row.get("mc_values") is None:
        return [1.0 if label else 0.0 for label in labels]
    soft = row["mc_values"]
    if not isinstance(soft, list) or len(soft) != len(labels):
        raise RecordError(f"'mc_values' should be a list of {len(labels)} numbers, one per step")
    values = [_unit(v, f"mc_values[{k}]") for k, v in enumerate(soft)]
    for k, (value, label) in enumerate(zip(values, labels, strict=True)):
        if (value >= threshold) != label:
            raise RecordError(f"mc_values[{k}] = {value} disagrees with label {label} at threshold {threshold}")
    return values


def _extras(row: Mapping[str, Any]) -> dict[str, Any]:
    """Our own extra columns of an exported row (absent in rows made elsewhere)."""
    prompt_value = row.get("prompt_mc_value")
    return {
        "prompt_value": None if prompt_value is None else _unit(prompt_value, "prompt_mc_value"),
        "solution_id": _optional_id(row, "solution_id"),
        "problem_id": _optional_id(row, "problem_id"),
    }


def _optional_id(row: Mapping[str, Any], name: str) -> str | None:
    """An id column of our own, if the row has one (a non-string id would fail later, far from its line)."""
    if row.get(name) is None:
        return None
    return _field(row, name, str) or None


def _with_delimiter(text: str, delimiter: str, last: bool) -> str:
    """A step as dapo stores it: ending with the delimiter, except the last (a response's final line)."""
    return text if last or text.endswith(delimiter) else text + delimiter


def to_states(labels: StepLabels, solution_id: str, delimiter: str = "\n") -> list[Row]:
    """The `states` rows of one labelled solution: s_1..s_T (and s_0 when its value is known)."""
    if not labels.prompt.strip():
        raise RecordError("the prompt is empty")
    if not labels.texts:
        raise RecordError("the solution has no steps")
    for k, text in enumerate(labels.texts):
        if not text.strip():
            raise RecordError(f"step {k} is empty")
    solution_id = labels.solution_id or solution_id
    prompt = labels.prompt if labels.prompt[-1].isspace() else labels.prompt + delimiter
    last = len(labels.texts) - 1
    steps = [_with_delimiter(text, delimiter, k == last) for k, text in enumerate(labels.texts)]
    values = {t + 1: value for t, value in enumerate(labels.values)}
    if labels.prompt_value is not None:
        values[0] = labels.prompt_value
    problem_id = labels.problem_id or problem_id_of(labels.prompt)
    return [_state_row(solution_id, problem_id, prompt, steps, t, values[t]) for t in sorted(values)]


def _state_row(solution_id: str, problem_id: str, prompt: str, steps: list[str], t: int, value: float) -> Row:
    return {
        "state_id": f"{solution_id}/t{t}",
        "problem_id": problem_id,
        "solution_id": solution_id,
        "t": t,
        "prompt": prompt,
        "steps": steps,
        "mc_value": value,
        "n_rollouts": 0,  # not from our rollouts: an imported label
        "completions": [],
        "completion_rewards": [],
        "completion_truncated": [],
    }


def from_states(states: Sequence[Mapping[str, Any]], delimiter: str = "\n") -> StepLabels:
    """The labelled steps of one solution's `states` rows (any order). A missing last state (a solution cut off by
    the token limit) drops the last step, which then has no label; any other missing state is an error."""
    if not states:
        raise RecordError("no states")
    first = states[0]
    sid, steps = first["solution_id"], list(first["steps"])
    by_t: dict[int, float] = {}
    for state in states:
        if state["solution_id"] != sid or state["prompt"] != first["prompt"] or list(state["steps"]) != steps:
            raise RecordError(f"solution {sid!r}: state t={state['t']} disagrees with t={first['t']} on its solution")
        if state["t"] in by_t or not 0 <= state["t"] <= len(steps):
            raise RecordError(f"solution {sid!r}: state t={state['t']} is repeated or outside 0..{len(steps)}")
        by_t[state["t"]] = float(state["mc_value"])
    if len(steps) not in by_t:
        steps = steps[:-1]  # cut off: its last step leads to no labelled state
    missing = [t for t in range(1, len(steps) + 1) if t not in by_t]
    if missing or not steps:
        problem = f"no state t={missing[0]}, so step {missing[0] - 1} has no label" if missing else "no labelled step"
        raise RecordError(f"solution {sid!r}: {problem}")
    for k, step in enumerate(steps[:-1]):
        if not step.endswith(delimiter):
            raise RecordError(f"solution {sid!r}: step {k} does not end with the delimiter {delimiter!r}")
    texts = [step.removesuffix(delimiter) for step in steps]
    values = [by_t[t] for t in range(1, len(steps) + 1)]
    return StepLabels(first["prompt"], texts, values, by_t.get(0), sid, first["problem_id"])


def _export_columns(labels: StepLabels) -> Row:
    """The extra columns that keep what a boolean label loses (TRL and Hugging Face datasets allow extra
    columns; trainers ignore them)."""
    return {
        "mc_values": [_short(v) for v in labels.values],
        "prompt_mc_value": None if labels.prompt_value is None else _short(labels.prompt_value),
        "solution_id": labels.solution_id,
        "problem_id": labels.problem_id,
    }


# --------------------------------------------------------------------------------------------- TRL stepwise


def parse_trl_stepwise(row: Mapping[str, Any], threshold: float = 0.5) -> StepLabels:
    """A TRL stepwise-supervision row: prompt, completions (one per step), labels (True = a good step)."""
    prompt = _field(row, "prompt", str)
    completions = _field(row, "completions", list)
    labels = _field(row, "labels", list)
    if len(completions) != len(labels):
        raise RecordError(f"{len(completions)} completions but {len(labels)} labels (one per step)")
    for k, (text, label) in enumerate(zip(completions, labels, strict=True)):
        if not isinstance(text, str):
            raise RecordError(f"completions[{k}] should be a string, got {type(text).__name__}")
        if not isinstance(label, bool):
            raise RecordError(f"labels[{k}] should be true or false, got {label!r}")
    return StepLabels(prompt, list(completions), _soft_values(row, labels, threshold), **_extras(row))


def from_trl_stepwise(
    row: Mapping[str, Any], solution_id: str, delimiter: str = "\n", threshold: float = 0.5
) -> list[Row]:
    """`states` rows of one TRL stepwise-supervision row (see the module's table)."""
    return to_states(parse_trl_stepwise(row, threshold), solution_id, delimiter)


def to_trl_stepwise(states: Sequence[Mapping[str, Any]], threshold: float = 0.5, delimiter: str = "\n") -> Row:
    """One TRL stepwise-supervision row from one solution's `states` rows; labels are mc_value >= threshold."""
    labels = from_states(states, delimiter)
    hard = [value >= threshold for value in labels.values]
    return {"prompt": labels.prompt, "completions": labels.texts, "labels": hard, **_export_columns(labels)}


# -------------------------------------------------------------------------------------------- Math-Shepherd


def _tag_marks(pieces: Sequence[str], label: str) -> list[str]:
    """The + / - that `label` holds where `input` (split into `pieces` at its tags) has each tag.
    Example: pieces ["Q? Step 1: a ", "\\nStep 2: b ", ""], label "Q? Step 1: a +\\nStep 2: b -" -> ["+", "-"]."""
    marks, pos = [], 0
    for k, piece in enumerate(pieces):
        if label[pos : pos + len(piece)] != piece:
            raise RecordError(f"'label' differs from 'input' before step tag {k}")
        pos += len(piece)
        if k == len(pieces) - 1:
            break
        mark = label[pos : pos + 1]
        if mark not in ("+", "-"):
            raise RecordError(f"step tag {k} is labelled {mark!r} in 'label', not '+' or '-'")
        marks.append(mark)
        pos += 1
    if pos != len(label):
        raise RecordError("'label' runs on past the end of 'input'")
    return marks


def parse_math_shepherd(row: Mapping[str, Any], threshold: float = 0.5) -> StepLabels:
    """A Math-Shepherd row: the question, then steps "Step 1: ... ки" on separate lines; `label` is the same text
    with each tag replaced by + (the step can still reach the right answer) or - (it cannot)."""
    text, label = _field(row, "input", str), _field(row, "label", str)
    pieces = text.split(TAG)
    if len(pieces) < 2:
        raise RecordError(f"'input' has no step tag {TAG!r}")
    marks = _tag_marks(pieces, label)
    if pieces[-1].strip():
        raise RecordError(f"'input' has text after its last step tag: {pieces[-1][:40]!r}")
    start = STEP_ONE.search(pieces[0])
    if start is None:
        raise RecordError(f"no 'Step 1:' before the first {TAG!r} tag (a tag inside the question?)")
    texts = [pieces[0][start.start() :].strip(), *(piece.strip() for piece in pieces[1:-1])]
    values = _soft_values(row, [mark == "+" for mark in marks], threshold)
    return StepLabels(pieces[0][: start.start()], texts, values, **_extras(row))


def from_math_shepherd(
    row: Mapping[str, Any], solution_id: str, delimiter: str = "\n", threshold: float = 0.5
) -> list[Row]:
    """`states` rows of one Math-Shepherd row (see the module's table)."""
    return to_states(parse_math_shepherd(row, threshold), solution_id, delimiter)


def to_math_shepherd(
    states: Sequence[Mapping[str, Any]], threshold: float = 0.5, delimiter: str = "\n", task: str = ""
) -> Row:
    """One Math-Shepherd row from one solution's `states` rows; + where mc_value >= threshold."""
    labels = from_states(states, delimiter)
    texts = [text.strip() for text in labels.texts]
    for k, text in enumerate(texts):
        if TAG in text:
            raise RecordError(f"solution {labels.solution_id!r}: step {k} contains the step tag {TAG!r}")
    marks = ["+" if value >= threshold else "-" for value in labels.values]
    head = labels.prompt if labels.prompt[-1:].isspace() else labels.prompt + " "
    tagged = head + "\n".join(f"{text} {TAG}" for text in texts)
    marked = head + "\n".join(f"{text} {mark}" for text, mark in zip(texts, marks, strict=True))
    return {"input": tagged, "label": marked, "task": task, **_export_columns(labels)}


# ------------------------------------------------------------------------------------------------- PRM800K


class Rated(NamedTuple):
    """One labelled PRM800K step: its text, its value, and whether it was rated -1."""

    text: str
    value: float
    bad: bool


def _prm800k_step(step: Any, k: int, neutral: float) -> Rated | None:
    """Labelled step k of a PRM800K trajectory: the chosen completion, or the labeler's own step (a human
    completion, good by the instructions), or, where labelling stopped, the first completion rated -1 (the error
    that stopped it); None when the trajectory ends before this step."""
    if not isinstance(step, Mapping):
        raise RecordError(f"label.steps[{k}] should be an object, got {type(step).__name__}")
    completions = step.get("completions") or []
    chosen, human = step.get("chosen_completion"), step.get("human_completion")
    if chosen is not None:
        if isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < len(completions):
            raise RecordError(f"label.steps[{k}]: chosen_completion {chosen!r} is not one of its completions")
        return _rated(completions[chosen], f"label.steps[{k}].completions[{chosen}]", neutral)
    if human is not None:
        text = human.get("text") if isinstance(human, Mapping) else human
        if not isinstance(text, str):
            raise RecordError(f"label.steps[{k}]: human_completion has no text")
        return Rated(text, 1.0, bad=False)
    bad = [c for c in completions if isinstance(c, Mapping) and c.get("rating") == -1]
    return _rated(bad[0], f"label.steps[{k}] (first -1 completion)", neutral) if bad else None


def _rated(completion: Any, where: str, neutral: float) -> Rated:
    """One rated completion: 1 -> 1.0, 0 -> neutral, -1 -> 0.0."""
    if not isinstance(completion, Mapping) or not isinstance(completion.get("text"), str):
        raise RecordError(f"{where} has no text")
    rating = completion.get("rating")
    if isinstance(rating, bool) or rating not in (-1, 0, 1):
        raise RecordError(f"{where} has rating {rating!r}, not -1, 0 or 1")
    return Rated(completion["text"], {1: 1.0, 0: neutral, -1: 0.0}[rating], bad=rating == -1)


def parse_prm800k(row: Mapping[str, Any], neutral: float = 1.0) -> StepLabels:
    """A PRM800K row: the question and the labelled trajectory, up to and including its first bad step."""
    question, label = _field(row, "question", Mapping), _field(row, "label", Mapping)
    problem = _field(question, "problem", str)
    steps = _field(label, "steps", list)
    if label.get("finish_reason") == "bad_problem":
        raise RecordError("the labeler reported the problem as broken (finish_reason 'bad_problem')")
    texts: list[str] = []
    values: list[float] = []
    for k, step in enumerate(steps):
        rated = _prm800k_step(step, k, neutral)
        if rated is None:
            break
        texts.append(rated.text)
        values.append(rated.value)
        if rated.bad:
            break  # the first bad step ends the solution (decision 4)
    if not texts:
        raise RecordError("no labelled step (label.steps is empty or has no chosen completion)")
    return StepLabels(problem, texts, values)


def from_prm800k(row: Mapping[str, Any], solution_id: str, delimiter: str = "\n", neutral: float = 1.0) -> list[Row]:
    """`states` rows of one PRM800K row (see the module's table); `neutral` is the value of a rating-0 step."""
    return to_states(parse_prm800k(row, _unit(neutral, "neutral")), solution_id, delimiter)

"""`arith`: procedural multi-step arithmetic word problems with line-per-step solutions and an exact grader.

Why a bundled toy task: the pipeline (warm start, rollouts, step-level advantages, training) has to be exercised
end to end on CPU with tiny models (0.1-1M parameters, byte-level BPE with a small vocabulary) trained from scratch.
That needs problems with
  * a terse, regular text format a tiny model can learn ("5 + 3 = 8" per line, then "Answer: 8"),
  * one reasoning step per line, so the default "\\n" step delimiter gives meaningful steps,
  * an exact, pure grader (integer comparison of the last "Answer: N"),
  * controllable ways to fail at an identifiable step (`inject_mistake`: one random wrong result; `slip_carries`:
    the habit of forgetting carries and borrows), to warm-start a policy that is wrong sometimes and whose failures
    step-level credit assignment can localise.

Problems are generated, not downloaded: deterministic by seed, no network. Train and test are disjoint by
construction: every candidate problem is assigned to a split by a stable hash (sha256) of its canonical content
(start value and operations), and each split draws from its own RNG stream, skipping the other split's candidates
and its own duplicates.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dapo.tasks.base import Example

ALLOWED_OPS = "+-*"
SPLITS = ("train", "test")
TEST_BUCKETS = 10  # 1 in TEST_BUCKETS canonical problems belongs to the test split
MAX_CONSECUTIVE_MISSES = 20_000  # candidates in a row without a new example before a split is declared unreachable
MISTAKE_DELTAS = (-3, -2, -1, 1, 2, 3)  # how far an injected wrong step result is from the right one

_ANSWER_RE = re.compile(r"Answer:\s*(-?\d+)")
_NAMES = (("Tom", "He"), ("Ann", "She"), ("Bob", "He"), ("Eve", "She"), ("Sam", "He"), ("Mia", "She"))
_OBJECTS = ("apples", "books", "coins", "cards", "pens", "eggs")
_SENTENCES: dict[str, tuple[str, ...]] = {
    "+": ("{p} gets {n} more.", "{p} finds {n} more."),
    "-": ("{p} gives away {n}.", "{p} loses {n}."),
    "*": ("{p} gets {n} times as many.",),
}

Operation = tuple[str, int]


def apply_op(a: int, op: str, b: int) -> int:
    """`a op b` for op in "+-*"."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}; allowed: {ALLOWED_OPS!r}")


def canonical_key(start: int, operations: Sequence[Sequence[Any]]) -> str:
    """Canonical text of a problem's content (names and objects excluded), e.g. "5|+3|-2|*2"."""
    return "|".join([str(start), *(f"{op}{int(n)}" for op, n in operations)])


def split_of(start: int, operations: Sequence[Sequence[Any]]) -> str:
    """The split ("train" or "test") a problem belongs to, by a stable hash of its canonical content."""
    digest = hashlib.sha256(canonical_key(start, operations).encode()).hexdigest()
    return "test" if int(digest[:8], 16) % TEST_BUCKETS == 0 else "train"


StepShift = Callable[[int, int, str, int], int]
"""(step index, value before the step, operator, operand) -> how far the written result is off (0 = right)."""


def _solution_lines(start: int, operations: Sequence[Sequence[Any]], shift: StepShift | None = None) -> str:
    """Worked solution; `shift` puts a wrong result on chosen steps, and every later step carries it on
    consistently (it is computed from the written, wrong value)."""
    lines, value = [], start
    for i, (op, n) in enumerate(operations):
        result = apply_op(value, op, int(n))
        if shift is not None:
            result += shift(i, value, op, int(n))
        lines.append(f"{value} {op} {int(n)} = {result}")
        value = result
    lines.append(f"Answer: {value}")
    return "\n".join(lines)


def inject_mistake(example: Example, step_index: int, rng: random.Random) -> str:
    """A worked solution whose step `step_index` (0-based) has a wrong result, off by a small nonzero amount and
    kept >= 0; every later step is computed consistently from the wrong value, so the final answer is wrong
    (operands are >= 1, so "+", "-" and "*" never cancel the error) and the failure starts at a known step."""
    start, operations = int(example["start"]), example["operations"]
    if not 0 <= step_index < len(operations):
        raise ValueError(f"step_index={step_index} is outside 0..{len(operations) - 1}")
    value = start
    for op, n in operations[: step_index + 1]:
        value = apply_op(value, op, int(n))
    delta = rng.choice([d for d in MISTAKE_DELTAS if value + d >= 0])
    return _solution_lines(start, operations, lambda i, *_: delta if i == step_index else 0)


def carry_slip(value: int, op: str, n: int) -> int:
    """How far a result is off when the carry (of "+") or the borrow (of "-") is forgotten: -10 for an addition
    whose ones digits sum to 10 or more (19 + 5 = 14), +10 for a subtraction whose ones digit is too small
    (23 - 7 = 26), 0 when the step has no carry or borrow (or is a multiplication)."""
    if op == "+" and value % 10 + n % 10 >= 10:
        return -10
    if op == "-" and value % 10 < n % 10 and value >= n:
        return 10
    return 0


def slip_carries(example: Example, rate: float, rng: random.Random) -> str:
    """A worked solution in which every step that needs a carry or a borrow forgets it with probability `rate`
    (a systematic habit, unlike `inject_mistake`'s one random error): a policy fine-tuned on such solutions with
    rate > 0.5 drops carries when decoding greedily, yet still samples the right step sometimes, so its failures
    start at identifiable steps that step-level credit assignment can find. Later steps carry the slip on."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")

    def shift(i: int, value: int, op: str, n: int) -> int:
        slip = carry_slip(value, op, n)
        return slip if slip and rng.random() < rate else 0

    return _solution_lines(int(example["start"]), example["operations"], shift)


def parse_answer(response: str) -> int | None:
    """The integer of the last "Answer: N" in `response`, or None if there is none (or it is not parseable)."""
    matches = _ANSWER_RE.findall(response) if isinstance(response, str) else []
    if not matches:
        return None
    try:
        return int(matches[-1])
    except ValueError:  # e.g. more digits than int() accepts
        return None


@dataclass
class ArithTask:
    """Multi-step arithmetic word problems ("Tom has 5 apples. He gets 3 more. ..."), graded exactly."""

    name = "arith"  # class attribute, not a dataclass field (so not a CLI argument)

    n_steps: int = 3
    """Operations per problem; the worked solution has this many computation lines plus "Answer: N"."""
    max_operand: int = 9
    """Start value and operands are drawn from 1..max_operand."""
    ops: str = "+-*"
    """Allowed operators, a non-empty subset of "+-*" (no division)."""
    max_value: int = 99
    """Every intermediate result stays within 0..max_value (steps that would leave it are resampled)."""
    train_size: int = 5000
    """Number of examples in the "train" split."""
    test_size: int = 500
    """Number of examples in the "test" split (disjoint from train by construction)."""
    seed: int = 0
    """Generation seed; the same seed always yields the same splits."""

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {self.n_steps}")
        if self.max_operand < 1:
            raise ValueError(f"max_operand must be >= 1, got {self.max_operand}")
        if not self.ops or any(op not in ALLOWED_OPS for op in self.ops):
            raise ValueError(f"ops must be a non-empty subset of {ALLOWED_OPS!r}, got {self.ops!r}")
        if self.max_value < 1:
            raise ValueError(f"max_value must be >= 1 (the smallest start value is 1), got {self.max_value}")
        for field in ("train_size", "test_size"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        self.ops = "".join(dict.fromkeys(self.ops))  # drop repeats, keep order: uniform over distinct operators

    # -- Task protocol -------------------------------------------------------------------------------------------

    def load(self, split: str) -> Sequence[Example]:
        """`train_size` ("train") or `test_size` ("test") distinct examples, deterministic by `seed`."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for task {self.name!r}; allowed: {', '.join(SPLITS)}")
        size = self.train_size if split == "train" else self.test_size
        rng = random.Random(f"{self.name}-{self.seed}-{split}")
        examples: list[Example] = []
        seen: set[str] = set()
        misses = 0
        while len(examples) < size:
            problem = self._sample_problem(rng)
            if problem is None or split_of(*problem) != split or canonical_key(*problem) in seen:
                misses += 1
                if misses >= MAX_CONSECUTIVE_MISSES:
                    raise self._unreachable(split, size, len(examples))
                continue
            misses = 0
            seen.add(canonical_key(*problem))
            examples.append(self._make_example(split, len(examples), *problem, rng))
        return examples

    def prompt(self, example: Example) -> str:
        return f"Question: {example['question']}\nSolution:\n"

    def score(self, example: Example, response: str) -> float:
        """1.0 iff the last "Answer: N" in `response` equals the example's answer; never raises on any string."""
        got = parse_answer(response)
        if got is None:
            return 0.0
        try:
            return 1.0 if got == int(example["answer"]) else 0.0
        except (KeyError, TypeError, ValueError):
            return 0.0

    def reference_solution(self, example: Example) -> str | None:
        """One "a op b = c" line per step, then "Answer: N" (no trailing newline)."""
        return _solution_lines(int(example["start"]), example["operations"])

    def final_answer(self, example: Example) -> str:
        return str(example["answer"])

    def answer_key(self, response: str) -> str | None:
        """The last "Answer: N" as its integer's text (what majority votes compare)."""
        got = parse_answer(response)
        return None if got is None else str(got)

    def messages(self, example: Example) -> list[dict[str, str]]:
        """The question as one user turn, asking for the solution format `score` reads."""
        instruction = 'Solve it one step per line, "a op b = c", then end with "Answer: N".'
        return [{"role": "user", "content": f"{example['question']}\n{instruction}"}]

    # -- generation ----------------------------------------------------------------------------------------------

    def _sample_step(self, value: int, rng: random.Random) -> Operation | None:
        """A uniformly drawn operator (among those with a valid operand), then a valid operand; None if stuck."""
        valid: dict[str, list[int]] = {}
        for op in self.ops:
            operands = [n for n in range(1, self.max_operand + 1) if 0 <= apply_op(value, op, n) <= self.max_value]
            if operands:
                valid[op] = operands
        if not valid:
            return None
        op = rng.choice(list(valid))
        return op, rng.choice(valid[op])

    def _sample_problem(self, rng: random.Random) -> tuple[int, list[Operation]] | None:
        """(start, operations) with every intermediate value in 0..max_value, or None if a step had no valid move."""
        start = rng.randint(1, min(self.max_operand, self.max_value))
        value, operations = start, []
        for _ in range(self.n_steps):
            step = self._sample_step(value, rng)
            if step is None:
                return None
            operations.append(step)
            value = apply_op(value, *step)
        return start, operations

    def _make_example(
        self, split: str, index: int, start: int, operations: list[Operation], rng: random.Random
    ) -> Example:
        value = start
        for op, n in operations:
            value = apply_op(value, op, n)
        return {
            "id": f"{self.name}-{split}-{index:05d}",
            "question": _question(start, operations, rng),
            "start": start,
            "operations": [[op, n] for op, n in operations],
            "answer": str(value),
        }

    def _unreachable(self, split: str, size: int, found: int) -> ValueError:
        return ValueError(
            f"arith: could only find {found} distinct {split!r} problems out of the {size} requested "
            f"({MAX_CONSECUTIVE_MISSES} candidates in a row gave nothing new) with n_steps={self.n_steps}, "
            f"max_operand={self.max_operand}, ops={self.ops!r}, max_value={self.max_value}; "
            f"lower {split}_size or widen the problem space"
        )


def _question(start: int, operations: Sequence[Operation], rng: random.Random) -> str:
    """A short word problem: "Tom has 5 apples. He gets 3 more. ... How many apples now?"."""
    name, pronoun = rng.choice(_NAMES)
    obj = rng.choice(_OBJECTS)
    sentences = [f"{name} has {start} {obj}."]
    sentences += [rng.choice(_SENTENCES[op]).format(p=pronoun, n=n) for op, n in operations]
    sentences.append(f"How many {obj} now?")
    return " ".join(sentences)

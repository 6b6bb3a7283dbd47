"""Tests for the bundled `arith` task: generation, disjoint splits, step format, grader, mistake injection."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo.tasks.arith import (
    ArithTask,
    canonical_key,
    carry_slip,
    inject_mistake,
    parse_answer,
    slip_carries,
    split_of,
)
from dapo.tasks.base import Example, Task

STEP_RE = re.compile(r"^(-?\d+) ([+\-*]) (\d+) = (-?\d+)$")


def small(seed: int = 0) -> ArithTask:
    return ArithTask(train_size=300, test_size=60, seed=seed)


@pytest.fixture(scope="module")
def default_splits() -> dict[str, list[Example]]:
    task = ArithTask()
    return {split: list(task.load(split)) for split in ("train", "test")}


def _key(example: Example) -> str:
    return canonical_key(example["start"], example["operations"])


def _parse_steps(solution: str) -> list[tuple[int, str, int, int]]:
    """(a, op, b, c) of each computation line; asserts the line format."""
    steps = []
    for line in solution.split("\n")[:-1]:
        m = STEP_RE.match(line)
        assert m, f"bad step line {line!r}"
        steps.append((int(m[1]), m[2], int(m[3]), int(m[4])))
    return steps


def _check_reference(task: ArithTask, example: Example) -> list[tuple[int, str, int, int]]:
    """The reference solution is well formed, chained, arithmetically right and within 0..max_value."""
    solution = task.reference_solution(example)
    assert solution is not None and not solution.endswith("\n")
    lines = solution.split("\n")
    assert len(lines) == task.n_steps + 1
    assert lines[-1] == f"Answer: {example['answer']}"
    steps = _parse_steps(solution)
    value = example["start"]
    for (a, op, b, c), (ex_op, ex_b) in zip(steps, example["operations"], strict=True):
        assert (a, op, b) == (value, ex_op, ex_b)
        assert c == {"+": a + b, "-": a - b, "*": a * b}[op]
        assert 0 <= c <= task.max_value
        assert op in task.ops and 1 <= b <= task.max_operand
        value = c
    assert str(value) == example["answer"]
    return steps


# -- protocol, config ------------------------------------------------------------------------------------------


def test_is_a_task() -> None:
    task = ArithTask()
    assert isinstance(task, Task)
    assert task.name == ArithTask.name == "arith"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_steps": 0},
        {"n_steps": -2},
        {"max_operand": 0},
        {"ops": ""},
        {"ops": "/"},
        {"ops": "+/"},
        {"ops": "+ "},
        {"max_value": 0},
        {"train_size": -1},
        {"test_size": -1},
    ],
)
def test_bad_config_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ArithTask(**kwargs)  # type: ignore[arg-type]


def test_unknown_split_raises() -> None:
    with pytest.raises(ValueError, match=r"train.*test"):
        small().load("validation")


def test_unreachable_size_raises_instead_of_looping() -> None:
    task = ArithTask(n_steps=1, max_operand=1, ops="+", train_size=5, test_size=5)  # only "1 + 1" exists
    with pytest.raises(ValueError, match="distinct"):
        task.load("train")
    with pytest.raises(ValueError, match="distinct"):
        task.load("test")


def test_zero_sizes_give_empty_splits() -> None:
    task = ArithTask(train_size=0, test_size=0)
    assert list(task.load("train")) == [] and list(task.load("test")) == []


# -- generation ------------------------------------------------------------------------------------------------


def test_sizes_ids_and_fields(default_splits: dict[str, list[Example]]) -> None:
    task = ArithTask()
    for split, size in (("train", task.train_size), ("test", task.test_size)):
        examples = default_splits[split]
        assert len(examples) == size
        assert [e["id"] for e in examples] == [f"arith-{split}-{i:05d}" for i in range(size)]
        for e in examples:
            assert set(e) == {"id", "question", "start", "operations", "answer"}
            assert isinstance(e["start"], int) and isinstance(e["answer"], str)
            assert all(isinstance(op, str) and isinstance(n, int) for op, n in e["operations"])


def test_deterministic_by_seed() -> None:
    for split in ("train", "test"):
        assert small(7).load(split) == small(7).load(split)
        task = small(7)
        assert task.load(split) == task.load(split)


def test_different_seeds_differ() -> None:
    for split in ("train", "test"):
        a, b = small(0).load(split), small(1).load(split)
        assert [_key(e) for e in a] != [_key(e) for e in b]
        assert [e["question"] for e in a] != [e["question"] for e in b]


def test_splits_disjoint_and_without_duplicates(default_splits: dict[str, list[Example]]) -> None:
    train = {_key(e) for e in default_splits["train"]}
    test = {_key(e) for e in default_splits["test"]}
    assert len(train) == len(default_splits["train"]) and len(test) == len(default_splits["test"])
    assert train.isdisjoint(test)
    assert all(split_of(e["start"], e["operations"]) == "train" for e in default_splits["train"])
    assert all(split_of(e["start"], e["operations"]) == "test" for e in default_splits["test"])


def test_splits_disjoint_across_seeds() -> None:
    """Split membership depends on content only, so no seed's test problem is any seed's train problem."""
    train = {_key(e) for seed in range(3) for e in small(seed).load("train")}
    test = {_key(e) for seed in range(3) for e in small(seed).load("test")}
    assert train.isdisjoint(test)


def test_question_is_a_short_word_problem(default_splits: dict[str, list[Example]]) -> None:
    for e in default_splits["train"][:200]:
        q = e["question"]
        assert f" has {e['start']} " in q and q.endswith(" now?") and "How many" in q
        assert q.count(".") == len(e["operations"]) + 1
        for _, n in e["operations"]:
            assert str(n) in q
        assert "\n" not in q and len(q) < 200


def test_prompt_format(default_splits: dict[str, list[Example]]) -> None:
    task, e = ArithTask(), default_splits["test"][0]
    assert task.prompt(e) == f"Question: {e['question']}\nSolution:\n"


# -- worked solutions, value ranges ----------------------------------------------------------------------------


def test_reference_solution_scores_one_on_every_example(default_splits: dict[str, list[Example]]) -> None:
    task = ArithTask()
    for examples in default_splits.values():
        for e in examples:
            _check_reference(task, e)
            assert task.score(e, task.reference_solution(e) or "") == 1.0
            assert task.score(e, task.prompt(e) + (task.reference_solution(e) or "")) == 1.0


def test_reference_solution_example_text() -> None:
    e = {"start": 5, "operations": [["+", 3], ["-", 2], ["*", 2]], "answer": "12"}
    assert ArithTask().reference_solution(e) == "5 + 3 = 8\n8 - 2 = 6\n6 * 2 = 12\nAnswer: 12"


@pytest.mark.parametrize("n_steps", [1, 2, 5, 8])
def test_n_steps_controls_number_of_lines(n_steps: int) -> None:
    task = ArithTask(n_steps=n_steps, train_size=60, test_size=6)  # n_steps=1 has only ~200 problems
    for split in ("train", "test"):
        for e in task.load(split):
            assert len(e["operations"]) == n_steps
            assert len(_check_reference(task, e)) == n_steps


@pytest.mark.parametrize("ops", ["+", "-", "*", "+-", "-*", "*+"])
def test_ops_restriction_respected(ops: str) -> None:
    task = ArithTask(ops=ops, train_size=50, test_size=5)
    for split in ("train", "test"):
        for e in task.load(split):
            assert {op for op, _ in e["operations"]} <= set(ops)
            _check_reference(task, e)


def test_all_ops_used_by_default(default_splits: dict[str, list[Example]]) -> None:
    assert {op for e in default_splits["train"] for op, _ in e["operations"]} == set("+-*")


@pytest.mark.parametrize(("max_value", "max_operand"), [(20, 9), (99, 9), (5, 9), (200, 15)])
def test_intermediate_values_within_range(max_value: int, max_operand: int) -> None:
    task = ArithTask(max_value=max_value, max_operand=max_operand, train_size=150, test_size=15)
    for split in ("train", "test"):
        for e in task.load(split):
            assert 1 <= e["start"] <= min(max_operand, max_value)
            _check_reference(task, e)


@settings(max_examples=25, deadline=None)
@given(
    n_steps=st.integers(3, 6),  # with max_operand >= 5: hundreds of distinct problems at least, so sizes are reachable
    max_operand=st.integers(5, 12),
    ops=st.sampled_from(["+", "+-", "+*", "-*", "+-*", "*-+"]),
    max_value=st.integers(30, 150),
    seed=st.integers(0, 10_000),
)
def test_generated_examples_always_valid(n_steps: int, max_operand: int, ops: str, max_value: int, seed: int) -> None:
    task = ArithTask(n_steps, max_operand, ops, max_value, train_size=20, test_size=3, seed=seed)
    for split in ("train", "test"):
        for e in task.load(split):
            _check_reference(task, e)
            assert task.score(e, task.reference_solution(e) or "") == 1.0


# -- mistakes --------------------------------------------------------------------------------------------------


def test_inject_mistake_fails_from_the_chosen_step(default_splits: dict[str, list[Example]]) -> None:
    task, rng = ArithTask(), random.Random(0)
    for e in default_splits["test"]:
        reference = (task.reference_solution(e) or "").split("\n")
        for step in range(task.n_steps):
            wrong = inject_mistake(e, step, rng)
            lines = wrong.split("\n")
            assert task.score(e, wrong) == 0.0
            assert len(lines) == len(reference) and lines[-1].startswith("Answer: ")
            assert lines[:step] == reference[:step]
            assert all(a != b for a, b in zip(lines[step:], reference[step:], strict=True))
            _check_mistake_arithmetic(wrong, e, step)


def _check_mistake_arithmetic(wrong: str, example: Example, step: int) -> None:
    """Step `step` is off by a small nonzero amount (result >= 0); every other line is right given its input."""
    value = example["start"]
    for i, (a, op, b, c) in enumerate(_parse_steps(wrong)):
        assert a == value and [op, b] == example["operations"][i]
        right = {"+": a + b, "-": a - b, "*": a * b}[op]
        if i == step:
            assert c != right and abs(c - right) <= 3 and c >= 0
        else:
            assert c == right
        value = c
    assert wrong.split("\n")[-1] == f"Answer: {value}"


def test_inject_mistake_deterministic_given_rng(default_splits: dict[str, list[Example]]) -> None:
    e = default_splits["train"][3]
    assert inject_mistake(e, 1, random.Random(5)) == inject_mistake(e, 1, random.Random(5))


def test_inject_mistake_does_not_mutate_example(default_splits: dict[str, list[Example]]) -> None:
    e = default_splits["train"][0]
    before = repr(e)
    inject_mistake(e, 0, random.Random(0))
    assert repr(e) == before


@pytest.mark.parametrize("step", [-1, 3, 10])
def test_inject_mistake_bad_step_raises(step: int) -> None:
    e = {"start": 5, "operations": [["+", 3], ["-", 2], ["*", 2]], "answer": "12"}
    with pytest.raises(ValueError):
        inject_mistake(e, step, random.Random(0))


def test_inject_mistake_on_zero_keeps_non_negative() -> None:
    e = {"start": 1, "operations": [["-", 1], ["*", 6]], "answer": "0"}
    for seed in range(50):
        lines = inject_mistake(e, 0, random.Random(seed)).split("\n")
        c = int(lines[0].split(" = ")[1])
        assert 1 <= c <= 3


# -- grader ----------------------------------------------------------------------------------------------------

EXAMPLE = {"id": "x", "question": "q", "start": 5, "operations": [["+", 7]], "answer": "12"}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Answer: 12", 1.0),
        ("5 + 7 = 12\nAnswer: 12", 1.0),
        ("Answer:12", 1.0),
        ("Answer:   12\n", 1.0),
        ("Answer: 012", 1.0),
        ("Answer: 12 apples", 1.0),
        ("blah Answer: 12 blah", 1.0),
        ("Answer: 3\nAnswer: 12", 1.0),
        ("Answer: 12\nAnswer: 3", 0.0),
        ("Answer: 12 Answer: 13", 0.0),
        ("Answer: 13", 0.0),
        ("Answer: 120", 0.0),
        ("Answer: -12", 0.0),
        ("answer: 12", 0.0),
        ("Answer: twelve", 0.0),
        ("12", 0.0),
        ("", 0.0),
        ("Answer:", 0.0),
        ("Answer: 12\nAnswer:", 1.0),
        ("Answer: " + "9" * 10_000, 0.0),
        ("Answer: 💥 12", 0.0),
        ("ünïcödé → Answer: 12 ✓", 1.0),
        ("\x00\x01Answer: 12\x00", 1.0),
    ],
)
def test_score_cases(response: str, expected: float) -> None:
    assert ArithTask().score(EXAMPLE, response) == expected


def test_score_negative_answer() -> None:
    e = {**EXAMPLE, "answer": "-4"}
    assert ArithTask().score(e, "Answer: -4") == 1.0
    assert ArithTask().score(e, "Answer: 4") == 0.0


def test_parse_answer() -> None:
    assert parse_answer("Answer: 1\nfoo Answer: -7 bar") == -7
    assert parse_answer("nothing here") is None
    assert parse_answer("Answer: " + "1" * 5000) is None  # beyond int()'s digit limit: no answer, no exception


@settings(max_examples=300, deadline=None)
@given(response=st.text())
def test_score_never_raises(response: str) -> None:
    assert ArithTask().score(EXAMPLE, response) in (0.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(prefix=st.text(), answer=st.integers(-(10**6), 10**6))
def test_score_takes_last_answer(prefix: str, answer: int) -> None:
    e = {**EXAMPLE, "answer": str(answer)}
    assert ArithTask().score(e, f"{prefix}\nAnswer: {answer}") == 1.0
    assert ArithTask().score(e, f"{prefix}\nAnswer: {answer + 1}") == 0.0
    assert ArithTask().score(e, f"Answer: {answer}\n{prefix}\nAnswer: {answer + 1}") == 0.0


@settings(max_examples=100, deadline=None)
@given(response=st.binary().map(lambda b: b.decode("utf-8", errors="replace")))
def test_score_never_raises_on_decoded_bytes(response: str) -> None:
    assert ArithTask().score(EXAMPLE, response) in (0.0, 1.0)


@pytest.mark.parametrize(
    ("value", "op", "n", "shift"),
    [
        (19, "+", 5, -10),  # 9 + 5 carries: forgetting it writes 14
        (15, "+", 5, -10),  # ones digits sum to exactly 10
        (20, "+", 5, 0),
        (23, "-", 7, 10),  # 3 < 7 borrows: forgetting it writes 26
        (25, "-", 5, 0),
        (7, "-", 7, 0),
        (9, "*", 9, 0),  # multiplication never slips
    ],
)
def test_carry_slip_by_hand(value: int, op: str, n: int, shift: int) -> None:
    assert carry_slip(value, op, n) == shift


def test_slip_carries_always_and_never() -> None:
    e = {"start": 19, "operations": [["+", 5], ["-", 7], ["*", 2]], "answer": "34"}
    # 19 + 5 = 24 slips to 14; 14 - 7 = 7 borrows and slips to 17; 17 * 2 = 34 goes on from the written value.
    # The two slips cancel, so the answer is right although two steps are wrong: the grader sees only the answer.
    slipped = slip_carries(e, 1.0, random.Random(0))
    assert slipped == "19 + 5 = 14\n14 - 7 = 17\n17 * 2 = 34\nAnswer: 34"
    assert slip_carries(e, 0.0, random.Random(0)) == ArithTask().reference_solution(e)


def test_slip_carries_rate_is_the_share_of_slipped_carries(default_splits: dict[str, list[Example]]) -> None:
    """Over many problems, the first carry or borrow of each solution slips at about the given rate."""
    rng, slipped, carries = random.Random(0), 0, 0
    for e in default_splits["train"][:2000]:
        value = int(e["start"])
        for i, (op, n) in enumerate(e["operations"]):
            if carry_slip(value, op, n):
                line = slip_carries(e, 0.6, rng).split("\n")[i]
                carries += 1
                slipped += not line.endswith(f"= {value + n if op == '+' else value - n}")
                break
            value = value + n if op == "+" else value - n if op == "-" else value * n
    assert carries > 500 and abs(slipped / carries - 0.6) < 0.05


def test_slip_carries_rejects_a_bad_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        slip_carries({"start": 1, "operations": [["+", 1]]}, 1.5, random.Random(0))

"""`amc` and `aime`: both row layouts read from fixture files we wrote, integer answers graded exactly, and bad rows
refused with the file and row named (or skipped and counted when lenient)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dapo.tasks import TASKS, task_named
from dapo.tasks.competition import integer_value

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (142, 142),
        (142.0, 142),
        ("042", 42),
        ("1,000", 1000),
        ("$17$", 17),
        ("-3", -3),
        ("42.", 42),
        ("42.00", 42),
        ("42.5", None),
        (41.99, None),
        ("\\frac{1}{2}", None),
        ("forty-two", None),
        ("", None),
        (True, None),
        (None, None),
    ],
)
def test_integer_value(value, expected):
    assert integer_value(value) == expected


def test_both_layouts_load_with_ids_and_plain_integer_answers():
    amc = task_named("amc", str(FIXTURES / "amc.jsonl"))
    aime = task_named("aime", str(FIXTURES / "aime.jsonl"))
    amc_rows, aime_rows = list(amc.load("test")), list(aime.load("test"))
    assert [amc.final_answer(ex) for ex in amc_rows] == ["142", "9", "1000"]  # written as floats: 142.0
    assert [aime.final_answer(ex) for ex in aime_rows] == ["401", "42", "8"]  # capitalised keys; "042" is 42
    assert [ex["id"] for ex in amc_rows] == [0, 1, 2]  # the row's own id is kept
    assert [ex["id"] for ex in aime_rows] == ["aime-test-00000", "aime-test-00001", "aime-test-00002"]
    assert "Problem: What is $3 \\times 47 + 1$?" in amc.prompt(amc_rows[0])
    assert aime.messages(aime_rows[1])[0]["content"].endswith("Find $a + b$ if $a = 19$ and $b = 23$.")
    assert amc.reference_solution(amc_rows[0]) is None and aime.reference_solution(aime_rows[1]).endswith("is 42")
    assert {"amc", "aime"} <= set(TASKS)


@pytest.mark.parametrize(
    ("response", "score"),
    [
        ("19 + 23 = 42\nThe answer is 42", 1.0),
        ("so the answer is \\boxed{042}", 1.0),
        ("#### 42.0", 1.0),
        ("\\boxed{42.5}", 0.0),  # exact: no rounding to the integer
        ("\\boxed{43}", 0.0),
        ("42", 0.0),  # no final-answer marker: nothing to grade
        ("\\boxed{\\frac{84}{2}}", 0.0),  # integers only, no symbolic equivalence
        ("", 0.0),
    ],
)
def test_integer_answers_are_graded_exactly(response, score):
    aime = task_named("aime", str(FIXTURES / "aime.jsonl"))
    example = list(aime.load("test"))[1]  # answer "042"
    assert aime.score(example, response) == score
    assert aime.score(example, None) == 0.0  # type: ignore[arg-type]


def test_bad_rows_are_refused_naming_file_and_row_or_skipped_when_lenient(tmp_path):
    rows = [
        {"problem": "Fine.", "answer": 3},
        {"problem": "A fraction.", "answer": "1/2"},
        {"Problem": "   ", "Answer": 4},
        {"problem": "No answer."},
    ]
    path = tmp_path / "amc.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match=r"amc\.jsonl: row 1 has answer '1/2', not an integer"):
        task_named("amc", str(path)).load("test")
    lenient = type(task_named("amc"))(data=str(path), strict=False)
    assert [ex["problem"] for ex in lenient.load("test")] == ["Fine."]

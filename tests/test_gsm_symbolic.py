"""`gsm_symbolic`: problems generated offline by reasoning-gym, deterministic and disjoint splits, reference
solutions in the task's step format that score 1.0, prompts, lookup by name and `problems` records."""

from __future__ import annotations

import json
import re
import sys

import pytest

from dapo.core.steps import join_steps, split_steps
from dapo.records import read_provenance, read_records
from dapo.tasks import TASKS, GSMSymbolicTask, Task, task_named, write_problems
from dapo.tasks.gsm8k import INSTRUCTION

pytest.importorskip("reasoning_gym")


@pytest.fixture(scope="module")
def task() -> GSMSymbolicTask:
    return GSMSymbolicTask(train_size=300, test_size=100, seed=0)


def test_splits_are_deterministic_distinct_and_disjoint(task):
    train, test = task.load("train"), task.load("test")
    assert len(train) == 300 and len(test) == 100
    assert train == GSMSymbolicTask(train_size=300, test_size=100, seed=0).load("train")
    assert test == GSMSymbolicTask(train_size=5, test_size=100, seed=0).load("test")  # a split ignores the other's size
    questions = [row["question"] for row in train], [row["question"] for row in test]
    assert len(set(questions[0])) == 300 and len(set(questions[1])) == 100  # no repeats within a split
    assert not set(questions[0]) & set(questions[1])
    other_seed = GSMSymbolicTask(train_size=300, test_size=100, seed=1)
    assert [row["question"] for row in other_seed.load("train")] != questions[0]
    assert not {row["question"] for row in other_seed.load("test")} & set(questions[0])  # any seed's test vs train
    assert [row["id"] for row in test[:2]] == ["gsm_symbolic-test-00000", "gsm_symbolic-test-00001"]
    assert GSMSymbolicTask(train_size=0).load("train") == []


def test_rows_keep_reasoning_gyms_fields_as_plain_json(task):
    for row in task.load("train"):
        assert set(row) == {"id", "question", "answer", "metadata"}
        assert json.loads(json.dumps(row)) == row  # Fractions in metadata.variables are stored as text
        assert isinstance(row["answer"], str) and row["metadata"]["answer_cot"]


def test_reference_solutions_are_steps_that_score_1(task):
    for row in [*task.load("train"), *task.load("test")]:
        solution = task.reference_solution(row)
        steps = split_steps(solution)
        assert join_steps(steps) == solution and "\n\n" not in solution and len(steps) >= 2
        assert steps[-1] == f"The answer is {task.final_answer(row)}"
        assert task.score(row, solution) == 1.0


def test_wrong_or_broken_answers_score_0(task):
    row = task.load("test")[0]
    answer = float(task.final_answer(row))
    assert task.score(row, f"so\nThe answer is {task.final_answer(row)}.") == 1.0
    for wrong in (f"The answer is {answer + 1}", "", "The answer is", "#### ", "\\boxed{", None):
        assert task.score(row, wrong) == 0.0, wrong


def test_prompt_and_messages_ask_for_one_step_per_line_and_the_answer_line(task):
    row = task.load("train")[0]
    assert task.prompt(row) == f"{INSTRUCTION}\n\nQuestion: {row['question']}\nSolution:\n"
    assert task.messages(row) == [{"role": "user", "content": f"{INSTRUCTION}\n\n{row['question']}"}]
    assert "one step per line" in INSTRUCTION and '"The answer is N"' in INSTRUCTION


def test_lookup_by_name_and_settings_checks():
    assert TASKS["gsm_symbolic"] is GSMSymbolicTask
    named = task_named("gsm_symbolic")
    assert isinstance(named, GSMSymbolicTask) and isinstance(named, Task)
    with pytest.raises(ValueError, match=r"'gsm_symbolic' generates its problems and takes no data"):
        task_named("gsm_symbolic", data="rows.jsonl")
    with pytest.raises(ValueError, match=r"test_size must be >= 0"):
        GSMSymbolicTask(test_size=-1)
    with pytest.raises(ValueError, match=r"unknown split 'validation'"):
        GSMSymbolicTask().load("validation")


def test_a_missing_reasoning_gym_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # `import reasoning_gym` now raises ImportError
    with pytest.raises(ImportError, match=re.escape('pip install "dapo[scale]"')):
        GSMSymbolicTask(train_size=2).load("train")


def test_write_problems(task, tmp_path):
    path = write_problems(task, tmp_path / "problems", split="test", limit=5)
    stored = read_records(path, "problems")
    examples = list(task.load("test"))[:5]
    assert stored["id"] == [row["id"] for row in examples]
    assert stored["answer"] == [task.final_answer(row) for row in examples]
    assert stored["prompt"] == [task.prompt(row) for row in examples]
    assert [json.loads(text) for text in stored["example"]] == examples
    assert set(stored["task"]) == {"gsm_symbolic"}
    assert read_provenance(path).config["chat_template"] is False

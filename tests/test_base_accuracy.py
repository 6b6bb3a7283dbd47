"""benchmarks/base_accuracy.py, the table of where real models start: reasoning-gym generators as evaluation tasks,
and the whole table on a tiny model (the figures in docs/real_model.md come from the same code)."""

from __future__ import annotations

import pytest

from benchmarks.base_accuracy import GYM_GENERATORS, GymQuestions, candidate_tasks, main

pytest.importorskip("reasoning_gym")


@pytest.mark.parametrize("generator", GYM_GENERATORS)
def test_gym_questions_are_fixed_per_split_and_graded_by_the_final_number(generator):
    task = GymQuestions(generator, size=5)
    test = task.load("test")
    assert len(test) == 5 and test == GymQuestions(generator, size=5).load("test")  # the same problems every run
    assert [ex["question"] for ex in test] != [ex["question"] for ex in task.load("train")]
    example = test[0]
    assert example["question"] in task.prompt(example)
    assert task.messages(example)[-1]["role"] == "user"
    assert task.score(example, f"Working it out.\nThe answer is {example['answer']}") == 1.0
    assert task.score(example, "The answer is 123456789") == 0.0


def test_every_candidate_task_has_enough_test_problems():
    for label, task in candidate_tasks(7).items():
        assert len(task.load("test")) >= 7, label


def test_the_table_has_one_row_per_task(policy_dir, capsys):
    main(["--model", policy_dir, "--name", "tiny", "--limit", "2", "--max-new-tokens", "8"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == len(candidate_tasks(2))
    assert all(" / 2 | " in row for row in rows)

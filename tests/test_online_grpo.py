"""benchmarks/online_grpo.py: TRL's GRPOTrainer as a method of the demo's comparison. Its reward is the task's
score with Stage A's rule for cut-off completions, it stops at the token budget, it reports paired differences
against the demo's policies, and a missing TRL names the extra."""

from __future__ import annotations

import json
import re
import sys

import pytest

from benchmarks import online_grpo
from benchmarks.demo_runs import DemoRun
from benchmarks.online_grpo import GrpoRun, GrpoSettings, TokenBudget, task_reward, train_grpo
from dapo.core.errors import MissingExtra

EOS = 2


def test_the_reward_is_the_tasks_score_and_zero_for_a_cut_off_completion(arith):
    """Three completions, cap 4 tokens: right and finished (1), right text but 4 tokens without eos (cut off: 0),
    wrong (0). The budget counts every completion token: 3 + 4 + 2."""
    ex = arith.load("train")[0]
    right = arith.reference_solution(ex)
    budget = TokenBudget(9)
    reward = task_reward(arith, budget, max_new_tokens=4, eos_id=EOS)
    rows = [json.dumps(ex)] * 3
    scores = reward([right, right, "Answer: -1"], rows, [[5, 6, EOS], [5, 6, 7, 8], [5, EOS]])
    assert scores == [1.0, 0.0, 0.0]
    assert budget.tokens == 9 and budget.spent


def test_grpo_stops_at_the_token_budget_and_saves_a_policy(tmp_path, arith, policy_dir):
    settings = GrpoSettings(group=2, max_new_tokens=16, seed=0)
    run = train_grpo(policy_dir, arith.load("train")[:4], arith, 1e-4, budget=200, settings=settings, out=tmp_path)
    assert 200 <= run.tokens <= 200 + 2 * 16  # stops after the step that crossed it: at most one step's completions
    assert run.steps >= 1 and (tmp_path / "hf" / "config.json").is_file()
    # a step adds at most 32 tokens, so 50, 100 and 150 are each passed at their own step, before the budget
    assert [s["percent"] for s in run.snapshots] == [25, 50, 75]
    for snapshot in run.snapshots:
        assert snapshot["percent"] * 2 <= snapshot["tokens"] < snapshot["percent"] * 2 + 2 * 16
        assert (tmp_path / f"at{snapshot['percent']}" / "hf" / "config.json").is_file()


def test_the_report_pairs_grpo_with_every_demo_policy_and_checks_the_start(tmp_path, arith):
    """GRPO right on problems 0 and 1 of 4; the demo's start on problem 0 only: +25 points."""
    run = DemoRun(tmp_path, arith, None, 0, 4, 100, {"test_scores": {"start": [1.0, 0.0, 0.0, 0.0]}})
    grpo = _result([1.0, 1.0, 0.0, 0.0])
    chosen = GrpoRun(1e-4, 100, 3, 1.0, 0.5)
    report = online_grpo.grpo_report(run, [chosen], chosen, grpo, _result([1.0, 0.0, 0.0, 0.0]))
    assert report["grpo_minus_start"]["difference"] == pytest.approx(0.25)
    with pytest.raises(RuntimeError, match=r"differs .* on 1 problems"):
        online_grpo.grpo_report(run, [], GrpoRun(1e-4, 1, 1, 1.0), grpo, _result([0.0, 0.0, 0.0, 0.0]))


def test_a_missing_trl_names_the_bench_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # what an environment without trl gives: ImportError
    with pytest.raises(MissingExtra, match=re.escape("dapo[bench]")):
        online_grpo.import_trl()


def _result(scores):
    from dapo.stages.evaluation import EvalResult

    return EvalResult("arith", "test", [[s] for s in scores], 0.0)

"""The RFT baseline: which samples it keeps, how its token budget becomes steps, and that it trains."""

from __future__ import annotations

import math

import pytest
from builders import candidate_state_rows
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo.core.packing import group_rows
from dapo.core.steps import join_steps
from dapo.pipeline.baseline import actor_train_tokens, correct_solutions, rejection_finetune
from dapo.records import Provenance, write_records
from dapo.training.sft import sft_rows


def _stage_a(tmp_path, arith, n=3):
    """A Stage A folder: per problem one wrong kept solution and one state with hand-made completions."""
    states = candidate_state_rows(arith, n)
    solutions = [
        {
            "solution_id": row["solution_id"],
            "problem_id": row["problem_id"],
            "prompt": row["prompt"],
            "steps": ["1 + 1 = 3\n", "Answer: 3"],
            "reward": 0.0,
        }
        for row in states
    ]
    write_records(solutions, tmp_path / "solutions", "solutions", Provenance(producer="test"))
    write_records(states, tmp_path / "states", "states", Provenance(producer="test"))
    return states


def test_correct_solutions_are_the_distinct_correct_samples(tmp_path, arith):
    states = _stage_a(tmp_path, arith)
    pairs = correct_solutions(tmp_path)
    expected = set()
    for row in states:
        prefix = join_steps(row["steps"][:1])
        # completions: right rest, wrong rest, final line alone, early stop, right rest again (rewards 1,0,1,0,1)
        expected |= {(row["prompt"], prefix + row["completions"][0]), (row["prompt"], prefix + row["completions"][2])}
    assert set(pairs) == expected and len(pairs) == len(expected)  # the repeat is kept once, wrong ones never
    assert pairs == sorted(pairs)
    examples = {arith.prompt(ex): ex for ex in arith.load("train")}
    assert all(arith.score(examples[prompt], solution) == 1.0 for prompt, solution in pairs)
    reference = {(row["prompt"], join_steps(row["steps"])) for row in states}
    assert reference <= set(pairs)  # prefix + right rest is the reference solution itself


class _Items:
    """Stands in for an actor-mode StepDataModule: `load_items` fills `train_items` with token groups."""

    def __init__(self, groups):
        self.groups, self.train_items = groups, []

    def load_items(self):
        self.train_items = self.groups


def test_actor_train_tokens_counts_each_prefix_once():
    groups = [group_rows([[1, 2, 3, 4], [1, 2, 3, 5, 6]], [3, 3]), group_rows([[7, 8]], [1])]
    # group 1: prefix 3 tokens + actions of 1 and 2 tokens = 6; group 2: 1 + 1 = 2; two epochs
    assert actor_train_tokens(_Items(groups), epochs=2) == 2 * (6 + 2)


def test_rejection_finetune_matches_the_token_budget_and_trains(tmp_path, arith, policy_dir):
    _stage_a(tmp_path / "stage_a", arith)
    pairs = correct_solutions(tmp_path / "stage_a")
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    mean_row = sum(len(sft_rows(tokenizer, p, s)[0]) for p, s in pairs) / len(pairs)
    budget = 1000
    summary = rejection_finetune(policy_dir, tmp_path / "rft", pairs, budget, batch_size=4, lr=1e-3)
    assert summary.steps == math.ceil(budget / (4 * mean_row))
    assert summary.tokens >= budget and summary.solutions == len(pairs) == 2 * summary.problems
    before = AutoModelForCausalLM.from_pretrained(policy_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "rft").state_dict()
    assert any((before[k] - after[k]).abs().max() > 0 for k in before)


def test_rejection_finetune_refuses_no_solutions(tmp_path, policy_dir):
    with pytest.raises(ValueError, match="no correct solution"):
        rejection_finetune(policy_dir, tmp_path / "rft", [], 100)

"""A completion cut off by `max_new_tokens` is not a finished solution: generators say so, Stage A scores it 0 and
keeps only its whole steps, Stage B never takes its unfinished text as a step or as the end, the response-level
baseline leaves it out, and records written before the flag existed still read (as not cut off)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo.core.steps import join_steps, whole_steps
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.protocol import Completion, SamplingParams, is_truncated
from dapo.records import Provenance, RecordError, read_records, write_records
from dapo.stages.candidate_advantages import Candidate, candidates
from dapo.stages.mc_rollouts import RolloutConfig, run_rollouts
from dapo.stages.response_advantages import prompt_samples
from dapo.tasks.arith import ArithTask
from dapo.tasks.base import problem_rows
from data_modules.featurize import critic_items


def _task() -> ArithTask:
    return ArithTask(n_steps=2, max_operand=5, train_size=20, test_size=4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\nb\nAnswer: 3", ["a\n", "b\n"]),  # the answer line never got its newline
        ("a\nb\n", ["a\n", "b\n"]),  # cut right after a delimiter: every step is whole
        ("a\n\nb", ["a\n"]),  # a blank line belongs to the (unfinished) step after it, as in split_steps
        ("a\n\n", ["a\n\n"]),  # trailing blank lines end the last step
        ("3 + ", []),
        ("", []),
    ],
)
def test_whole_steps(text: str, expected: list[str]) -> None:
    assert whole_steps(text) == expected


def test_completion_is_a_string_that_survives_pickling() -> None:
    cut = Completion("1 + 2 = ", True)
    assert cut == "1 + 2 = " and is_truncated(cut) and not is_truncated("1 + 2 = 3")
    back = pickle.loads(pickle.dumps(cut))
    assert back == cut and is_truncated(back)
    assert not is_truncated(Completion("x", False))


def test_stage_b_never_takes_unfinished_text_as_a_step_or_as_the_end() -> None:
    texts = ["a\nb\nc", "a\n", "a", "Answer: 3", "a\nAnswer: 3"]
    cut = [True, True, True, False, False]
    assert candidates(texts, [0.0, 0.0, 0.0, 1.0, 1.0], "\n", cut) == [
        Candidate("a\n", False, 0.0),  # cut after its first step: that step is a whole, non-final step
        Candidate("a\n", False, 0.0),
        # "a" was cut inside its first step: no candidate
        Candidate("Answer: 3", True, 1.0),  # finished in one step: ends the solution
        Candidate("a\n", False, 1.0),
    ]


class CuttingGenerator:
    """Every sample is the reference solution; the first `n_cut` samples of a prompt and every odd rollout come
    back marked cut off (same text), so the cut-off ones would score 1 if their text were graded."""

    def __init__(self, task: ArithTask, n_cut: int) -> None:
        self.task, self.n_cut, self.tokens_generated = task, n_cut, 0
        self.examples = {task.prompt(ex): ex for ex in task.load("train")}

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        out = []
        for prompt in prompts:
            base = next(p for p in self.examples if prompt.startswith(p))
            full = self.task.reference_solution(self.examples[base])
            rest = full[len(prompt) - len(base) :]
            if params.n == 4:  # samples: distinct texts (a "Try j." step first) so none is dropped as a repeat
                out.append([Completion(f"Try {j}.\n{full}", j < self.n_cut) for j in range(params.n)])
            else:
                out.append([Completion(rest, i % 2 == 1) for i in range(params.n)])
        return out


def test_stage_a_scores_cut_off_samples_and_rollouts_zero(tmp_path: Path) -> None:
    task = _task()
    problems = write_records(problem_rows(task, task.load("train")[:2]), tmp_path / "p", "problems", Provenance("t"))
    config = RolloutConfig(str(problems), str(tmp_path / "a"), n_samples=4, n_keep=4, n_rollouts=2, seed=1)
    summary = run_rollouts(config, CuttingGenerator(task, n_cut=1), task)
    assert summary.truncated_sampled == 2  # one per problem
    solutions = read_records(tmp_path / "a" / "solutions", "solutions").to_list()
    cut = [s for s in solutions if s["truncated"]]
    assert len(cut) == 2 and len(solutions) == 8
    full_steps = len(next(s for s in solutions if not s["truncated"])["steps"])
    for s in cut:
        assert s["reward"] == 0.0  # the reference text, but unfinished: a failure
        assert len(s["steps"]) == full_steps - 1 and all(step.endswith("\n") for step in s["steps"])
    assert all(s["reward"] == 1.0 for s in solutions if not s["truncated"])
    states = read_records(tmp_path / "a" / "states", "states").to_list()
    for s in cut:
        mine = sorted((row for row in states if row["solution_id"] == s["solution_id"]), key=lambda r: r["t"])
        assert [row["t"] for row in mine] == list(range(len(s["steps"]) + 1))  # t = T too, with rollouts
        assert all(row["n_rollouts"] == 2 for row in mine)  # no terminal state
    for row in states:
        if row["n_rollouts"]:
            assert row["completion_truncated"] == [False, True]
            assert row["completion_rewards"][1] == 0.0  # the cut-off rollout scores 0 whatever its text
    assert summary.states == len(states) == 6 * (full_steps + 1) + 2 * full_steps


def test_the_response_baseline_counts_cut_off_responses_as_failures(tmp_path: Path) -> None:
    """Its group is the t = 0 rollouts (4 kept solutions x 2), cut-off ones in it with reward 0 as DAPO's values
    count them; the kept solutions stay out (chosen by reward)."""
    task = _task()
    problems = write_records(problem_rows(task, task.load("train")[:1]), tmp_path / "p", "problems", Provenance("t"))
    config = RolloutConfig(str(problems), str(tmp_path / "a"), n_samples=4, n_keep=4, n_rollouts=2, seed=1)
    run_rollouts(config, CuttingGenerator(task, n_cut=2), task)
    samples = prompt_samples(tmp_path / "a")
    assert len(samples) == 4 * 2
    assert sorted((s.truncated, s.reward) for s in samples) == [(False, 1.0)] * 4 + [(True, 0.0)] * 4


def test_records_without_the_flags_read_as_not_cut_off(tmp_path: Path) -> None:
    old_solution = {"solution_id": "s", "problem_id": "p", "prompt": "Q", "steps": ["a\n", "b"], "reward": 1.0}
    old_state = {
        "state_id": "s/t0",
        "problem_id": "p",
        "solution_id": "s",
        "t": 0,
        "prompt": "Q",
        "steps": ["a\n", "b"],
        "mc_value": 1.0,
        "n_rollouts": 2,
        "completions": ["a\nb", "a\nb"],
        "completion_rewards": [1.0, 1.0],
    }
    Dataset.from_list([old_solution]).save_to_disk(tmp_path / "solutions")  # a folder written before the flags existed
    (tmp_path / "states.jsonl").write_text(json.dumps(old_state) + "\n")
    assert read_records(tmp_path / "solutions", "solutions")[0]["truncated"] is False
    assert read_records(tmp_path / "states.jsonl", "states")[0]["completion_truncated"] == [False, False]


@pytest.fixture(scope="module")
def generator(policy_dir: str) -> HFGenerator:
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    return HFGenerator(model, AutoTokenizer.from_pretrained(policy_dir))


def test_hf_generator_says_which_completions_the_limit_cut_off(generator: HFGenerator, arith: ArithTask) -> None:
    prompts = [arith.prompt(ex) for ex in arith.load("test")[:3]]
    short = generator.generate(prompts, SamplingParams(n=2, temperature=0.0, max_new_tokens=2))
    assert all(is_truncated(c) for group in short for c in group)  # no solution fits in 2 tokens
    long = generator.generate(prompts, SamplingParams(n=2, temperature=0.0, max_new_tokens=96))
    assert not any(is_truncated(c) for group in long for c in group)  # the policy ends its solutions with eos
    one = generator.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=96, one_step=True))
    assert all(not is_truncated(c) and c.endswith("\n") for group in one for c in group)
    stub = generator.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=2, one_step=True))
    assert all(is_truncated(c) and "\n" not in c for group in stub for c in group)
    assert join_steps(whole_steps(long[0][0])) != long[0][0]  # the answer line has no newline: not a whole step


def test_a_solution_cut_inside_its_first_step_still_teaches_the_critic_its_prompt_state(policy_dir: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    state = {
        "state_id": "s/t0",
        "solution_id": "s",
        "t": 0,
        "prompt": "Question: 2 + 2?\nSolution:\n",
        "steps": [],
        "mc_value": 0.5,
        "n_rollouts": 2,
    }
    items, _ = critic_items([state], tokenizer, max_length=64)
    assert len(items) == 1 and items[0]["targets"] == [0.5] and items[0]["target_mask"] == [True]
    with pytest.raises(RecordError, match="an empty response"):  # no rollouts: an empty finished response
        critic_items([state | {"n_rollouts": 0}], tokenizer, max_length=64)

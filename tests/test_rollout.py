"""Stage A rollouts with a scripted generator: balanced keep, exact MC fractions, ids, provenance and resume.

The scripted world (5 arith problems, 2 per shard, n_samples=8, n_keep=6, n_rollouts=4):
- Sample j of problem p is PATTERNS[p][j]: C = "Try j.\\n" + reference (correct), W = "Try j.\\n" + a solution
  whose first computation line is wrong (wrong answer), D = a repeat of sample 0, E = "", B = blank ("  \\n").
  Every kept solution has T = 4 steps: "Try j.", two computation lines, "Answer: N".
- From a state with t steps, k of the 4 completions are correct: k = t if every computation line so far is right,
  else k = 1. So a correct solution's states have MC [0, 1/4, 2/4, 3/4] then its reward 1.0 at t = T, and a wrong
  one's [0, 1/4, 1/4, 1/4] then 0.0.
- Expected kept (correct + wrong): p0 3+3, p1 1+5 (one correct only), p2 5+1 (one wrong only), p3 2+1, p4 none.
  21 solutions, 21 * 5 = 105 states; 12 blank responses (1 + 3 + 8) and 3 repeats (1 + 2) are dropped.
- Generate calls: 2 per shard with solutions (sample, rollouts), 1 for the last shard (all blank) = 5.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pytest
from datasets import Dataset

from dapo.core.fingerprint import policy_fingerprint
from dapo.core.steps import split_steps
from dapo.generation.protocol import SamplingParams
from dapo.records import Provenance, RecordError, read_provenance, read_records, schema_of, write_records
from dapo.stages.mc_rollouts import RolloutConfig, keep_balanced, run_rollouts
from dapo.stages.state_rollouts import mc_value
from dapo.tasks.arith import ArithTask, apply_op, inject_mistake
from dapo.tasks.base import Example, problem_rows
from dapo.tasks.gsm8k import GSM8KTask

PATTERNS = ["CWCWCWCW", "CWWWWWWE", "CCCCCCWD", "CCWDDEBE", "EEEEEEEE"]
N_SAMPLES, N_KEEP, N_ROLLOUTS = 8, 6, 4
CORRECT_MC = [0.0, 0.25, 0.5, 0.75, 1.0]
WRONG_MC = [0.0, 0.25, 0.25, 0.25, 0.0]
STEP_RE = re.compile(r"^(\d+) ([+\-*]) (\d+) = (-?\d+)\n?$")


def _task() -> ArithTask:
    return ArithTask(n_steps=2, max_operand=5, train_size=50, test_size=10)


class ScriptedGenerator:
    """Deterministic stand-in for a policy (see the module docstring); can fail or hang on a chosen call."""

    def __init__(self, examples: Sequence[Example], fail_on_call: int = 0, sleep_on_call: int = 0) -> None:
        self.task = _task()
        self.by_prompt = {self.task.prompt(ex): (i, ex) for i, ex in enumerate(examples)}
        self.fail_on_call, self.sleep_on_call = fail_on_call, sleep_on_call
        self.calls: list[tuple[list[str], SamplingParams]] = []
        self.tokens_generated = 0

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        self.calls.append((list(prompts), params))
        if len(self.calls) == self.fail_on_call:
            raise RuntimeError("simulated crash")
        if len(self.calls) == self.sleep_on_call:
            time.sleep(300)  # the parent test SIGKILLs us here
        make = self._solution if params.n == N_SAMPLES else self._completion
        outputs = [[make(prompt, j) for j in range(params.n)] for prompt in prompts]
        self.tokens_generated += sum(len(text) for texts in outputs for text in texts)
        return outputs

    def _solution(self, prompt: str, j: int) -> str:
        index, example = self.by_prompt[prompt]
        kind = PATTERNS[index][j]
        if kind == "D":
            return self._solution(prompt, 0)
        if kind in "EB":
            return "" if kind == "E" else "  \n"
        body = self.task.reference_solution(example) if kind == "C" else inject_mistake(example, 0, random.Random(j))
        return f"Try {j}.\n{body}"

    def _completion(self, state: str, i: int) -> str:
        prompt = next(p for p in self.by_prompt if state.startswith(p))
        answer = int(self.by_prompt[prompt][1]["answer"])
        steps = split_steps(state[len(prompt) :])
        lines = [m for step in steps if (m := STEP_RE.match(step))]
        all_right = all(apply_op(int(a), op, int(b)) == int(c) for a, op, b, c in (m.groups() for m in lines))
        k = len(steps) if all_right else 1
        return f"Answer: {answer if i < k else answer + 1}"


def _examples() -> list[Example]:
    return list(_task().load("train"))[:6]


def _config(problems: Path | str, out: Path | str, **kwargs: object) -> RolloutConfig:
    base: dict = dict(n_samples=N_SAMPLES, n_keep=N_KEEP, n_rollouts=N_ROLLOUTS, problems_per_shard=2, limit=5)
    base |= dict(temperature=0.7, top_p=0.9, max_new_tokens=64, seed=3)
    return RolloutConfig(problems_path=str(problems), out_dir=str(out), **(base | kwargs))


@pytest.fixture(scope="module")
def problems(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("problems") / "problems"
    return write_records(problem_rows(_task(), _examples()), path, "problems", Provenance(producer="test"))


@pytest.fixture(scope="module")
def reference(problems: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ScriptedGenerator, object]:
    """One uninterrupted run: its output folder, generator and summary."""
    out = tmp_path_factory.mktemp("reference") / "out"
    generator = ScriptedGenerator(_examples())
    summary = run_rollouts(_config(problems, out), generator, _task(), "/models/p", "abc123")
    return out, generator, summary


def _rows(out: Path, kind: str) -> list[dict]:
    return read_records(out / kind, kind).to_list()


# -- pure helpers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rewards", "n_keep", "n_correct", "n_wrong"),
    [
        ([1, 0, 1, 0, 1, 0, 1, 0], 6, 3, 3),  # plenty of both: 3 + 3
        ([1, 0, 0, 0, 0, 0, 0], 6, 1, 5),  # one correct: fill with wrong
        ([1, 1, 1, 1, 1, 0], 4, 3, 1),  # one wrong: fill with correct
        ([1, 1, 0], 6, 2, 1),  # fewer than n_keep: keep all
        ([1, 1, 1, 0, 0, 0], 5, 2, 3),  # odd n_keep: the extra one is wrong
        ([0.5, 0.7, 0.2, 1.0], 2, 1, 1),  # 0.5 is not correct (> 0.5 is)
        ([0, 0, 0], 2, 0, 2),
        ([], 6, 0, 0),
    ],
)
def test_keep_balanced(rewards: list[float], n_keep: int, n_correct: int, n_wrong: int) -> None:
    kept = keep_balanced(rewards, n_keep, random.Random(0))
    assert kept == sorted(set(kept))
    assert sum(rewards[i] > 0.5 for i in kept) == n_correct
    assert sum(rewards[i] <= 0.5 for i in kept) == n_wrong


def test_keep_balanced_deterministic_given_rng() -> None:
    rewards = [i % 3 == 0 for i in range(32)]
    picks = {tuple(keep_balanced(rewards, 6, random.Random(seed))) for seed in range(5)}
    assert len(picks) > 1  # the rng decides which ones...
    assert keep_balanced(rewards, 6, random.Random(1)) == keep_balanced(rewards, 6, random.Random(1))  # ...alone


def test_mc_value() -> None:
    assert mc_value([1.0, 1.0, 1.0, 0.0]) == 0.75  # exact, not rounded
    assert mc_value([1.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least one"):
        mc_value([])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_samples": 0}, "n_samples must be >= 1"),
        ({"n_keep": 9}, r"n_keep \(9\) must be <= n_samples \(8\)"),
        ({"n_rollouts": 0}, "n_rollouts must be >= 1"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"delimiter": ""}, "delimiter"),
        ({"problems_per_shard": 0}, "problems_per_shard"),
        ({"limit": 0}, "limit"),
    ],
)
def test_config_checks(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config("p", "o", **kwargs)


def test_policy_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        policy_fingerprint(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * (3 << 20))  # several 1 MiB chunks
    first = policy_fingerprint(str(tmp_path))
    assert re.fullmatch(r"[0-9a-f]{16}", first) and policy_fingerprint(str(tmp_path)) == first
    (tmp_path / "model.safetensors").write_bytes(b"\0" * (3 << 20) + b"\1")
    assert policy_fingerprint(str(tmp_path)) != first
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        policy_fingerprint(str(tmp_path / "missing"))


# -- a full run ---------------------------------------------------------------------------------------------------


def test_summary_and_counts(reference) -> None:
    out, generator, summary = reference
    assert (summary.problems, summary.solutions, summary.states) == (5, 21, 105)
    assert (summary.shards_written, summary.shards_skipped) == (3, 0)
    assert (summary.empty_dropped, summary.duplicates_dropped) == (12, 3)
    assert summary.tokens_generated == generator.tokens_generated > 0
    assert json.loads((out / "summary.json").read_text()) == asdict(summary)
    assert sorted(p.name for p in (out / "states").iterdir()) == ["shard-00000", "shard-00001", "shard-00002"]


def test_balanced_keep_per_problem(reference) -> None:
    solutions = _rows(reference[0], "solutions")
    kept = Counter((row["problem_id"], row["reward"]) for row in solutions)
    ids = [ex["id"] for ex in _examples()]
    assert [(kept[(i, 1.0)], kept[(i, 0.0)]) for i in ids[:5]] == [(3, 3), (1, 5), (5, 1), (2, 1), (0, 0)]
    p3 = [row for row in solutions if row["problem_id"] == ids[3]]  # all 3 unique responses, in sample order
    assert [(row["solution_id"], row["steps"][0], row["reward"]) for row in p3] == [
        (f"{ids[3]}/s0", "Try 0.\n", 1.0),
        (f"{ids[3]}/s1", "Try 1.\n", 1.0),
        (f"{ids[3]}/s2", "Try 2.\n", 0.0),
    ]
    assert all(len(row["steps"]) == 4 for row in solutions)


def test_states_hold_exact_mc_fractions(reference) -> None:
    states = _rows(reference[0], "states")
    rewards = {row["solution_id"]: row["reward"] for row in _rows(reference[0], "solutions")}
    assert len({row["state_id"] for row in states}) == len(states) == 105
    for solution_id, reward in rewards.items():
        mine = [row for row in states if row["solution_id"] == solution_id]
        assert [row["state_id"] for row in mine] == [f"{solution_id}/t{t}" for t in range(5)]
        assert [row["t"] for row in mine] == list(range(5))
        assert [row["mc_value"] for row in mine] == (CORRECT_MC if reward == 1.0 else WRONG_MC)
        assert [row["n_rollouts"] for row in mine] == [4, 4, 4, 4, 0]
        for row in mine[:4]:
            assert len(row["completions"]) == 4 and row["completions"][0].startswith("Answer: ")
            assert sum(row["completion_rewards"]) / 4 == row["mc_value"]
        assert (mine[4]["completions"], mine[4]["completion_rewards"]) == ([], [])


def test_generate_calls_and_params(reference) -> None:
    _, generator, _ = reference
    assert [(len(prompts), params.n) for prompts, params in generator.calls] == [
        (2, 8),
        (48, 4),
        (2, 8),
        (36, 4),
        (1, 8),
    ]
    prompts, _ = generator.calls[1]  # one rollout call per shard, every state of every kept solution
    first_prompt = _task().prompt(_examples()[0])
    assert prompts[0] == first_prompt and prompts[1].startswith(first_prompt + "Try ")
    params = [p for _, p in generator.calls]
    assert {(p.temperature, p.top_p, p.max_new_tokens) for p in params} == {(0.7, 0.9, 64)}
    assert len({p.seed for p in params}) == 5  # per shard and phase


def test_provenance(problems: Path, reference) -> None:
    out = reference[0]
    for kind in ("solutions", "states"):
        prov = read_provenance(out / kind / "shard-00001")
        assert (prov.producer, prov.kind, prov.seed) == ("dapo rollout", kind, 3)
        assert (prov.policy_path, prov.policy_hash) == ("/models/p", "abc123")
        assert prov.config == asdict(_config(problems, out))


# -- resume -------------------------------------------------------------------------------------------------------


def _assert_same_as_reference(out: Path, reference_out: Path) -> None:
    for kind in ("solutions", "states"):
        rows, expected = _rows(out, kind), _rows(reference_out, kind)
        assert len({row[f"{kind[:-1]}_id"] for row in rows}) == len(rows)
        assert rows == expected  # nothing lost, nothing duplicated, same samples as an uninterrupted run


def test_resume_after_crash(problems: Path, reference, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):  # dies in shard 1's rollouts
        run_rollouts(_config(problems, out), ScriptedGenerator(_examples(), fail_on_call=4), _task())
    assert not (out / "solutions" / "shard-00001").exists() and not (out / "states" / "shard-00001").exists()
    # a kill between shard 1's two writes would leave its solutions without states: they must be replaced
    shutil.copytree(out / "solutions" / "shard-00000", out / "solutions" / "shard-00001")
    created = read_provenance(out / "states" / "shard-00000").created

    generator = ScriptedGenerator(_examples())
    summary = run_rollouts(_config(problems, out), generator, _task())
    assert (summary.shards_written, summary.shards_skipped, summary.states) == (2, 1, 105)
    assert [len(prompts) for prompts, _ in generator.calls] == [2, 36, 1]  # shard 0 was not regenerated
    assert read_provenance(out / "states" / "shard-00000").created == created
    _assert_same_as_reference(out, reference[0])

    again = ScriptedGenerator(_examples())
    assert run_rollouts(_config(problems, out), again, _task()).shards_skipped == 3 and again.calls == []


def _child_main(problems: str, out: str) -> None:
    """Entry point of the subprocess in `test_resume_after_sigkill`: hangs in its 3rd generate call."""
    run_rollouts(_config(problems, out), ScriptedGenerator(_examples(), sleep_on_call=3), _task())


def test_resume_after_sigkill(problems: Path, reference, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_rollout as t; "
    code += f"t._child_main({str(problems)!r}, {str(out)!r})"
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (out / "states" / "shard-00000").is_dir():
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else "child died"
            assert time.monotonic() < deadline, "the child never finished its first shard"
            time.sleep(0.05)
    finally:
        child.kill()  # SIGKILL
        child.wait()
    assert not (out / "states" / "shard-00001").exists()
    junk = out / "states" / ".shard-00001.tmp-deadbeef"  # what a kill during a write leaves behind
    junk.mkdir()
    (junk / "garbage.arrow").write_bytes(b"not arrow")

    summary = run_rollouts(_config(problems, out), ScriptedGenerator(_examples()), _task())
    assert (summary.shards_written, summary.shards_skipped) == (2, 1)
    assert not junk.exists()
    _assert_same_as_reference(out, reference[0])


def test_resume_refuses_another_config_or_policy(problems: Path, reference, tmp_path: Path) -> None:
    out = reference[0]
    with pytest.raises(ValueError, match=r"different config \(n_rollouts\)"):
        run_rollouts(_config(problems, out, n_rollouts=8), ScriptedGenerator(_examples()), _task())
    with pytest.raises(ValueError, match="made by policy abc123, not the current ffff"):
        run_rollouts(_config(problems, out), ScriptedGenerator(_examples()), _task(), policy_hash="ffff")


# -- bad inputs ---------------------------------------------------------------------------------------------------


def test_bad_problem_sets(problems: Path, tmp_path: Path) -> None:
    generator = ScriptedGenerator(_examples())
    with pytest.raises(FileNotFoundError, match=r"no problems records at .*nowhere"):
        run_rollouts(_config(tmp_path / "nowhere", tmp_path / "o"), generator, _task())

    other = [row | {"task": "gsm8k"} for row in problem_rows(_task(), _examples())]
    write_records(other, tmp_path / "other", "problems", Provenance(producer="test"))
    with pytest.raises(ValueError, match=r"problems of task\(s\) \['gsm8k'\], but the rollout task is 'arith'"):
        run_rollouts(_config(tmp_path / "other", tmp_path / "o"), generator, _task())

    rows = problem_rows(_task(), _examples())
    write_records(rows + rows[:1], tmp_path / "dup", "problems", Provenance(producer="test"))
    with pytest.raises(RecordError, match="duplicate id 'arith-train-00000' at rows 0 and 6"):
        run_rollouts(_config(tmp_path / "dup", tmp_path / "o", limit=None), generator, _task())

    empty, schema = tmp_path / "empty", schema_of("problems")
    Dataset.from_dict({name: [] for name in schema}, features=schema).save_to_disk(str(empty), num_shards=1)
    with pytest.raises(ValueError, match="problems dataset is empty"):
        run_rollouts(_config(empty, tmp_path / "o"), generator, _task())
    assert generator.calls == []


def test_generator_output_shape_checked(problems: Path, tmp_path: Path) -> None:
    class Short(ScriptedGenerator):
        def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
            return super().generate(prompts, params)[:-1]

    with pytest.raises(RuntimeError, match=r"returned \[8\] continuations for 2 prompts; expected 8 each"):
        run_rollouts(_config(problems, tmp_path / "o"), Short(_examples()), _task())


class GSM8KAnswers:
    """Samples and rollouts for GSM8K prompts: even-numbered ones give the right final answer (as "The answer is
    N", or boxed), odd-numbered ones the answer plus one."""

    tokens_generated = 0

    def __init__(self, task: GSM8KTask, examples: Sequence[Example]) -> None:
        self.answers = {task.prompt(ex): int(task.final_answer(ex)) for ex in examples}

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        outputs = []
        for text in prompts:
            answer = next(a for p, a in self.answers.items() if text.startswith(p))
            finals = [answer + j % 2 for j in range(params.n)]
            if params.n == N_SAMPLES:  # solutions: two steps, then the answer
                outputs.append([f"First step.\nSecond step, try {j}.\n\\boxed{{{a}}}" for j, a in enumerate(finals)])
            else:
                outputs.append([f"The answer is {a:,}." for a in finals])
        return outputs


def test_stage_a_on_gsm8k_rewards_with_the_math_grader(tmp_path: Path) -> None:
    task = GSM8KTask(data=str(Path(__file__).parent / "fixtures" / "tasks" / "gsm8k.jsonl"))
    examples = list(task.load("train"))[:3]
    problems = write_records(problem_rows(task, examples), tmp_path / "p", "problems", Provenance(producer="test"))
    config = _config(problems, tmp_path / "out", n_keep=4, limit=None)
    run_rollouts(config, GSM8KAnswers(task, examples), task)

    solutions = _rows(tmp_path / "out", "solutions")
    assert Counter(row["reward"] for row in solutions) == {1.0: 6, 0.0: 6}  # 2 right + 2 wrong kept per problem
    for row in _rows(tmp_path / "out", "states"):
        if row["n_rollouts"]:
            assert row["completion_rewards"] == [1.0, 0.0, 1.0, 0.0] and row["mc_value"] == 0.5

"""`dapo evaluate --backend vllm` on the fake vLLM engine of tests/test_vllm_generation.py (Stage A's tests).

The engine plays back a script per arith prompt: problems 0 and 1 have a right and a wrong solution, problem 2 only
a wrong one. Each script token is one whole line, so a beam search's next prompt (prompt + the steps kept so far)
is always a prefix the fake can continue. The tests check that the summary and examples.jsonl hold what the fake
engine returned, and that the engine got evaluate's sampling settings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import test_vllm_generation as fake
from test_vllm_generation import EOS, FakeTokenizer

from dapo.cli import cli_main
from dapo.generation.vllm_generator import request_seed
from dapo.pipeline import evaluate as evaluate_module
from dapo.tasks import ArithTask

fake_vllm = fake.fake_vllm  # the fixture that puts the fake `vllm` module in sys.modules

EXAMPLES = ArithTask().load("test")[:3]
RIGHT = [ArithTask().reference_solution(ex) for ex in EXAMPLES]
WRONG = ["1 + 1 = 3\nAnswer: 99", "2 + 2 = 5\nAnswer: 98", "3 + 3 = 7\nAnswer: 97"]


def _tokens(solution: str) -> list[str]:
    """One token per line (newline included), then eos."""
    return [*solution.splitlines(keepends=True), EOS]


@pytest.fixture
def script(monkeypatch, fake_vllm) -> dict[str, list[list[str]]]:
    """Sample 0 right and sample 1 wrong for problems 0 and 1; problem 2 has only its wrong sample."""
    samples = [[_tokens(RIGHT[0]), _tokens(WRONG[0])], [_tokens(RIGHT[1]), _tokens(WRONG[1])], [_tokens(WRONG[2])]]
    played = {ArithTask().prompt(ex): plays for ex, plays in zip(EXAMPLES, samples, strict=True)}
    monkeypatch.setattr(fake, "SCRIPT", played)
    monkeypatch.setattr(FakeTokenizer, "chat_template", None, raising=False)  # like a tokenizer without a template
    return played


@pytest.fixture
def engines(monkeypatch) -> list[fake.FakeLLM]:
    """Every fake engine evaluate builds, to read its options and calls afterwards."""
    built: list[fake.FakeLLM] = []

    class RecordedLLM(fake.FakeLLM):
        def __init__(self, **options) -> None:
            super().__init__(**options)
            built.append(self)

    monkeypatch.setattr(sys.modules["vllm"], "LLM", RecordedLLM)
    return built


@pytest.fixture
def policy(tmp_path) -> str:
    """A folder that passes evaluate's model-folder check; the fake engine never reads it."""
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


def _run(policy: str, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    cli_main(["evaluate", "--model", policy, "--task", "arith", "--limit", "3", "--max_new_tokens", "40",
              "--backend", "vllm", "--out", str(out), *extra])  # fmt: skip
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    return json.loads((out / "summary.json").read_text()), rows


def test_sampled_evaluation_reports_the_engines_outputs(script, engines, policy, tmp_path):
    summary, rows = _run(policy, tmp_path / "eval", "--n", "2", "--temperature", "0.7", "--seed", "5",
                         "--gpu_memory_utilization", "0.4")  # fmt: skip
    # vLLM seeds sample k with seed + k: the fake plays both samples of problems 0 and 1, and problem 2's one twice
    assert [sorted(r["responses"]) for r in rows] == [sorted([RIGHT[0], WRONG[0]]), sorted([RIGHT[1], WRONG[1]]),
                                                     [WRONG[2]] * 2]  # fmt: skip
    assert [sorted(r["scores"]) for r in rows] == [[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    assert summary["accuracy"] == pytest.approx(1 / 3) and summary["pass_at_k"]["2"] == pytest.approx(2 / 3)
    assert summary["backend"] == "vllm" and summary["chat"] is False
    (engine,) = engines
    assert engine.options["gpu_memory_utilization"] == 0.4 and engine.options["seed"] == 5
    (prompts, sampling, _), *more = engine.calls
    assert prompts == list(script) and not more  # one call: 3 problems x 2 samples fit in --batch_size 64
    assert [(sp.n, sp.temperature, sp.max_tokens, sp.seed) for sp in sampling] == [
        (2, 0.7, 40, request_seed(5, i)) for i in range(3)
    ]
    expected_tokens = sum(len(_tokens(s)) for s in (RIGHT[0], WRONG[0], RIGHT[1], WRONG[1], WRONG[2], WRONG[2]))
    assert summary["tokens_generated"] == expected_tokens


def test_greedy_evaluation_asks_for_one_sample_per_problem(script, engines, policy, tmp_path):
    summary, rows = _run(policy, tmp_path / "eval")
    assert [r["responses"] for r in rows] == [[RIGHT[0]], [RIGHT[1]], [WRONG[2]]]
    assert summary["accuracy"] == pytest.approx(2 / 3) and summary["pass_at_k"] == {"1": summary["accuracy"]}
    sampling = engines[0].calls[0][1]
    assert [(sp.n, sp.temperature, sp.max_tokens, sp.stop) for sp in sampling] == [(1, 0.0, 40, [])] * 3


def test_beam_search_runs_one_step_requests_on_the_engine(script, engines, policy, tmp_path, monkeypatch):
    """A scripted critic: a prefix of the right solution is worth 1, anything else 0; the beam keeps the right one."""

    def values(trajectories):
        return [[float(RIGHT[examples_by_prompt[p]].startswith("".join(steps)))] * (len(steps) + 1)
                for p, steps in trajectories]  # fmt: skip

    examples_by_prompt = {ArithTask().prompt(ex): i for i, ex in enumerate(EXAMPLES)}
    scorer = type("Scorer", (), {"values": staticmethod(values)})
    monkeypatch.setattr(evaluate_module.StepScorer, "from_pretrained", staticmethod(lambda path: scorer))
    summary, rows = _run(policy, tmp_path / "beam", "--critic", "critic-dir", "--select", "beam",
                         "--temperature", "1.0", "--beams", "1", "--expand", "2", "--max_steps", "8")  # fmt: skip
    assert [r["responses"] for r in rows] == [[RIGHT[0]], [RIGHT[1]], [WRONG[2]]]
    assert summary["accuracy"] == pytest.approx(2 / 3) and summary["select"] == "beam"
    calls = engines[0].calls
    assert len(calls) > 1 and all(sp.stop == ["\n"] and sp.include_stop_str_in_output for _, s, _ in calls for sp in s)
    assert all(sp.n == 2 and sp.temperature == 1.0 for sp in calls[0][1])
    assert summary["tokens_generated"] > 0


def test_a_missing_vllm_is_one_line_naming_the_extra(monkeypatch, policy, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails whether or not vLLM is installed
    with pytest.raises(SystemExit) as stop:
        _run(policy, tmp_path / "eval")
    assert stop.value.code == 2 and 'pip install "dapo[vllm]"' in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()

"""pass@k by hand, `dapo evaluate`'s outputs, and the BenchmarkEval callback inside a real actor fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from builders import candidate_state_rows
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoTokenizer

from dapo.callbacks import BenchmarkEval
from dapo.callbacks.benchmark_eval import _gather
from dapo.cli import cli_main
from dapo.core.distributed import interleave
from dapo.core.stats import pass_at_k
from dapo.data_modules import StepDataModule
from dapo.generation.protocol import SamplingParams
from dapo.records import Provenance, write_records
from dapo.stages.candidate_advantages import AdvantageConfig, run_advantages
from dapo.stages.evaluation import EvalResult, evaluate_examples
from dapo.tasks import ArithTask, task_named
from dapo.training.actor import ActorModule


def test_pass_at_k_by_hand():
    """n=5 samples, c=2 correct: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10; pass@4 = 1 (only 3 wrong)."""
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 4) == 1.0
    assert pass_at_k(4, 0, 3) == 0.0
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)  # the product form stays exact for large n
    for bad in ((3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_eval_result_with_several_samples():
    """Problem 1: 2 of 4 right (pass@2 = 1 - C(2,2)/C(4,2) = 5/6); problem 2: none (0)."""
    result = EvalResult("t", "test", [[1.0, 0.0, 0.0, 1.0], [0.0] * 4], seconds=0.0)
    assert result.accuracy == pytest.approx(0.25)
    assert result.pass_at(2) == pytest.approx(5 / 12)
    low, high = result.ci95()  # normal interval over the per-problem scores 0.5 and 0
    assert low < 0.25 < high


def _gather_on_rank(rank: int, store: str, out: str) -> None:
    """One of two gloo processes: hold problems rank, rank + 2, ... of 5 and gather them all."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    ids = [f"p{i}" for i in range(5)][rank::2]
    scores = [[float(int(i[1:]) % 2)] for i in ids]
    merged = _gather(EvalResult("t", "test", scores, 0.0, ids, [[f"r{i}"] for i in ids]), world_size=2)
    Path(out, f"rank{rank}.json").write_text(json.dumps([merged.ids, merged.sample_scores, merged.responses]))
    torch.distributed.destroy_process_group()


def test_scores_are_gathered_across_two_processes(tmp_path):
    torch.multiprocessing.spawn(_gather_on_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    expected = [[f"p{i}" for i in range(5)], [[float(i % 2)] for i in range(5)], [[f"rp{i}"] for i in range(5)]]
    for rank in range(2):  # every rank logs the same, complete figures
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected


def test_interleave_undoes_rank_sharding():
    items = list(range(7))
    assert interleave([items[r::3] for r in range(3)]) == items
    assert interleave([[], []]) == []


def _evaluate(policy: str, out: Path, *extra: str) -> dict:
    cli_main(["evaluate", "--model", policy, "--task", "arith", "--limit", "12", "--max_new_tokens", "40",
              "--out", str(out), *extra])  # fmt: skip
    return json.loads((out / "summary.json").read_text())


def test_evaluate_writes_a_summary_and_one_row_per_problem(policy_dir, tmp_path):
    summary = _evaluate(policy_dir, tmp_path / "greedy")
    rows = [json.loads(line) for line in (tmp_path / "greedy" / "examples.jsonl").read_text().splitlines()]
    task, examples = ArithTask(), ArithTask().load("test")[:12]
    assert [r["id"] for r in rows] == [ex["id"] for ex in examples]
    assert all(r["prompt"] == task.prompt(ex) for r, ex in zip(rows, examples, strict=True))
    rescored = [task.score(ex, r["responses"][0]) for r, ex in zip(rows, examples, strict=True)]
    assert [r["scores"] for r in rows] == [[s] for s in rescored]
    assert summary["problems"] == 12 and summary["accuracy"] == pytest.approx(sum(rescored) / 12)
    assert summary["ci95"][0] <= summary["accuracy"] <= summary["ci95"][1]
    assert summary["pass_at_k"] == {"1": summary["accuracy"]} and summary["chat"] is False
    assert _evaluate(policy_dir, tmp_path / "again")["accuracy"] == summary["accuracy"]  # greedy: reproducible


def test_evaluate_with_samples_reports_pass_at_k(policy_dir, tmp_path):
    summary = _evaluate(policy_dir, tmp_path / "sampled", "--n", "4", "--temperature", "1.0", "--k", "[1, 2]")
    rows = [json.loads(line) for line in (tmp_path / "sampled" / "examples.jsonl").read_text().splitlines()]
    assert all(len(r["responses"]) == 4 == len(r["scores"]) for r in rows)
    assert set(summary["pass_at_k"]) == {"1", "2"}
    assert summary["pass_at_k"]["1"] <= summary["pass_at_k"]["2"]
    assert summary["pass_at_k"]["1"] == pytest.approx(sum(sum(r["scores"]) / 4 for r in rows) / 12)


def test_evaluate_refuses_bad_settings(policy_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="temperature"):
        _evaluate(policy_dir, tmp_path / "x", "--n", "4")
    with pytest.raises(ValueError, match="pass@k"):
        _evaluate(policy_dir, tmp_path / "x", "--n", "2", "--temperature", "1", "--k", "[1, 4]")
    with pytest.raises(SystemExit) as stop:  # the CLI prints a missing model folder as one line
        _evaluate(str(tmp_path / "missing"), tmp_path / "y")
    assert stop.value.code == 2 and "missing does not exist; make it first" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown task"):
        cli_main(["evaluate", "--model", policy_dir, "--task", "nope"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_benchmark_eval_logs_every_second_validation(tmp_path, arith, policy_dir, critic_dir):
    states = write_records(candidate_state_rows(arith, 4), tmp_path / "states", "states", Provenance(producer="t"))
    config = AdvantageConfig(str(states), critic_dir, policy_dir, out_dir=str(tmp_path), min_gap=0.0)
    run_advantages(config)
    data = StepDataModule(mode="actor", train_path=str(tmp_path / "actions"), val_path=str(tmp_path / "actions"),
                          tokenizer=policy_dir, max_tokens=512)  # fmt: skip
    actor = ActorModule(policy_dir, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))
    callback = BenchmarkEval(arith, limit=6, every_n_validations=2, max_new_tokens=40, samples_to_log=2)
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = L.Trainer(accelerator="cpu", max_epochs=4, logger=logger, callbacks=[callback], enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=1)  # fmt: skip
    trainer.fit(actor, datamodule=data)

    assert callback.validations == 4  # the sanity check does not count
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"tensors": 0}).Reload()
    accuracy = events.Scalars("benchmark/arith/accuracy")
    assert len(accuracy) == 2 and all(0.0 <= e.value <= 1.0 for e in accuracy)
    assert "benchmark/arith/accuracy" in trainer.callback_metrics  # a ModelCheckpoint can monitor it
    samples = [tag for tag in events.Tags()["tensors"] if tag.startswith("benchmark/arith/sample_")]
    assert len(samples) == 2
    assert actor.model.training  # generation put the model back in training mode


def test_evaluate_uses_the_chat_template_when_the_tokenizer_has_one(policy_dir, tmp_path):
    chat_policy = tmp_path / "chat_policy"
    shutil.copytree(policy_dir, chat_policy)
    tokenizer = AutoTokenizer.from_pretrained(chat_policy)
    tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"
    tokenizer.save_pretrained(chat_policy)

    summary = _evaluate(str(chat_policy), tmp_path / "chat")
    first = json.loads((tmp_path / "chat" / "examples.jsonl").read_text().splitlines()[0])
    question = ArithTask().load("test")[0]["question"]
    assert summary["chat"] is True and first["prompt"].startswith(f"<user>{question}\n")
    assert first["prompt"].endswith("<assistant>")
    assert _evaluate(str(chat_policy), tmp_path / "plain", "--chat", "false")["chat"] is False


@pytest.mark.parametrize(
    ("task", "data"),
    [
        ("humaneval", None),
        ("mbpp", "mbpp_sanitized.jsonl"),
        ("gsm8k", "gsm8k.jsonl"),
        ("math", "math500.jsonl"),
        ("amc", "amc.jsonl"),
        ("aime", "aime.jsonl"),
    ],
)
def test_evaluate_runs_on_every_benchmark_task(task, data, policy_dir, tmp_path):
    """The arith policy cannot solve these; what is checked is that every task's loading, prompting, generation
    and (sandboxed or math-verified) scoring runs through `dapo evaluate` and is summarised consistently."""
    args = ["--task", task, "--limit", "3", "--max_new_tokens", "8", "--out", str(tmp_path / task)]
    if data:
        args += ["--data", str(Path(__file__).parent / "fixtures" / "tasks" / data)]
    cli_main(["evaluate", "--model", policy_dir, *args])
    summary = json.loads((tmp_path / task / "summary.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / task / "examples.jsonl").read_text().splitlines()]
    assert summary["problems"] == len(rows) == 3 and summary["task"] == task
    assert summary["accuracy"] == pytest.approx(sum(r["scores"][0] for r in rows) / 3)


class ReferenceSolutions:
    """A generator that answers every prompt with the task's reference solution (greedy, one response)."""

    tokens_generated = 0

    def __init__(self, task, examples) -> None:
        self.solutions = {task.prompt(ex): task.reference_solution(ex) for ex in examples}

    def generate(self, prompts, params):
        return [[self.solutions[p]] * params.n for p in prompts]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("humaneval", None),
        ("mbpp", "mbpp.jsonl"),
        ("gsm8k", "gsm8k.jsonl"),
        ("math", "math.jsonl"),
        ("arith", None),
        ("aime", "aime.jsonl"),
    ],
)
def test_reference_solutions_score_full_marks_through_evaluation(name, data):
    task = task_named(name, data and str(Path(__file__).parent / "fixtures" / "tasks" / data))
    examples = list(task.load("test"))[:20]
    result = evaluate_examples(ReferenceSolutions(task, examples), task, examples, SamplingParams(temperature=0.0))
    assert result.n == len(examples) and result.accuracy == 1.0

"""`dapo demo`: one command that shows DAPO improving a policy on CPU, beside a response-level baseline.

On the bundled `arith` task, with nothing downloaded:
  1. start policy: a tiny Llama fine-tuned on worked solutions that forget carries and borrows most of the time
     (`slip_carries`), so it solves the problems without carries and fails the others at an identifiable step;
  2. DAPO: `dapo iterate` with configs/demo/iterate.yaml (Stage A, critic, advantages, actor per round);
  3. baseline: rejection-sampling fine-tuning on round 1's correct samples for the tokens the actor trained on;
  4. evaluation: every policy on the held-out test problems, greedy, with 95% intervals and paired differences.

Everything lands in `out`: policy/, iterate/ (every round's artifacts and TensorBoard logs), baseline/, tb/ (the
fine-tuning loss curves and the accuracies), timings.json and report.json. A rerun skips finished stages.

    dapo demo --out runs/demo            (or: make demo)
    tensorboard --logdir runs/demo
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from dapo.core.stats import paired_difference_ci95
from dapo.data_modules import StepDataModule
from dapo.generation.hf_generator import HFGenerator
from dapo.pipeline.baseline import actor_train_tokens, correct_solutions, rejection_finetune
from dapo.pipeline.configs import fit_overlay, load_config
from dapo.pipeline.iterate import actor_fit, iterate
from dapo.pipeline.tiny_model import tiny_model_for_task
from dapo.records import staged_dir, write_json
from dapo.stages.evaluation import EvalResult, evaluate_policy
from dapo.tasks.arith import ArithTask, slip_carries
from dapo.training.sft import supervised_finetune

log = logging.getLogger(__name__)

FIT_SECTIONS = ("trainer", "data", "stage_a", "advantages")


@dataclass
class StartPolicy:
    """The starting policy: a tiny Llama fine-tuned on solutions with the carry-slip habit."""

    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    sft_steps: int = 900
    """Fine-tuning steps (about 0.17 s each on 2 CPU cores at the default size)."""
    batch_size: int = 64
    lr: float = 2e-3
    slip_rate: float = 0.6
    """Share of carries and borrows forgotten in the fine-tuning solutions; above 0.5 greedy decoding slips."""


@dataclass
class Evaluation:
    """Held-out evaluation, greedy."""

    limit: int = 500
    """Test problems (the first `limit` of the task's test split)."""
    max_new_tokens: int = 64


@dataclass
class Baseline:
    """Rejection-sampling fine-tuning on Stage A's correct samples, for the tokens the DAPO actor trained on."""

    lr: float = 3e-4
    batch_size: int = 32


@dataclass
class DemoStages:
    """Seconds per stage, kept in `out/timings.json` so a resumed run still reports what each stage took."""

    path: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> DemoStages:
        return cls(path, json.loads(path.read_text()) if path.exists() else {})

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[stage] = time.perf_counter() - start
        write_json(self.path, self.seconds)


def demo(
    out: str = "runs/demo",
    seed: int = 0,
    task: ArithTask | None = None,
    start: StartPolicy | None = None,
    iterate_config: str = "configs/demo/iterate.yaml",
    fit_overlays: list[str] | None = None,
    evaluation: Evaluation | None = None,
    baseline: Baseline | None = None,
) -> dict[str, Any]:
    """Run the embedded demo: start policy, DAPO, RFT baseline, evaluation; print a table, write report.json.

    Args:
        out: folder for every artifact (a rerun resumes at the first unfinished stage).
        seed: seeds the start policy, Stage A sampling, both fits and the baseline.
        task: the arith task (its test split is the held-out set).
        start: how the starting policy is built.
        iterate_config: `dapo iterate` config (its policy_path and out_dir are replaced by ones under `out`).
        fit_overlays: fit-config overlays (e.g. configs/debug.yaml): their trainer, data, stage_a and advantages
            sections are merged into both fits of every round.
        evaluation: held-out evaluation settings.
        baseline: RFT baseline settings.
    """
    began = time.perf_counter()
    task, start = task or ArithTask(), start or StartPolicy()
    evaluation, baseline = evaluation or Evaluation(), baseline or Baseline()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = _iterate_plan(iterate_config, fit_overlays or [], seed)  # first: a bad path fails before any training
    _check_settings(out_dir, {"seed": seed, "task": asdict(task), "start": asdict(start), "baseline": asdict(baseline)})
    stages = DemoStages.load(out_dir / "timings.json")
    policy = out_dir / "policy"
    if not policy.exists():
        with stages.timed("start_policy"):
            train_start_policy(task, start, policy, seed, out_dir / "tb" / "start_policy")
    iterate(policy_path=str(policy), out_dir=str(out_dir / "iterate"), **plan)
    rounds = [out_dir / "iterate" / f"iter-{i:02d}" for i in range(1, plan["iterations"] + 1)]  # set by _iterate_plan
    baseline_dir = out_dir / "baseline"
    if not (baseline_dir / "summary.json").exists():
        with stages.timed("baseline"):
            train_baseline(baseline, rounds, plan, policy, baseline_dir, seed)
    with stages.timed("evaluation"):
        paths = {"start": policy, "baseline": baseline_dir / "hf", **_round_actors(rounds)}
        results = {name: _evaluate(path, task, evaluation) for name, path in paths.items()}
    report = build_report(task, seed, results, paths, rounds, baseline_dir, stages.seconds)
    report["wall_seconds"] = time.perf_counter() - began
    write_json(out_dir / "report.json", report)
    _log_accuracies(out_dir / "tb", report)
    print(format_table(report))
    return report


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Record what the demo in `out_dir` trains with, or refuse to resume one that trained with other settings
    (its finished start policy and baseline would be silently reused)."""
    record = out_dir / "demo.json"
    if not record.exists():
        write_json(record, settings)
        return
    before, now = json.loads(record.read_text()), json.loads(json.dumps(settings))  # as JSON stores it
    if before != now:
        changed = sorted(key for key in now if before.get(key) != now[key])
        raise ValueError(
            f"{out_dir} holds a demo run with other settings ({', '.join(changed)} differ, see {record}); "
            "use another --out or remove that folder"
        )


def train_start_policy(task: ArithTask, settings: StartPolicy, out: Path, seed: int, tb_dir: Path) -> Path:
    """A tiny Llama (BPE tokenizer from the task's texts) fine-tuned on carry-slipping solutions, written to `out`."""
    examples = task.load("train")
    base = out.parent / f".{out.name}.base"
    sizes = {
        "vocab_size": settings.vocab_size,
        "hidden_size": settings.hidden_size,
        "num_layers": settings.num_layers,
        "num_heads": settings.num_heads,
    }
    tiny_model_for_task(base, examples, task, **sizes, seed=seed, overwrite=True)
    rng = random.Random(f"slip-{seed}")
    pairs = [(task.prompt(ex), slip_carries(ex, settings.slip_rate, rng)) for ex in examples]
    with contextlib.closing(SummaryWriter(str(tb_dir))) as writer:
        supervised_finetune(
            base,
            out,
            pairs,
            steps=settings.sft_steps,
            batch_size=settings.batch_size,
            lr=settings.lr,
            seed=seed,
            on_step=lambda step, loss: writer.add_scalar("sft/loss", loss, step),
        )
    shutil.rmtree(base, ignore_errors=True)
    return out


def train_baseline(
    settings: Baseline, rounds: list[Path], plan: dict[str, Any], policy: Path, out: Path, seed: int
) -> None:
    """RFT on round 1's correct samples, for as many tokens as the actors of all rounds trained on."""
    budget = sum(_actor_tokens(plan, round_dir) for round_dir in rounds)
    pairs = correct_solutions(rounds[0] / "stage_a")
    if not pairs:  # nothing to imitate: the baseline is the start policy itself
        log.warning("RFT baseline: Stage A sampled no correct solution; the baseline is the unchanged start policy")
        with staged_dir(out / "hf") as tmp:  # a copy cut short must not pass for the baseline
            shutil.copytree(policy, tmp)
        write_json(
            out / "summary.json", {"solutions": 0, "problems": 0, "steps": 0, "tokens": 0, "actor_tokens": budget}
        )
        return
    with contextlib.closing(SummaryWriter(str(out.parent / "tb" / "baseline"))) as writer:
        summary = rejection_finetune(
            policy,
            out / "hf",
            pairs,
            budget,
            batch_size=settings.batch_size,
            lr=settings.lr,
            seed=seed,
            on_step=lambda step, loss: writer.add_scalar("sft/loss", loss, step),
        )
    write_json(out / "summary.json", {**summary.__dict__, "actor_tokens": budget})


def _iterate_plan(iterate_config: str, fit_overlays: list[str], seed: int) -> dict[str, Any]:
    """`iterate` keyword arguments from its YAML config plus the fit overlays (policy_path and out_dir left out)."""
    for path in [iterate_config, *fit_overlays]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found: run `dapo demo` from the repository root or pass its path")
    overlays = [load_config(path, []) for path in fit_overlays]
    config = load_config(iterate_config, [{key: o[key] for key in FIT_SECTIONS if key in o} for o in overlays])
    config.pop("policy_path", None)
    config.pop("out_dir", None)
    return {"iterations": 2, **config, "seed": seed}  # 2: iterate's default


def _actor_tokens(plan: dict[str, Any], round_dir: Path) -> int:
    """Training tokens of a round's actor fit, from its config and its Stage B actions."""
    sections = {key: plan.get(key) for key in FIT_SECTIONS}
    base = load_config(plan.get("actor_config", "configs/actor.yaml"), [fit_overlay(**sections)])
    policy = json.loads((round_dir / "iteration.json").read_text())["policy_path"]
    config = actor_fit(base, round_dir, policy, critic="")  # the round's actor fit, as iterate ran it
    module = StepDataModule(**{**config["data"], "mode": "actor", "tokenizer": policy})
    return actor_train_tokens(module, int(config.get("trainer", {}).get("max_epochs") or 1))


def _round_actors(rounds: list[Path]) -> dict[str, Path]:
    """The exported actor of every round, named "dapo" for the last and "dapo_round_N" for earlier ones."""
    named = {f"dapo_round_{i}": r / "actor" / "hf" for i, r in enumerate(rounds[:-1], start=1)}
    return {**named, "dapo": rounds[-1] / "actor" / "hf"}


def _evaluate(path: Path, task: ArithTask, settings: Evaluation) -> EvalResult:
    generator = HFGenerator.from_pretrained(str(path))
    return evaluate_policy(generator, task, "test", limit=settings.limit, max_new_tokens=settings.max_new_tokens)


def _difference(before: EvalResult, after: EvalResult) -> dict[str, Any]:
    return {
        "difference": after.accuracy - before.accuracy,
        "ci95": list(paired_difference_ci95(before.scores, after.scores)),
    }


def build_report(
    task: ArithTask,
    seed: int,
    results: dict[str, EvalResult],
    paths: dict[str, Path],
    rounds: list[Path],
    baseline_dir: Path,
    stage_seconds: dict[str, float],
) -> dict[str, Any]:
    """The demo's report.json: accuracies with 95% intervals, paired differences, what was trained, seconds."""

    def policy(name: str, **extra: Any) -> dict[str, Any]:
        result = results[name]
        return {"path": str(paths[name]), "accuracy": result.accuracy, "ci95": list(result.ci95()), **extra}

    seconds = {**_round_seconds(rounds), **stage_seconds}
    order = ["start_policy", "stage_a", "critic", "stage_b", "actor", "baseline", "evaluation"]
    seconds = {key: seconds[key] for key in order if key in seconds}
    return {
        "task": task.name,
        "test_problems": results["start"].n,
        "decoding": "greedy",
        "seed": seed,
        "start": policy("start"),
        "baseline": policy(
            "baseline",
            method="rejection-sampling fine-tuning on Stage A's correct samples",
            **json.loads((baseline_dir / "summary.json").read_text()),
        ),
        "dapo": policy(
            "dapo",
            iterations=len(rounds),
            rounds=[results[name].accuracy for name in results if name.startswith("dapo_round_")]
            + [results["dapo"].accuracy],
        ),
        "dapo_minus_start": _difference(results["start"], results["dapo"]),
        "baseline_minus_start": _difference(results["start"], results["baseline"]),
        "dapo_minus_baseline": _difference(results["baseline"], results["dapo"]),
        "stages": seconds,
        "seconds": sum(seconds.values()),
    }


def _round_seconds(rounds: list[Path]) -> dict[str, float]:
    """Stage A, critic training, Stage B and actor training seconds, summed over rounds, from their records."""
    totals = {"stage_a": 0.0, "critic": 0.0, "stage_b": 0.0, "actor": 0.0}
    for round_dir in rounds:
        fits = json.loads((round_dir / "iteration.json").read_text()).get("seconds", {})
        stage_a = json.loads((round_dir / "stage_a" / "summary.json").read_text())["seconds"]
        stage_b = json.loads((round_dir / "stage_b" / "summary.json").read_text())["seconds"]
        totals["stage_a"] += stage_a
        totals["critic"] += max(fits.get("critic_fit", stage_a) - stage_a, 0.0)
        totals["stage_b"] += stage_b
        totals["actor"] += max(fits.get("actor_fit", stage_b) - stage_b, 0.0)
    return totals


def _log_accuracies(tb_dir: Path, report: dict[str, Any]) -> None:
    """Held-out accuracy of each policy (a scalar per TensorBoard run) and the printed table as text."""
    for name, key in (("start_policy", "start"), ("baseline", "baseline"), ("dapo", "dapo")):
        with contextlib.closing(SummaryWriter(str(tb_dir / name))) as writer:
            writer.add_scalar("eval/accuracy", report[key]["accuracy"], 0)
            if name == "dapo":
                for i, accuracy in enumerate(report["dapo"]["rounds"], start=1):
                    writer.add_scalar("eval/accuracy_by_round", accuracy, i)
                writer.add_text("demo/report", "```\n" + format_table(report) + "\n```", 0)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_table(report: dict[str, Any]) -> str:
    """The table printed at the end of the demo."""
    n, rounds = report["test_problems"], report["dapo"]["iterations"]
    rows = [
        ("start policy", report["start"]),
        ("RFT baseline", report["baseline"]),
        (f"DAPO ({rounds} round{'s' if rounds > 1 else ''})", report["dapo"]),
    ]
    lines = [f"dapo demo: {report['task']}, {n} held-out problems, greedy decoding, seed {report['seed']}", ""]
    lines.append(f"{'policy':<22}{'accuracy':>10}   95% interval")
    for name, entry in rows:
        low, high = entry["ci95"]
        lines.append(f"{name:<22}{_pct(entry['accuracy']):>10}   [{_pct(low)}, {_pct(high)}]")
    lines.append("")
    lines.append(f"{'paired difference':<22}{'points':>10}   95% interval")
    for name, key in (
        ("DAPO - start", "dapo_minus_start"),
        ("baseline - start", "baseline_minus_start"),
        ("DAPO - baseline", "dapo_minus_baseline"),
    ):
        diff, (low, high) = report[key]["difference"], report[key]["ci95"]
        lines.append(f"{name:<22}{100 * diff:>+10.1f}   [{100 * low:+.1f}, {100 * high:+.1f}]")
    lines.append("")
    lines.append(f"{'stage':<22}{'seconds':>10}")
    for stage, seconds in report["stages"].items():
        lines.append(f"{stage:<22}{seconds:>10.1f}")
    lines.append(f"{'total':<22}{report['seconds']:>10.1f}")
    return "\n".join(lines)

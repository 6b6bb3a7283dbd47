"""`dapo demo`: one command that shows DAPO improving a policy on CPU, beside a response-level baseline.

On the bundled `arith` task, with nothing downloaded:
  1. start policy: a tiny Llama fine-tuned on worked solutions that forget carries and borrows most of the time
     (`slip_carries`), so it solves the problems without carries and fails the others at an identifiable step
     (copied from `dapo.pipeline.start_cache` when one was made from the same settings, code and machine);
  2. DAPO: `dapo iterate` with configs/demo/iterate.yaml (Stage A, critic, advantages, actor per round);
  3. baselines on the same Stage A samples, outcome only: the same actor and loss on response-level advantages
     (A = r - mean r over the problem's samples), and rejection-sampling fine-tuning (RFT) on the correct samples;
  4. tuning: every method (DAPO and both baselines) trained at each point of the same (lr, epochs) grid for the
     same tokens, its point chosen on validation problems carved from the train split (`dapo.pipeline.demo_grid`);
  5. optionally (`rounds: 2`) DAPO's second round: `dapo iterate` again from round 1's chosen policy (new Stage A
     samples from it, a critic that starts from round 1's, the shipped actor settings, no further tuning);
  6. evaluation: the chosen policies on the held-out test problems, greedy, with 95% intervals and paired
     differences.

Everything lands in `out`: policy/, iterate/ (round 1's artifacts and TensorBoard logs), grid/ (every grid point's
policy, and validation.json), round-2/ (with `rounds: 2`), tb/ (the fine-tuning loss curves and the accuracies),
timings.json and report.json.
A rerun skips finished stages. It refuses a folder whose `demo.json` records other settings (any config the demo
reads, resolved: `dapo.pipeline.demo_record`), and a grid point made from other inputs than the current round's.

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

from dapo.core.errors import check_model_folder
from dapo.core.stats import paired_difference_ci95
from dapo.generation.hf_generator import HFGenerator
from dapo.pipeline.configs import deep_merge, fit_overlay, load_config
from dapo.pipeline.demo_grid import METHODS, Round, TuningGrid, tune, validate_policy
from dapo.pipeline.demo_record import OUT, check_settings, check_started_from, settings_record
from dapo.pipeline.iterate import iterate
from dapo.pipeline.start_cache import cached_or_trained, start_record
from dapo.pipeline.tiny_model import tiny_model_for_task
from dapo.records import write_json
from dapo.stages.evaluation import EvalResult, evaluate_policy
from dapo.tasks.arith import ArithTask, slip_carries
from dapo.training.sft import supervised_finetune

log = logging.getLogger(__name__)

FIT_SECTIONS = ("trainer", "data", "stage_a", "advantages")


@dataclass
class StartPolicy:
    """The starting policy: a model fine-tuned on solutions with the carry-slip habit; by default a tiny Llama built
    for the task, or an existing model (`base_model`)."""

    base_model: str | None = None
    """Hugging Face folder of a pretrained model to fine-tune instead of a tiny Llama (the vocab and layer sizes
    below are then unused), e.g. SmolLM2-135M-Instruct from `dapo import-gguf` (configs/real/demo.yaml)."""
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
    grid: TuningGrid | None = None,
    rounds: int = 1,
    start_cache: bool = True,
) -> dict[str, Any]:
    """Run the embedded demo: start policy, DAPO and two outcome-only baselines, tuned alike; write report.json.

    Args:
        out: folder for every artifact (a rerun resumes at the first unfinished stage).
        seed: seeds the start policy, Stage A sampling, both fits and the baseline.
        task: the arith task (its test split is the held-out set).
        start: how the starting policy is built.
        iterate_config: `dapo iterate` config (its policy_path and out_dir are replaced by ones under `out`).
        fit_overlays: fit-config overlays (e.g. configs/debug.yaml): their trainer, data, stage_a and advantages
            sections are merged into both fits of every round.
        evaluation: held-out evaluation settings.
        grid: the (lr, epochs) grid every method is tuned over, and the validation problems that choose.
        rounds: 1, or 2 to also run DAPO's second round from round 1's chosen policy and report it beside the rest
            (the baselines stay at one round: round 2 samples again, so it sees twice the samples).
        start_cache: copy the start policy from `$DAPO_CACHE` (default ~/.cache/dapo) when one was made from the same
            task, start settings, seed, code and machine, and keep a copy of a newly trained one there.
    """
    if rounds not in (1, 2):
        raise ValueError(f"rounds must be 1 or 2, got {rounds}")
    began = time.perf_counter()
    task, start = task or ArithTask(), start or StartPolicy()
    evaluation, grid = evaluation or Evaluation(), grid or TuningGrid()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = iterate_plan(iterate_config, fit_overlays or [], seed, task, out_dir)  # a bad path fails before training
    if start.base_model is not None:
        check_model_folder(start.base_model, "start.base_model", made_by=_import_command)
    # `rounds` is left out of the checked settings: going from 1 to 2 on a finished run only adds round 2
    check_settings(out_dir, demo_settings(iterate_config, fit_overlays or [], seed, task, start, evaluation, grid))
    stages = DemoStages.load(out_dir / "timings.json")
    policy = out_dir / "policy"
    if not policy.exists():
        with stages.timed("start_policy"):
            _start_policy(task, start, seed, out_dir, start_cache)
    iterate(policy_path=str(policy), out_dir=str(out_dir / "iterate"), **plan)
    round_1 = out_dir / "iterate" / "iter-01"
    grid_dir = out_dir / "grid"
    round_ = Round(round_1, policy, _fit_config(plan, "actor"))
    limit, tokens = _stage_a_problems(plan), evaluation.max_new_tokens
    tuning = tune(round_, grid, task, grid_dir, seed, limit, tokens, stages.timed)
    paths = {"start": policy, **{m: Path(tuning["paths"][m]) for m in METHODS}}
    if rounds == 2:
        paths[ROUND_2] = _second_round(plan, Path(tuning["paths"]["dapo"]), round_1, out_dir / "round-2", stages)
        tuning["scores"][ROUND_2] = {"-": validate_policy(paths[ROUND_2], task, grid, limit, tokens)}
    with stages.timed("evaluation"):
        results = {name: _evaluate(path, task, evaluation) for name, path in paths.items()}
    report = build_report(task, seed, results, paths, round_1, tuning, stages.seconds)
    report["wall_seconds"] = time.perf_counter() - began
    write_json(out_dir / "report.json", report)
    _log_accuracies(out_dir / "tb", report)
    print(format_table(report))
    return report


ROUND_2 = "dapo_round2"


def _second_round(plan: dict[str, Any], start: Path, round_1: Path, out: Path, stages: DemoStages) -> Path:
    """DAPO's round 2: `iterate` once more from `start` (round 1's chosen policy), its critic starting from round 1's,
    with the shipped critic and actor settings; resumed if it finished before."""
    actor = out / "iter-01" / "actor" / "hf"
    settings = {**plan, "iterations": 1, "critic_init": str(round_1 / "critic" / "hf")}
    if actor.exists():
        check_started_from(out / "iter-01", start)
        return actor
    with stages.timed("round_2"):
        return iterate(policy_path=str(start), out_dir=str(out), **settings)


def demo_settings(
    iterate_config: str,
    fit_overlays: list[str],
    seed: int,
    task: ArithTask,
    start: StartPolicy,
    evaluation: Evaluation,
    grid: TuningGrid,
) -> dict[str, Any]:
    """What `demo.json` records (`settings_record`): the plan resolved with outputs placed under `OUT`."""
    plan = iterate_plan(iterate_config, fit_overlays, seed, task, Path(OUT))
    fits = {which: _fit_config(plan, which) for which in ("critic", "actor")}
    overlays = [_overlay_sections(path) for path in fit_overlays]
    sections = {"task": asdict(task), "start": asdict(start), "evaluation": asdict(evaluation), "grid": asdict(grid)}
    return settings_record(plan, fits, overlays, {"seed": seed, **sections})


START_CODE = (supervised_finetune, tiny_model_for_task, slip_carries)
"""Functions whose modules' source goes into the start-policy cache's key, beside this module's."""


def _start_policy(task: ArithTask, start: StartPolicy, seed: int, out_dir: Path, cached: bool) -> None:
    """Train the start policy into `out_dir/policy` (its loss curve into tb/start_policy), or copy it from the
    cache when `cached` and one was made from the same settings, code and machine."""
    policy, logs = out_dir / "policy", out_dir / "tb" / "start_policy"

    def train() -> None:
        train_start_policy(task, start, policy, seed, logs)

    if not cached:
        train()
        return
    settings = {"task": asdict(task), "start": asdict(start), "seed": seed}
    record = start_record(settings, start.base_model, (_start_policy, *START_CODE))  # this module, too
    cached_or_trained(record, {"policy": policy, "tb": logs}, train)


def train_start_policy(task: ArithTask, settings: StartPolicy, out: Path, seed: int, tb_dir: Path) -> Path:
    """`settings.base_model`, or a tiny Llama (BPE tokenizer from the task's texts), fine-tuned on carry-slipping
    solutions, written to `out`."""
    examples = task.load("train")
    if settings.base_model is None:
        base = out.parent / f".{out.name}.base"
        sizes = {
            "vocab_size": settings.vocab_size,
            "hidden_size": settings.hidden_size,
            "num_layers": settings.num_layers,
            "num_heads": settings.num_heads,
        }
        tiny_model_for_task(base, examples, task, **sizes, seed=seed, overwrite=True)
    else:
        base = Path(settings.base_model)
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
    if settings.base_model is None:
        shutil.rmtree(base, ignore_errors=True)
    return out


def _import_command(path: str) -> str:
    return f"`dapo import-gguf --out {path}` (SmolLM2-135M-Instruct), or point it at any Hugging Face model folder"


def iterate_plan(
    iterate_config: str, fit_overlays: list[str], seed: int, task: ArithTask, out_dir: Path
) -> dict[str, Any]:
    """`iterate` keyword arguments from its YAML config plus the fit overlays (policy_path and out_dir left out).
    Stage A grades with the demo's task and writes its problems under `out_dir` (not where the config says: two
    demos with different tasks must not share a problems file)."""
    for path in [iterate_config, *fit_overlays]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found: run `dapo demo` from the repository root or pass its path")
    config = load_config(iterate_config, [_overlay_sections(path) for path in fit_overlays])
    config.pop("policy_path", None)
    config.pop("out_dir", None)
    if config.get("iterations", 2) != 1:  # 2: iterate's default
        raise ValueError(f"{iterate_config}: the demo tunes and compares one DAPO round; set iterations: 1")
    stage_a = {"task": {"class_path": "dapo.tasks.ArithTask", "init_args": asdict(task)}}
    stage_a["rollout"] = {"problems_path": str(out_dir / "problems")}
    config["stage_a"] = deep_merge(config.get("stage_a") or {}, stage_a)
    return {**config, "seed": seed}


def _overlay_sections(path: str) -> dict[str, Any]:
    """What the demo takes from a fit overlay: its sections merged into both fits of every round."""
    overlay = load_config(path, [])
    return {key: overlay[key] for key in FIT_SECTIONS if key in overlay}


def _fit_config(plan: dict[str, Any], which: str) -> dict[str, Any]:
    """The critic or actor fit config `iterate` ran (`which`: "critic" or "actor"), fit overlays merged in."""
    sections = {key: plan.get(key) for key in FIT_SECTIONS}
    return load_config(plan.get(f"{which}_config", f"configs/{which}.yaml"), [fit_overlay(**sections)])


def _stage_a_problems(plan: dict[str, Any]) -> int:
    """How many train problems Stage A uses (the first ones of the split): the critic config's rollout limit."""
    limit = _fit_config(plan, "critic").get("stage_a", {}).get("rollout", {}).get("limit")
    if limit is None:
        raise ValueError("the demo's critic config must set stage_a.rollout.limit (validation uses later problems)")
    return int(limit)


def _evaluate(path: Path, task: ArithTask, settings: Evaluation) -> EvalResult:
    generator = HFGenerator.from_pretrained(str(path))
    return evaluate_policy(generator, task, "test", limit=settings.limit, max_new_tokens=settings.max_new_tokens)


def _difference(before: EvalResult, after: EvalResult) -> dict[str, Any]:
    return {
        "difference": after.accuracy - before.accuracy,
        "ci95": list(paired_difference_ci95(before.scores, after.scores)),
    }


METHOD_NAMES = {
    "dapo": "DAPO, step-level advantages from the critic",
    "response": "response-level advantages (A = r - mean r over the problem's samples), DAPO's loss and beta",
    "rft": "rejection-sampling fine-tuning on Stage A's correct samples",
}
DIFFERENCES = {  # report key: (before, after)
    "dapo_minus_start": ("start", "dapo"),
    "response_minus_start": ("start", "response"),
    "rft_minus_start": ("start", "rft"),
    "dapo_minus_response": ("response", "dapo"),
    "dapo_minus_rft": ("rft", "dapo"),
}
ROUND_2_NAME = "DAPO round 2, from round 1's chosen policy: new samples, the shipped actor settings, not tuned"
ROUND_2_DIFFERENCES = {
    "dapo_round2_minus_dapo": ("dapo", ROUND_2),
    "dapo_round2_minus_start": ("start", ROUND_2),
    "dapo_round2_minus_response": ("response", ROUND_2),
    "dapo_round2_minus_rft": ("rft", ROUND_2),
}


def _differences(round_2: bool) -> dict[str, tuple[str, str]]:
    """The paired differences to report: round 2's too when it ran."""
    return {**DIFFERENCES, **(ROUND_2_DIFFERENCES if round_2 else {})}


def build_report(
    task: ArithTask,
    seed: int,
    results: dict[str, EvalResult],
    paths: dict[str, Path],
    round_dir: Path,
    tuning: dict[str, Any],
    stage_seconds: dict[str, float],
) -> dict[str, Any]:
    """The demo's report.json: accuracies with 95% intervals, paired differences, the tuning grid with every point's
    validation accuracy and the chosen ones, training tokens, seconds per stage."""

    def policy(name: str, **extra: Any) -> dict[str, Any]:
        result = results[name]
        return {"path": str(paths[name]), "accuracy": result.accuracy, "ci95": list(result.ci95()), **extra}

    def method(name: str) -> dict[str, Any]:
        chosen = tuning["chosen"][name]
        return policy(name, method=METHOD_NAMES[name], chosen=chosen, validation=tuning["scores"][name][chosen])

    seconds = {**_round_seconds([round_dir]), **stage_seconds}
    order = ["start_policy", "stage_a", "critic", "stage_b", "actor", *(f"grid_{m}" for m in METHODS), "round_2"]
    round_2 = ROUND_2 in results
    seconds = {key: seconds[key] for key in [*order, "evaluation"] if key in seconds and (round_2 or key != "round_2")}
    differences = {key: _difference(results[a], results[b]) for key, (a, b) in _differences(round_2).items()}
    validation = tuning["scores"].get(ROUND_2, {}).get("-")
    second = {ROUND_2: policy(ROUND_2, method=ROUND_2_NAME, chosen="-", validation=validation)} if round_2 else {}
    return {
        "task": task.name,
        "test_problems": results["start"].n,
        "decoding": "greedy",
        "seed": seed,
        "start": policy("start", chosen="-", validation=tuning["scores"]["start"]["-"]),
        **{name: method(name) for name in METHODS},
        **second,
        **differences,
        "grid": tuning,
        "test_scores": {name: result.scores for name, result in results.items()},  # per problem, for pairing
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
    """Held-out accuracy of each policy (a scalar per TensorBoard run), the validation accuracy of every grid point
    (one run per method, a scalar per point in grid order) and the printed table as text."""
    for name in ("start", *METHODS, *([ROUND_2] if ROUND_2 in report else [])):
        run = "start_policy" if name == "start" else name  # the start policy's fine-tuning logs there too
        with contextlib.closing(SummaryWriter(str(tb_dir / run))) as writer:
            writer.add_scalar("eval/accuracy", report[name]["accuracy"], 0)
            for i, accuracy in enumerate(report["grid"]["scores"].get(name, {}).values()):
                writer.add_scalar("grid/validation_accuracy", accuracy, i)
            if name == "dapo":
                writer.add_text("demo/report", "```\n" + format_table(report) + "\n```", 0)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_table(report: dict[str, Any]) -> str:
    """The table printed at the end of the demo."""
    n = report["test_problems"]
    names = [*METHODS, *([ROUND_2] if ROUND_2 in report else [])]
    rows = [("start policy", report["start"])] + [(TABLE_NAMES[m], report[m]) for m in names]
    lines = [f"dapo demo: {report['task']}, {n} held-out problems, greedy decoding, seed {report['seed']}", ""]
    lines.append(f"{'policy':<26}{'accuracy':>10}   95% interval     chosen on validation")
    for name, entry in rows:
        low, high = entry["ci95"]
        chosen = f"{entry['chosen']} ({_pct(entry['validation'])})" if "chosen" in entry else ""
        lines.append(f"{name:<26}{_pct(entry['accuracy']):>10}   [{_pct(low)}, {_pct(high)}]   {chosen}".rstrip())
    lines.append("")
    lines.append(f"{'paired difference':<26}{'points':>10}   95% interval")
    for key, (before, after) in _differences(ROUND_2 in report).items():
        diff, (low, high) = report[key]["difference"], report[key]["ci95"]
        name = f"{SHORT_NAMES[after]} - {SHORT_NAMES[before]}"
        lines.append(f"{name:<26}{100 * diff:>+10.1f}   [{100 * low:+.1f}, {100 * high:+.1f}]")
    lines.append("")
    lines.append(f"{'stage':<26}{'seconds':>10}")
    for stage, seconds in report["stages"].items():
        lines.append(f"{stage:<26}{seconds:>10.1f}")
    lines.append(f"{'total':<26}{report['seconds']:>10.1f}")
    return "\n".join(lines)


TABLE_NAMES = {
    "dapo": "DAPO (step-level)",
    "response": "response-level baseline",
    "rft": "RFT baseline",
    ROUND_2: "DAPO, round 2",
}
SHORT_NAMES = {"start": "start", "dapo": "DAPO", "response": "response", "rft": "RFT", ROUND_2: "DAPO round 2"}

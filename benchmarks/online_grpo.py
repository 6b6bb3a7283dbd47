"""Online GRPO beside the demo's methods: TRL's `GRPOTrainer` trained from a finished demo run's start policy, on
the same problems, with the same reward, for the same generated tokens, tuned and judged the same way.

Why: the peer a user would pick for outcome-reward RL on a reasoning task is online GRPO. DAPO's claim is that
step-level credit teaches more per generated token; this puts the two side by side on the demo's own terms:
  - start policy: the run's `policy/` (what DAPO, the response-level baseline and RFT start from);
  - problems: the first train problems Stage A used (`iterate/iter-01/stage_a/summary.json` says how many);
  - reward: the task's `score`, 0 for a completion the token limit cut off (as Stage A grades);
  - budget: GRPO stops once it has generated as many completion tokens as DAPO's whole Stage A did (Stage B and
    the actor generate nothing);
  - tuning: each of the demo grid's learning rates, chosen by greedy accuracy on the grid's validation problems
    (the last train problems, never Stage A's, never the test split);
  - judging: the chosen policy greedy on the same test problems, with paired 95% intervals against every policy in
    the run's report.json (the start policy is re-scored here and must match the report problem by problem).
TRL's defaults otherwise (beta 0, temperature 1, its `dapo` loss type, AdamW), with a group of `--group`
completions per prompt, one prompt per optimizer step, a constant learning rate and `--max-new-tokens` tokens.

Left out on purpose:
1. Tuning anything but the learning rate: the demo's methods are tuned over lr and epochs; GRPO's epochs are fixed
   by the token budget.
2. vLLM generation: TRL's own `generate` on CPU, as dapo's demo uses transformers on CPU.

Writes `RUN/grpo/LR/hf` (each trained policy), `RUN/grpo/LR/atP/hf` (its snapshots at P% of the budget: 25, 50,
75), `RUN/grpo/report.json` and a TensorBoard scalar under `RUN/tb/grpo`; a rerun skips finished learning rates.
The chosen lr's snapshots are scored on test too: GRPO's accuracy against generated tokens, beside DAPO's rounds.
`--curve` makes them for a chosen lr trained before snapshots existed, by training it again (same seed) in
`RUN/grpo/LR-curve/`; its final policy is scored as well, to show how far the rerun lands from the first.

Run: `python -m benchmarks.online_grpo runs/demo [--lrs 1e-4 3e-4] [--group 16] [--curve]`   (needs trl: the bench
extra)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from benchmarks.common import machine_line
from benchmarks.demo_runs import DemoRun, evaluate_on_test, paired
from dapo.core.errors import require
from dapo.pipeline.demo_grid import validate_policy
from dapo.records import write_json
from dapo.stages.evaluation import EvalResult
from dapo.tasks.arith import ArithTask


@dataclass
class GrpoSettings:
    """How GRPO trains: TRL's defaults but for these."""

    group: int = 16
    """Completions per prompt (TRL's `num_generations`); also the batch: one prompt per optimizer step."""
    max_new_tokens: int = 64
    """TRL's `max_completion_length`: Stage A's cap in the demo."""
    seed: int = 0


@dataclass
class GrpoRun:
    """One learning rate's training: what it generated and how long it took."""

    lr: float
    tokens: int
    steps: int
    seconds: float
    validation: float = 0.0
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    """{"percent", "tokens", "steps"} of each policy saved on the way, in `atP/hf` beside `hf`."""


SNAPSHOT_PERCENTS = (25, 50, 75)
"""Where in the token budget GRPO's policy is saved: the budgets at which DAPO's 2 and 4 rounds end a round."""


def import_trl() -> Any:
    """TRL, or an error that names the extra installing it."""
    return require("trl", "bench", "the online GRPO comparison (benchmarks/online_grpo.py)")


class TokenBudget:
    """Counts the completion tokens TRL generated (reward calls see every completion) and says when to stop."""

    def __init__(self, budget: int) -> None:
        self.budget, self.tokens = budget, 0

    def spend(self, completion_ids: Sequence[Sequence[int]]) -> None:
        self.tokens += sum(len(ids) for ids in completion_ids)

    @property
    def spent(self) -> bool:
        return self.tokens >= self.budget


def task_reward(task: ArithTask, budget: TokenBudget, max_new_tokens: int, eos_id: int) -> Any:
    """A TRL reward function: the task's score of each completion, 0 when the token limit cut it off (no eos
    within `max_new_tokens`: an unfinished response is a failed one, as Stage A grades)."""

    def reward(completions: list[str], example: list[str], completion_ids: list[list[int]], **_: Any) -> list[float]:
        budget.spend(completion_ids)
        return [
            0.0 if len(ids) >= max_new_tokens and eos_id not in ids else task.score(json.loads(row), text)
            for text, row, ids in zip(completions, example, completion_ids, strict=True)
        ]

    return reward


def train_grpo(
    policy: Path,
    examples: Sequence[dict[str, Any]],
    task: ArithTask,
    lr: float,
    budget: int,
    settings: GrpoSettings,
    out: Path,
) -> GrpoRun:
    """TRL's GRPOTrainer from `policy` on `examples` until it has generated `budget` completion tokens; the trained
    policy in `out/hf`."""
    trl = import_trl()
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    tokenizer = AutoTokenizer.from_pretrained(policy)
    spent = TokenBudget(budget)

    snapshots: list[dict[str, Any]] = []

    class StopAtBudget(TrainerCallback):
        """Saves the policy each time the tokens pass a snapshot percent of the budget; stops at the budget."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            for percent in SNAPSHOT_PERCENTS[len(snapshots) :]:
                if spent.tokens * 100 < percent * budget or spent.spent:
                    break
                snapshot = str(out / f"at{percent}" / "hf")
                kwargs["model"].save_pretrained(snapshot)
                tokenizer.save_pretrained(snapshot)
                snapshots.append({"percent": percent, "tokens": spent.tokens, "steps": state.global_step})
            control.should_training_stop = spent.spent
            return control

    rows = [{"prompt": task.prompt(ex), "example": json.dumps(ex)} for ex in examples]
    config = trl.GRPOConfig(
        output_dir=str(out / "trainer"),
        use_cpu=True,
        bf16=False,
        learning_rate=lr,
        lr_scheduler_type="constant",
        num_generations=settings.group,
        per_device_train_batch_size=settings.group,
        max_completion_length=settings.max_new_tokens,
        temperature=1.0,
        beta=0.0,
        num_train_epochs=10_000,  # the token budget stops it
        save_strategy="no",
        report_to=[],
        logging_steps=50,
        seed=settings.seed,
        data_seed=settings.seed,
    )
    reward = task_reward(task, spent, settings.max_new_tokens, tokenizer.eos_token_id)
    reward.__name__ = "task_score"
    trainer = trl.GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy),
        reward_funcs=[reward],
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[StopAtBudget()],
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(str(out / "hf"))
    tokenizer.save_pretrained(str(out / "hf"))
    return GrpoRun(lr, spent.tokens, trainer.state.global_step, seconds, snapshots=snapshots)


def compare(run: DemoRun, lrs: Sequence[float], settings: GrpoSettings, curve: bool = False) -> dict[str, Any]:
    """Train GRPO at every lr (finished ones are read back), choose on validation, judge on test, and score the
    chosen lr's snapshots on test (`curve`: train it again for them if it has none)."""
    examples = list(run.task.load("train"))[: run.stage_a_problems]
    max_new_tokens = settings.max_new_tokens
    runs = []
    for lr in lrs:
        out = run.folder / "grpo" / f"lr{lr:g}"
        record = out / "run.json"
        if record.exists():
            runs.append(GrpoRun(**json.loads(record.read_text())))
            continue
        trained = train_grpo(run.folder / "policy", examples, run.task, lr, run.stage_a_tokens, settings, out)
        trained.validation = validate_policy(out / "hf", run.task, run.grid, run.stage_a_problems, max_new_tokens)
        write_json(record, asdict(trained))
        runs.append(trained)
    chosen = max(runs, key=lambda r: r.validation)
    grpo = evaluate_on_test(run.folder / "grpo" / f"lr{chosen.lr:g}" / "hf", run, max_new_tokens)
    start_again = evaluate_on_test(run.folder / "policy", run, max_new_tokens)
    report = grpo_report(run, runs, chosen, grpo, start_again)
    report["grpo"]["curve"] = grpo_curve(run, chosen, examples, settings, curve)
    return report


def grpo_curve(
    run: DemoRun, chosen: GrpoRun, examples: Sequence[dict[str, Any]], settings: GrpoSettings, retrain: bool
) -> list[dict[str, Any]]:
    """Test accuracy of the chosen lr's snapshots ({"percent", "tokens", "steps", "accuracy", "ci95",
    "test_scores"}; the last point the rerun's final policy when `retrain` trained the lr again for them); [] without
    snapshots."""
    folder, trained = run.folder / "grpo" / f"lr{chosen.lr:g}", chosen
    if not chosen.snapshots and retrain:
        folder = run.folder / "grpo" / f"lr{chosen.lr:g}-curve"
        record = folder / "run.json"
        if record.exists():
            trained = GrpoRun(**json.loads(record.read_text()))
        else:
            trained = train_grpo(
                run.folder / "policy", examples, run.task, chosen.lr, run.stage_a_tokens, settings, folder
            )
            write_json(record, asdict(trained))
    points = [(s, folder / f"at{s['percent']}" / "hf") for s in trained.snapshots]
    if trained is not chosen:
        points.append(({"percent": 100, "tokens": trained.tokens, "steps": trained.steps}, folder / "hf"))
    curve = []
    for snapshot, policy in points:
        result = evaluate_on_test(policy, run, settings.max_new_tokens)
        scored = {"accuracy": result.accuracy, "ci95": list(result.ci95()), "test_scores": result.scores}
        curve.append(snapshot | scored)
    return curve


def grpo_report(
    run: DemoRun, runs: Sequence[GrpoRun], chosen: GrpoRun, grpo: EvalResult, start_again: EvalResult
) -> dict[str, Any]:
    """GRPO's accuracy and paired differences against every policy the demo scored; the start policy's re-score
    must agree with the report's problem by problem, or the pairing would compare different evaluations."""
    scores = run.report["test_scores"]
    differ = sum(a != b for a, b in zip(scores["start"], start_again.scores, strict=True))
    if differ:
        raise RuntimeError(f"the start policy re-scored differs from {run.folder}/report.json on {differ} problems")
    differences = {f"grpo_minus_{name}": entry for name, entry in paired(scores, grpo.scores).items()}
    return {
        "grpo": {"accuracy": grpo.accuracy, "ci95": list(grpo.ci95()), "chosen_lr": chosen.lr},
        "runs": [asdict(r) for r in runs],
        "token_budget": run.stage_a_tokens,
        **differences,
        "test_scores": grpo.scores,
        "machine": machine_line(),
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [f"online GRPO, {report['token_budget']:,} generated tokens (DAPO's Stage A); {report['machine']}", ""]
    lines.append("| lr | tokens | steps | seconds | validation |")
    lines.append("|---|---|---|---|---|")
    for r in report["runs"]:
        lines.append(
            f"| {r['lr']:g} | {r['tokens']:,} | {r['steps']} | {r['seconds']:.0f} | {100 * r['validation']:.1f}% |"
        )
    low, high = report["grpo"]["ci95"]
    accuracy, lr = 100 * report["grpo"]["accuracy"], report["grpo"]["chosen_lr"]
    lines += ["", f"GRPO (lr {lr:g}) test: {accuracy:.1f}% [{100 * low:.1f}, {100 * high:.1f}]", ""]
    lines += ["| paired difference | points | 95% interval |", "|---|---|---|"]
    for key, entry in report.items():
        if key.startswith("grpo_minus_"):
            low, high = entry["ci95"]
            name = key.removeprefix("grpo_minus_")
            lines.append(
                f"| GRPO - {name} | {100 * entry['difference']:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished `dapo demo` run folder, e.g. runs/demo")
    parser.add_argument("--lrs", type=float, nargs="+", help="learning rates (default: the demo grid's)")
    parser.add_argument("--group", type=int, default=GrpoSettings.group)
    parser.add_argument("--max-new-tokens", type=int, default=GrpoSettings.max_new_tokens)
    parser.add_argument("--curve", action="store_true", help="train the chosen lr again if it has no snapshots")
    args = parser.parse_args(argv)
    import_trl()  # before any work: the error names the extra
    run = DemoRun.load(args.run)
    settings = GrpoSettings(args.group, args.max_new_tokens, run.seed)
    report = compare(run, args.lrs or run.grid.lrs, settings, args.curve)
    write_json(args.run / "grpo" / "report.json", report)
    with contextlib.closing(SummaryWriter(str(args.run / "tb" / "grpo"))) as writer:
        writer.add_scalar("eval/accuracy", report["grpo"]["accuracy"], 0)
    print(format_table(report))
    return report


if __name__ == "__main__":
    main()

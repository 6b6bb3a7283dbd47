"""DAPO in R on-policy rounds at one round's generated tokens, beside the demo's methods and online GRPO.

Why: one DAPO round is fully off-policy (every token from the start policy). Iterative DAPO samples each round from
the round's start policy, with the critic continuing and that policy as the round's reference, so many small rounds
come close to on-policy learning, the regime in which step-level credit is reported to beat outcome RL. This sweeps
the number of rounds at a fixed total of generated tokens:
  - R rounds of `dapo iterate` with the demo's own configs (Stage A, critic, Stage B, actor: the shipped settings,
    no per-round tuning), from the run's start policy;
  - each round's Stage A takes the first `problems / R` of the run's Stage A problems (the same samples, rollouts
    and cap per problem), so R rounds generate about the tokens of the demo's one round; the actual tokens of every
    round are counted from its Stage A summary and reported;
  - every round's policy is scored greedy on the grid's validation problems and on the test problems (the curve
    of accuracy against generated tokens); the recipe's result is its last round.

Writes `RUN/rounds/rR/` (the iterate rounds) and `RUN/rounds/report.json`; a rerun resumes (iterate resumes).

Run: `python -m benchmarks.dapo_rounds runs/demo --rounds 2 4`
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import machine_line
from benchmarks.demo_runs import DemoRun, evaluate_on_test, paired
from dapo.pipeline.configs import deep_merge
from dapo.pipeline.demo import iterate_plan
from dapo.pipeline.demo_grid import validate_policy
from dapo.pipeline.iterate import iterate
from dapo.records import write_json

MAX_NEW_TOKENS = 64
"""The demo's evaluation cap."""


def rounds_plan(run: DemoRun, rounds: int, iterate_config: str, fit_overlays: list[str]) -> dict[str, Any]:
    """The demo's iterate plan for `rounds` rounds, each Stage A on the first `problems / rounds` problems."""
    if run.stage_a_problems % rounds:
        raise ValueError(f"{run.stage_a_problems} Stage A problems do not split into {rounds} equal rounds")
    plan = iterate_plan(iterate_config, fit_overlays, run.seed, run.task, run.folder)
    plan["stage_a"] = deep_merge(plan["stage_a"], {"rollout": {"limit": run.stage_a_problems // rounds}})
    return {**plan, "iterations": rounds}


def run_rounds(run: DemoRun, rounds: int, iterate_config: str, fit_overlays: list[str]) -> list[dict[str, Any]]:
    """Every round's policy with the tokens generated up to it, its validation and test accuracy."""
    out = run.folder / "rounds" / f"r{rounds}"
    plan = rounds_plan(run, rounds, iterate_config, fit_overlays)
    iterate(policy_path=str(run.folder / "policy"), out_dir=str(out), **plan)
    points, tokens = [], 0
    for i in range(1, rounds + 1):
        round_dir = out / f"iter-{i:02d}"
        stage_a = json.loads((round_dir / "stage_a" / "summary.json").read_text())
        tokens += int(stage_a["tokens_generated"])
        policy = round_dir / "actor" / "hf"
        validation = validate_policy(policy, run.task, run.grid, run.stage_a_problems, MAX_NEW_TOKENS)
        test = evaluate_on_test(policy, run, MAX_NEW_TOKENS)
        seconds = json.loads((round_dir / "iteration.json").read_text()).get("seconds", {})
        points.append(
            {
                "round": i,
                "tokens": tokens,
                "validation": validation,
                "accuracy": test.accuracy,
                "ci95": list(test.ci95()),
                "seconds": seconds,
                "test_scores": test.scores,
            }
        )
    return points


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished `dapo demo` run folder, e.g. runs/demo")
    parser.add_argument("--rounds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--iterate-config", default="configs/demo/iterate.yaml", help="the config the demo ran")
    parser.add_argument("--fit-overlays", nargs="*", default=[], help="the fit overlays the demo ran")
    args = parser.parse_args(argv)
    run = DemoRun.load(args.run)
    record = args.run / "rounds" / "report.json"
    report: dict[str, Any] = json.loads(record.read_text()) if record.exists() else {"sweep": {}}
    report["machine"] = machine_line()
    others = {**run.report["test_scores"], **_grpo_scores(args.run)}
    for rounds in args.rounds:
        points = run_rounds(run, rounds, args.iterate_config, args.fit_overlays)
        report["sweep"][str(rounds)] = {"points": points, "paired": paired(others, points[-1]["test_scores"])}
        write_json(record, report)
    print(format_table(report))
    return report


def _grpo_scores(folder: Path) -> dict[str, list[float]]:
    record = folder / "grpo" / "report.json"
    return {"grpo": json.loads(record.read_text())["test_scores"]} if record.exists() else {}


def format_table(report: dict[str, Any]) -> str:
    lines = [f"DAPO rounds at one round's tokens; {report['machine']}", ""]
    lines.append("| rounds | round | tokens so far | validation | test | 95% interval |")
    lines.append("|---|---|---|---|---|---|")
    for rounds, entry in report["sweep"].items():
        for p in entry["points"]:
            low, high = p["ci95"]
            lines.append(
                f"| {rounds} | {p['round']} | {p['tokens']:,} | {100 * p['validation']:.1f}% | "
                f"{100 * p['accuracy']:.1f}% | [{100 * low:.1f}, {100 * high:.1f}] |"
            )
        for name, d in entry["paired"].items():
            low, high = d["ci95"]
            lines.append(
                f"|  | last - {name} | {100 * d['difference']:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] | | |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

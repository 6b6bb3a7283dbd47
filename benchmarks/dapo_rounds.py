"""DAPO in R on-policy rounds at one round's generated tokens, beside the demo's methods and online GRPO.

Why: one DAPO round is fully off-policy (every token from the start policy). Iterative DAPO samples each round from
the round's start policy, with the critic continuing and that policy as the round's reference, so many small rounds
come close to on-policy learning, the regime in which step-level credit is reported to beat outcome RL. This sweeps
the number of rounds at a fixed total of generated tokens:
  - R rounds of `dapo iterate` with the demo's own configs (Stage A, critic, Stage B, actor: the shipped settings,
    no per-round tuning), from the run's start policy;
  - round i's Stage A takes the i-th `problems / R` of the run's Stage A problems (`problems_per_round`, with the
    same samples, rollouts and cap per problem), so R rounds see the problems of the demo's one round, each once,
    and generate about its tokens; the actual tokens of every round are counted from its Stage A summary;
  - every round's policy is scored greedy on the grid's validation problems and on the test problems (the curve
    of accuracy against generated tokens); the recipe's result is its last round.
A variant (`--variant NAME --fit-overlays FILE...`) runs the same rounds with overlays merged into both fits, e.g.
Stage B from the rollouts alone (configs/demo/rounds/rollouts_only.yaml). A variant that spends fewer tokens per
problem (fewer MC rollouts) walks through more problems at the same tokens: `--problems N` (its overlay must raise
Stage A's `limit` to N; the validation problems stay the last train problems, checked not to overlap).

Writes `RUN/rounds/rR/` (`RUN/rounds/NAME-rR/` for a variant) with `rounds.json`, what the rounds were made from
(a folder made from other settings or another start policy is refused, never reused), and `RUN/rounds/report.json`;
a rerun resumes (iterate resumes).

Run: `python -m benchmarks.dapo_rounds runs/demo --rounds 2 4 8`
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import machine_line
from benchmarks.demo_runs import DemoRun, evaluate_on_test, paired, rounds_key
from dapo.core.fingerprint import policy_fingerprint
from dapo.pipeline.configs import load_config
from dapo.pipeline.demo import iterate_plan
from dapo.pipeline.demo_grid import validate_policy
from dapo.pipeline.demo_record import check_made
from dapo.pipeline.iterate import iterate
from dapo.records import write_json

MAX_NEW_TOKENS = 64
"""The demo's evaluation cap."""


def rounds_plan(run: DemoRun, rounds: int, iterate_config: str, fit_overlays: list[str]) -> dict[str, Any]:
    """The demo's iterate plan for `rounds` rounds, round i's Stage A on the i-th `problems / rounds` problems."""
    if run.stage_a_problems % rounds:
        raise ValueError(f"{run.stage_a_problems} Stage A problems do not split into {rounds} equal rounds")
    plan = iterate_plan(iterate_config, fit_overlays, run.seed, run.task, run.folder)
    return {**plan, "iterations": rounds, "problems_per_round": run.stage_a_problems // rounds}


def walked(run: DemoRun, problems: int | None) -> DemoRun:
    """The run with the rounds walking through the first `problems` train problems instead of the demo's count."""
    if problems is None:
        return run
    if problems <= 0:
        raise ValueError(f"--problems must be positive, got {problems}")
    return dataclasses.replace(run, stage_a_problems=problems)


def rounds_made(run: DemoRun, plan: dict[str, Any]) -> dict[str, Any]:
    """What a rounds folder is made from: the start policy's weights, the plan, and the fit configs' contents."""
    configs = {key: load_config(plan[key], []) for key in ("critic_config", "actor_config")}
    return {"start_policy": policy_fingerprint(str(run.folder / "policy")), "plan": plan, "configs": configs}


def run_rounds(
    run: DemoRun, rounds: int, iterate_config: str, fit_overlays: list[str], variant: str | None = None
) -> list[dict[str, Any]]:
    """Every round's policy with the tokens generated up to it, its validation and test accuracy."""
    out = run.folder / "rounds" / (f"{variant}-r{rounds}" if variant else f"r{rounds}")
    plan = rounds_plan(run, rounds, iterate_config, fit_overlays)
    check_made(out, rounds_made(run, plan), finished=(out / "iter-01").exists(), record="rounds.json")
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
    parser.add_argument("--rounds", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--iterate-config", default="configs/demo/iterate.yaml", help="the config the demo ran")
    parser.add_argument("--fit-overlays", nargs="*", default=[], help="the demo's fit overlays, then the variant's")
    parser.add_argument("--variant", help="a name for rounds run with other fit overlays (its own folders and rows)")
    parser.add_argument("--problems", type=int, help="Stage A problems the rounds walk through (default: the demo's)")
    args = parser.parse_args(argv)
    run = walked(DemoRun.load(args.run), args.problems)
    record = args.run / "rounds" / "report.json"
    report: dict[str, Any] = json.loads(record.read_text()) if record.exists() else {"sweep": {}}
    report["machine"] = machine_line()
    others = {**run.report["test_scores"], **_grpo_scores(args.run)}
    for rounds in args.rounds:
        points = run_rounds(run, rounds, args.iterate_config, args.fit_overlays, args.variant)
        entry = {"rounds": rounds, "variant": args.variant, "fit_overlays": args.fit_overlays, "points": points}
        report["sweep"][rounds_key(rounds, args.variant)] = entry | {
            "paired": paired(others, points[-1]["test_scores"])
        }
        write_json(record, report)
    print(format_table(report))
    return report


def _grpo_scores(folder: Path) -> dict[str, list[float]]:
    record = folder / "grpo" / "report.json"
    return {"grpo": json.loads(record.read_text())["test_scores"]} if record.exists() else {}


def format_table(report: dict[str, Any]) -> str:
    lines = [f"DAPO rounds at one round's tokens; {report['machine']}", ""]
    lines.append("| rounds (variant) | round | tokens so far | validation | test | 95% interval |")
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

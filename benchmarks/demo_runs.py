"""A finished `dapo demo` run folder, as the comparisons beside the demo read it (online GRPO, DAPO's rounds sweep):
its settings, the Stage A problems and tokens that set every method's budget, its report and test scores, and the
evaluation every method is judged by."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dapo.core.stats import paired_difference_ci95
from dapo.generation.hf_generator import HFGenerator
from dapo.pipeline.demo_grid import TuningGrid
from dapo.stages.evaluation import EvalResult, evaluate_policy
from dapo.tasks.arith import ArithTask


@dataclass
class DemoRun:
    """What the comparison reads from a finished demo run folder."""

    folder: Path
    task: ArithTask
    grid: TuningGrid
    seed: int
    stage_a_problems: int
    stage_a_tokens: int
    report: dict[str, Any]

    @classmethod
    def load(cls, folder: Path) -> DemoRun:
        needed = [folder / "demo.json", folder / "report.json", folder / "iterate/iter-01/stage_a/summary.json"]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} is not a finished demo run (missing {', '.join(missing)}): run dapo demo"
            )
        settings = json.loads(needed[0].read_text())
        stage_a = json.loads(needed[2].read_text())
        return cls(
            folder,
            ArithTask(**settings["task"]),
            TuningGrid(**settings["grid"]),
            int(settings["seed"]),
            int(stage_a["problems"]),
            int(stage_a["tokens_generated"]),
            json.loads(needed[1].read_text()),
        )


def evaluate_on_test(policy: Path, run: DemoRun, max_new_tokens: int) -> EvalResult:
    """Greedy accuracy on the run's test problems, exactly as the demo scores its policies."""
    generator = HFGenerator.from_pretrained(str(policy))
    return evaluate_policy(
        generator, run.task, "test", limit=run.report["test_problems"], max_new_tokens=max_new_tokens
    )


def paired(scores: dict[str, list[float]], mine: list[float]) -> dict[str, Any]:
    """Paired 95% intervals of `mine` minus each policy in `scores`, on the same test problems."""
    return {
        name: {"difference": (sum(mine) - sum(theirs)) / len(mine), "ci95": list(paired_difference_ci95(theirs, mine))}
        for name, theirs in scores.items()
    }


def rounds_key(rounds: int, variant: str | None) -> str:
    """A rounds recipe's key in `rounds/report.json`: "2", or "2 rollouts_only" for a variant."""
    return f"{rounds} {variant}" if variant else str(rounds)


def rounds_label(key: str) -> str:
    """A rounds recipe's name in tables and pictures: "DAPO, 2 rounds" or "DAPO, 2 rounds (rollouts_only)"."""
    rounds, _, variant = key.partition(" ")
    return f"DAPO, {rounds} rounds" + (f" ({variant})" if variant else "")

"""One picture of a demo run's comparison: greedy test accuracy (Wilson 95% intervals) against generated tokens, for
the start policy, one DAPO round, the outcome-only baselines, online GRPO and DAPO's rounds sweep.

Why: the methods spend their tokens differently (one round of samples and MC rollouts, or GRPO's groups), and the
question is which turns a token budget into the most accuracy. Reads `RUN/report.json`, `RUN/grpo/report.json`
(benchmarks/online_grpo.py) and `RUN/rounds/report.json` (benchmarks/dapo_rounds.py), whichever exist; writes
`RUN/compare.png` and the same figure to TensorBoard (`RUN/tb/compare`).

Run: `python -m benchmarks.compare_picture runs/demo`
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from benchmarks.demo_runs import rounds_label
from dapo.core.stats import wilson_ci95


class Point(NamedTuple):
    label: str
    tokens: int
    accuracy: float
    n: int  # test problems


def comparison_points(run: Path) -> dict[str, list[Point]]:
    """Series name -> its points (a curve for the rounds sweep, one point for the rest)."""
    report = json.loads((run / "report.json").read_text())
    n, stage_a = report["test_problems"], json.loads((run / "iterate/iter-01/stage_a/summary.json").read_text())
    tokens = int(stage_a["tokens_generated"])
    series = {"start policy": [Point("start", 0, report["start"]["accuracy"], n)]}
    for key, name in (("dapo", "DAPO, 1 round"), ("response", "response-level"), ("rft", "RFT")):
        series[name] = [Point(key, tokens, report[key]["accuracy"], n)]
    grpo = run / "grpo" / "report.json"
    if grpo.exists():
        entry = json.loads(grpo.read_text())
        chosen = next(r for r in entry["runs"] if r["lr"] == entry["grpo"]["chosen_lr"])
        final = Point("grpo", chosen["tokens"], entry["grpo"]["accuracy"], n)
        snapshots = [p for p in entry["grpo"].get("curve", []) if p["percent"] < 100]
        if snapshots:  # a curve from the start policy through the chosen lr's snapshots
            on_the_way = [Point(f"{p['percent']}%", p["tokens"], p["accuracy"], n) for p in snapshots]
            series["online GRPO"] = series["start policy"] + on_the_way + [final]
        else:
            series["online GRPO"] = [final]
    rounds = run / "rounds" / "report.json"
    if rounds.exists():
        for r, entry in json.loads(rounds.read_text())["sweep"].items():
            curve = [Point(f"round {p['round']}", p["tokens"], p["accuracy"], n) for p in entry["points"]]
            series[rounds_label(r)] = series["start policy"] + curve  # each curve starts from the start policy
    return series


MARKERS = "osD^vP*X"
NUDGE = 6.0
"""Thousands of tokens between single points drawn at one budget (one DAPO round, the baselines, GRPO), so that
points with equal accuracy stay visible side by side."""


def draw(series: dict[str, list[Point]], title: str) -> Figure:
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    singles = [name for name, points in series.items() if len(points) == 1 and points[0].tokens > 0]
    for i, (name, points) in enumerate(series.items()):
        nudge = NUDGE * (singles.index(name) - (len(singles) - 1) / 2) if name in singles else 0.0
        xs = [p.tokens / 1e3 + nudge for p in points]
        ys = [100 * p.accuracy for p in points]
        intervals = [wilson_ci95(round(p.accuracy * p.n), p.n) for p in points]
        below = [y - 100 * low for y, (low, _) in zip(ys, intervals, strict=True)]
        above = [100 * high - y for y, (_, high) in zip(ys, intervals, strict=True)]
        marker, line = MARKERS[i % len(MARKERS)], "-" if len(xs) > 1 else ""
        axes.errorbar(xs, ys, yerr=[below, above], label=name, marker=marker, capsize=3, linestyle=line)
    axes.set_xlabel("generated tokens (thousands)")
    axes.set_ylabel("greedy test accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished `dapo demo` run folder, e.g. runs/demo")
    args = parser.parse_args(argv)
    report: dict[str, Any] = json.loads((args.run / "report.json").read_text())
    figure = draw(comparison_points(args.run), f"{report['task']}, seed {report['seed']}")
    out = args.run / "compare.png"
    figure.savefig(out, dpi=120)
    with contextlib.closing(SummaryWriter(str(args.run / "tb" / "compare"))) as writer:
        writer.add_figure("compare/accuracy_vs_tokens", figure, 0)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()

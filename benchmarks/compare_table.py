"""The comparison over seeds: one column per demo run folder (a seed), every method's greedy test accuracy and its
paired difference to online GRPO and to one DAPO round, then the mean difference over seeds with a seed-level
t-interval (each seed redraws the start policy, the samples and the training; the paired intervals per seed cover
only the test problems' sampling).

Reads what `make demo` and `make compare` leave in each folder (report.json, grpo/report.json, rounds/report.json).

Run: `python -m benchmarks.compare_table runs/demo-s0 runs/demo-s1 ...`
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks.demo_runs import rounds_label
from dapo.core.stats import paired_difference_ci95, seed_level_ci95

NAMES = {
    "start": "start policy",
    "dapo": "DAPO, 1 round",
    "response": "response-level",
    "rft": "RFT",
    "grpo": "online GRPO",
}


def test_scores(run: Path) -> dict[str, list[float]]:
    """Every scored policy's per-problem test scores: the demo's, GRPO's and each rounds recipe's last round."""
    scores = dict(json.loads((run / "report.json").read_text())["test_scores"])
    scores = {key: scores[key] for key in ("start", "dapo", "response", "rft") if key in scores}
    grpo = run / "grpo" / "report.json"
    if grpo.exists():
        scores["grpo"] = json.loads(grpo.read_text())["test_scores"]
    rounds = run / "rounds" / "report.json"
    if rounds.exists():
        for r, entry in json.loads(rounds.read_text())["sweep"].items():
            scores[f"rounds{r}"] = entry["points"][-1]["test_scores"]
    return scores


def _name(key: str) -> str:
    return NAMES.get(key) or rounds_label(key.removeprefix("rounds"))


def _pct(low: float, high: float) -> str:
    return f"[{100 * low:+.1f}, {100 * high:+.1f}]"


def format_table(runs: Sequence[Path]) -> str:
    per_run = [test_scores(run) for run in runs]
    keys = [key for key in per_run[0] if all(key in scores for scores in per_run)]
    header = "| | " + " | ".join(run.name for run in runs) + " | mean over seeds [t-interval] |"
    lines = [header, "|---" * (len(runs) + 2) + "|"]
    for key in keys:
        accuracies = [sum(s[key]) / len(s[key]) for s in per_run]
        cells = " | ".join(f"{100 * a:.1f}%" for a in accuracies)
        lines.append(f"| {_name(key)} | {cells} | {100 * sum(accuracies) / len(accuracies):.1f}% |")
    for base in ("grpo", "dapo"):
        for key in (k for k in keys if k not in (base, "start")):
            if base == "dapo" and key == "grpo":
                continue
            diffs = [(sum(s[key]) - sum(s[base])) / len(s[key]) for s in per_run]
            cells = " | ".join(
                f"{100 * d:+.1f} {_pct(*paired_difference_ci95(s[base], s[key]))}"
                for d, s in zip(diffs, per_run, strict=True)
            )
            mean = f"{100 * sum(diffs) / len(diffs):+.1f} {_pct(*seed_level_ci95(diffs))}" if len(diffs) > 1 else "-"
            lines.append(f"| {_name(key)} - {_name(base)} | {cells} | {mean} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished demo run folders, one per seed")
    table = format_table(parser.parse_args(argv).runs)
    print(table)
    return table


if __name__ == "__main__":
    main()

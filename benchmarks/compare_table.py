"""The comparison over seeds: one column per demo run folder (a seed), every method's greedy test accuracy and its
paired difference to online GRPO and to one DAPO round, then the mean difference over seeds with a seed-level
t-interval (each seed redraws the start policy, the samples and the training; the paired intervals per seed cover
only the test problems' sampling).

Reads what `make demo` and `make compare` leave in each folder (report.json, grpo/report.json, rounds/report.json).
Where GRPO's report has a curve (`online_grpo --curve`: snapshots at 25/50/75% of the budget), a second table puts
each snapshot beside DAPO's R rounds after the round that ends at the same share of the rounds (round 2 of 8 at
25%), with the tokens each had generated: who is ahead at fewer tokens.

Run: `python -m benchmarks.compare_table runs/demo-s0 runs/demo-s1 ...`
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


BASES = ("grpo", "dapo")
"""What every other policy is paired against by default: online GRPO, then one DAPO round."""


def format_table(runs: Sequence[Path], bases: Sequence[str] = BASES) -> str:
    """Accuracy per seed and policy, then each policy minus each of `bases` (keys of `test_scores`, e.g. "rounds8"
    for DAPO's 8 rounds), a pair once."""
    per_run = [test_scores(run) for run in runs]
    keys = [key for key in per_run[0] if all(key in scores for scores in per_run)]
    header = "| | " + " | ".join(run.name for run in runs) + " | mean over seeds [t-interval] |"
    lines = [header, "|---" * (len(runs) + 2) + "|"]
    for key in keys:
        accuracies = [sum(s[key]) / len(s[key]) for s in per_run]
        cells = " | ".join(f"{100 * a:.1f}%" for a in accuracies)
        lines.append(f"| {_name(key)} | {cells} | {100 * sum(accuracies) / len(accuracies):.1f}% |")
    for i, base in enumerate(bases):
        for key in (k for k in keys if k not in (*bases[: i + 1], "start")):
            diffs = [(sum(s[key]) - sum(s[base])) / len(s[key]) for s in per_run]
            cells = " | ".join(
                f"{100 * d:+.1f} {_pct(*paired_difference_ci95(s[base], s[key]))}"
                for d, s in zip(diffs, per_run, strict=True)
            )
            lines.append(f"| {_name(key)} - {_name(base)} | {cells} | {_mean_cell(diffs)} |")
    return "\n".join(lines)


def fewer_tokens(run: Path, rounds: str) -> dict[int, dict[str, Any]]:
    """GRPO's snapshot at P% of the budget and DAPO's `rounds` recipe after round P% * R, per P both have ({} when
    the run has no GRPO curve or no such recipe)."""
    grpo_record, rounds_record = run / "grpo" / "report.json", run / "rounds" / "report.json"
    if not (grpo_record.exists() and rounds_record.exists()):
        return {}
    grpo = json.loads(grpo_record.read_text())["grpo"].get("curve", [])
    sweep = json.loads(rounds_record.read_text())["sweep"]
    points = sweep[rounds]["points"] if rounds in sweep else []
    pairs = {}
    for snapshot in grpo:
        after = snapshot["percent"] * len(points) / 100
        if snapshot["percent"] < 100 and "test_scores" in snapshot and after == int(after) and after >= 1:
            pairs[snapshot["percent"]] = {"grpo": snapshot, "dapo": points[int(after) - 1]}
    return pairs


def format_fewer_tokens(runs: Sequence[Path], rounds: str = "8") -> str:
    """Per seed: GRPO's snapshot and DAPO's round at the same share of the budget, accuracy (tokens), the
    difference DAPO - GRPO with its paired interval, and the mean over seeds with a t-interval."""
    per_run = [fewer_tokens(run, rounds) for run in runs]
    percents = [p for p in per_run[0] if all(p in pairs for pairs in per_run)]
    lines = ["| share of the budget | " + " | ".join(run.name for run in runs) + " | mean over seeds [t-interval] |"]
    lines.append("|---" * (len(runs) + 2) + "|")
    for percent in percents:
        pairs = [pairs[percent] for pairs in per_run]
        k = pairs[0]["dapo"]["round"]
        for who, label in (("grpo", f"online GRPO at {percent}%"), ("dapo", f"{_name('rounds' + rounds)}, round {k}")):
            cells = " | ".join(f"{100 * p[who]['accuracy']:.1f}% ({p[who]['tokens'] / 1000:.0f}K)" for p in pairs)
            mean = sum(p[who]["accuracy"] for p in pairs) / len(pairs)
            lines.append(f"| {label} | {cells} | {100 * mean:.1f}% |")
        diffs = [p["dapo"]["accuracy"] - p["grpo"]["accuracy"] for p in pairs]
        cells = " | ".join(
            f"{100 * d:+.1f} {_pct(*paired_difference_ci95(p['grpo']['test_scores'], p['dapo']['test_scores']))}"
            for d, p in zip(diffs, pairs, strict=True)
        )
        lines.append(f"| DAPO - GRPO | {cells} | {_mean_cell(diffs)} |")
    return "\n".join(lines)


def _mean_cell(diffs: Sequence[float]) -> str:
    """The mean difference over seeds with its seed-level t-interval ("-" for one seed)."""
    return f"{100 * sum(diffs) / len(diffs):+.1f} {_pct(*seed_level_ci95(diffs))}" if len(diffs) > 1 else "-"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished demo run folders, one per seed")
    parser.add_argument("--bases", nargs="+", default=list(BASES), help="policies the others are paired against")
    args = parser.parse_args(argv)
    runs = args.runs
    table = format_table(runs, args.bases)
    if all(fewer_tokens(run, "8") for run in runs):
        table += "\n\nAt fewer tokens:\n\n" + format_fewer_tokens(runs)
    print(table)
    return table


if __name__ == "__main__":
    main()

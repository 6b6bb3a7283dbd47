"""What limits the actor, measured exactly: on `arith` every line of a solution can be checked, so each action
Stage B kept gets a true label (the right next step, or not), and each policy's chance of the right step can be read
at the states that decide a problem.

From a finished demo folder (`dapo demo --out DIR`), for round 1:
- `labels`: how many kept actions are right, and how often the critic's advantage has the sign of the truth (A > 0
  for the right step, A < 0 for a wrong one), next to the sign of the MC advantage from Stage A's own rollouts
  (mean reward of the completions that start with the action, minus the state's mean);
- `targets`: the A/beta the DAPO loss aims the log-ratio at (quantiles, share beyond +-3 nats) and the share of the
  initial gradient on actions the reference policy gives under 0.1 probability (at the start the loss gradient of
  an action is proportional to |A|/beta times its share of the state's loss, its `weight` over the state's total;
  greedy decoding never picks such actions);
- `decisive`: at states whose next step needs a carry or a borrow (where the start policy slips), the mean
  probability each policy gives the right step;
- `transitions`: on the test problems, how many each method fixed (wrong -> right) and broke (right -> wrong)
  against the start policy.

    python -m dapo.pipeline.demo_diagnostics runs/demo      (writes runs/demo/diagnostics.json)

`readme_table` renders the README's demo table from the `report.json` of two or more runs (one per seed):

    python -m dapo.pipeline.demo_diagnostics --table runs/demo-s0 runs/demo-s1
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dapo.core.steps import split_steps
from dapo.records import read_records, write_json
from dapo.stages.action_selection import Candidate, ScoredAction
from dapo.stages.candidate_advantages import reference_logprobs, scoring_device
from dapo.tasks.arith import ArithTask, apply_op, carry_slip

_STEP = re.compile(r"\s*(-?\d+)\s*([-+*])\s*(\d+)\s*=\s*(-?\d+)\s*")
LOW_PROBABILITY = 0.1
FAR_TARGET = 3.0  # nats


def written_value(example: Mapping[str, Any], state_steps: Sequence[str]) -> int | None:
    """The value the state's text stands at: the start, or the result written on its last step (None: unreadable)."""
    if not state_steps:
        return int(example["start"])
    match = _STEP.fullmatch(state_steps[-1])
    return int(match.group(4)) if match else None


def right_step(example: Mapping[str, Any], state_steps: Sequence[str]) -> str | None:
    """The right next step from the state's written value: "v op n = r\\n", or "Answer: v" after the last operation."""
    value, t = written_value(example, state_steps), len(state_steps)
    if value is None:
        return None
    operations = example["operations"]
    if t >= len(operations):
        return f"Answer: {value}"
    op, n = operations[t][0], int(operations[t][1])
    return f"{value} {op} {n} = {apply_op(value, op, n)}\n"


def is_decisive(example: Mapping[str, Any], state_steps: Sequence[str]) -> bool:
    """Whether the next step needs a carry or a borrow (where the carry-slip habit strikes)."""
    value, t = written_value(example, state_steps), len(state_steps)
    if value is None or t >= len(example["operations"]):
        return False
    op, n = example["operations"][t][0], int(example["operations"][t][1])
    return carry_slip(value, op, n) != 0


def label_actions(actions: Sequence[Mapping[str, Any]], examples: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Right/wrong of every kept action, and how often the critic's advantage has the truth's sign."""
    right = agree = signed = 0
    for row in actions:
        truth = right_step(examples[row["problem_id"]], row["state_steps"])
        is_right = truth is not None and row["action"] == truth
        right += is_right
        if row["advantage"] != 0:
            signed += 1
            agree += (row["advantage"] > 0) == is_right
    return {"actions": len(actions), "right": right, "critic_sign_accuracy": agree / signed if signed else None}


def mc_sign_accuracy(
    states: Sequence[Mapping[str, Any]],
    examples: Mapping[str, Mapping[str, Any]],
    kept: set[tuple[str, str]] | None = None,
) -> float | None:
    """How often the MC advantage (mean reward of the completions starting with the step, minus the state's mean)
    has the truth's sign: over the (state_id, action) pairs in `kept` (Stage B's kept actions, the population
    `label_actions` reads the advantages' sign over), or with None over every (state, distinct first step) of Stage
    A's rollouts. Compare a critic with the rollouts only on the same population: the kept actions are not a random
    share of all first steps."""
    agree = signed = 0
    for state in states:
        if not state["completions"]:
            continue
        prefix = list(state["steps"][: state["t"]])
        truth = right_step(examples[state["problem_id"]], prefix)
        mean = sum(state["completion_rewards"]) / len(state["completions"])
        by_step: dict[str, list[float]] = {}
        for completion, reward in zip(state["completions"], state["completion_rewards"], strict=True):
            steps = split_steps(completion)
            by_step.setdefault(steps[0] if steps else "", []).append(reward)
        for step, rewards in by_step.items():
            advantage = sum(rewards) / len(rewards) - mean
            if advantage != 0 and (kept is None or (state["state_id"], step) in kept):
                signed += 1
                agree += (advantage > 0) == (step == truth)
    return agree / signed if signed else None


def loss_targets(actions: Sequence[Mapping[str, Any]], beta: float) -> dict[str, Any]:
    """A/beta quantiles, the share beyond +-FAR_TARGET nats, and the share of the initial gradient (|A|/beta times the
    action's share of its state's loss) that goes to actions the reference gives under LOW_PROBABILITY."""
    per_state: dict[str, float] = {}
    for row in actions:
        per_state[row["state_id"]] = per_state.get(row["state_id"], 0.0) + row["weight"]
    targets = sorted(row["advantage"] / beta for row in actions)
    weights = [abs(row["advantage"]) / beta * row["weight"] / per_state[row["state_id"]] for row in actions]
    low = [w for w, row in zip(weights, actions, strict=True) if math.exp(row["ref_logprob"]) < LOW_PROBABILITY]

    def quantile(q: float) -> float:
        return targets[min(len(targets) - 1, int(q * len(targets)))]

    return {
        "a_over_beta_quantiles": {str(q): quantile(q) for q in (0.05, 0.25, 0.5, 0.75, 0.95)} if targets else {},
        "share_beyond_3_nats": sum(abs(x) > FAR_TARGET for x in targets) / len(targets) if targets else None,
        "gradient_share_on_low_probability": sum(low) / sum(weights) if sum(weights) else None,
    }


def decisive_probabilities(
    states: Sequence[Mapping[str, Any]], examples: Mapping[str, Mapping[str, Any]], policies: Mapping[str, Path]
) -> dict[str, Any]:
    """Mean probability each policy gives the right next step at the decisive states of Stage A."""
    groups, seen = [], set()
    for state in states:
        prefix_steps = list(state["steps"][: state["t"]])
        example = examples[state["problem_id"]]
        key = state["prompt"] + "".join(prefix_steps)
        truth = right_step(example, prefix_steps)
        if key in seen or truth is None or not is_decisive(example, prefix_steps):
            continue
        seen.add(key)
        groups.append((key, [ScoredAction(Candidate(truth, False, 1.0), 1.0, 0.0)]))
    out: dict[str, Any] = {"states": len(groups)}
    for name, path in policies.items():
        logprobs, _ = reference_logprobs(groups, str(path), None, scoring_device(None), 8192)
        out[name] = sum(math.exp(lp[0]) for lp in logprobs) / len(logprobs) if logprobs else None
    return out


def _mc_signs(
    states: Sequence[Mapping[str, Any]],
    examples: Mapping[str, Mapping[str, Any]],
    actions: Sequence[Mapping[str, Any]],
) -> dict[str, float | None]:
    """The rollouts' sign accuracy on Stage B's kept actions (beside `critic_sign_accuracy`, the same population)
    and over every first step of Stage A."""
    kept = {(row["state_id"], row["action"]) for row in actions}
    return {
        "mc_sign_accuracy_kept": mc_sign_accuracy(states, examples, kept),
        "mc_sign_accuracy_all_steps": mc_sign_accuracy(states, examples),
    }


def transitions(start: Sequence[float], after: Sequence[float]) -> dict[str, int]:
    """Problems fixed (wrong -> right) and broken (right -> wrong) between two greedy evaluations."""
    pairs = list(zip(start, after, strict=True))
    return {"fixed": sum(a < 0.5 <= b for a, b in pairs), "broken": sum(b < 0.5 <= a for a, b in pairs)}


def diagnose(demo_dir: str | Path) -> dict[str, Any]:
    """The diagnostics above for a finished demo folder; written to `demo_dir/diagnostics.json`."""
    out = Path(demo_dir)
    report = json.loads((out / "report.json").read_text())
    settings = json.loads((out / "demo.json").read_text())
    task = ArithTask(**settings["task"])
    examples = {ex["id"]: ex for ex in task.load("train")}
    round_dir = out / "iterate" / "iter-01"
    actions = list(read_records(round_dir / "stage_b" / "actions", "actions"))
    states = list(read_records(round_dir / "stage_a" / "states", "states"))
    beta = _beta(round_dir)
    policies = {"start": Path(report["start"]["path"])} | {
        m: Path(report[m]["path"]) for m in ("dapo", "response", "rft")
    }
    result = {
        "labels": label_actions(actions, examples) | _mc_signs(states, examples, actions),
        "targets": loss_targets(actions, beta) | {"beta": beta},
        "decisive": decisive_probabilities(states, examples, policies),
    }
    if "test_scores" in report:
        start = report["test_scores"]["start"]
        result["transitions"] = {m: transitions(start, report["test_scores"][m]) for m in ("dapo", "response", "rft")}
    write_json(out / "diagnostics.json", result)
    return result


def _beta(round_dir: Path) -> float:
    """The beta the round's actor trained with (from the fit config LightningCLI saved beside its logs)."""
    config = yaml.safe_load(next((round_dir / "actor").glob("**/config.yaml")).read_text())
    return float(config["model"]["init_args"]["beta"])


ROWS = (
    ("start policy", "start"),
    ("DAPO, 1 round", "dapo"),
    ("response-level baseline", "response"),
    ("RFT baseline", "rft"),
)
DIFFERENCE_ROWS = (
    ("DAPO - start", "dapo_minus_start"),
    ("DAPO - response-level", "dapo_minus_response"),
    ("DAPO - RFT", "dapo_minus_rft"),
    ("response-level - start", "response_minus_start"),
    ("RFT - start", "rft_minus_start"),
)


ROUND_2_ROWS = (("DAPO, round 2", "dapo_round2"),)
ROUND_2_DIFFERENCE_ROWS = (
    ("DAPO round 2 - DAPO", "dapo_round2_minus_dapo"),
    ("DAPO round 2 - response-level", "dapo_round2_minus_response"),
    ("DAPO round 2 - RFT", "dapo_round2_minus_rft"),
)


def readme_table(reports: Sequence[Mapping[str, Any]]) -> str:
    """The README's markdown table of demo runs, one column per run (round 2's rows when every run has one)."""
    round_2 = all("dapo_round2" in r for r in reports)
    rows = ROWS + (ROUND_2_ROWS if round_2 else ())
    difference_rows = DIFFERENCE_ROWS + (ROUND_2_DIFFERENCE_ROWS if round_2 else ())

    def accuracy(entry: Mapping[str, Any]) -> str:
        low, high = entry["ci95"]
        return f"{100 * entry['accuracy']:.1f}% [{100 * low:.1f}, {100 * high:.1f}] ({entry['chosen']})"

    def difference(entry: Mapping[str, Any]) -> str:
        low, high = entry["ci95"]
        return f"{100 * entry['difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"

    lines = ["| | " + " | ".join(f"seed {r['seed']}" for r in reports) + " |", "|---" * (len(reports) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(accuracy(r[key]) for r in reports) + " |" for name, key in rows]
    lines += [f"| {name} | " + " | ".join(difference(r[key]) for r in reports) + " |" for name, key in difference_rows]
    stages = " / ".join(reports[0]["stages"])
    lines.append(
        f"| seconds: {stages} | "
        + " | ".join(" / ".join(f"{s:.0f}" for s in r["stages"].values()) for r in reports)
        + " |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        print(readme_table([json.loads((Path(d) / "report.json").read_text()) for d in sys.argv[2:]]))
    else:
        print(json.dumps(diagnose(sys.argv[1]), indent=2))

"""Record builders shared by tests (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from dapo.cli import cli_main
from dapo.core.steps import join_steps, split_steps
from dapo.tasks import ArithTask


def reference_state_rows(task: ArithTask, n: int, value: Callable[[int, int], float]) -> list[dict]:
    """Rows for s_0..s_T of the reference solutions of `n` train problems; `value(t, T)` is each MC value."""
    rows = []
    for ex in list(task.load("train"))[:n]:
        steps = split_steps(task.reference_solution(ex))
        for t in range(len(steps) + 1):
            rows.append(
                {
                    "state_id": f"{ex['id']}/s0/t{t}",
                    "problem_id": ex["id"],
                    "solution_id": f"{ex['id']}/s0",
                    "t": t,
                    "prompt": task.prompt(ex),
                    "steps": steps,
                    "mc_value": value(t, len(steps)),
                    "n_rollouts": 4 * (t < len(steps)),
                    "completions": [],
                    "completion_rewards": [],
                    "completion_truncated": [],
                }
            )
    return rows


def candidate_state_rows(arith: ArithTask, n: int) -> list[dict]:
    """State t = 1 of the reference solution of `n` problems, with hand-made completions: the right rest of the
    solution, a wrong rest, the final line alone, an early stop, and a repeat of the first."""
    rows = []
    for ex in list(arith.load("train"))[:n]:
        steps = split_steps(arith.reference_solution(ex))
        right = join_steps(steps[1:])
        wrong = "1 + 1 = 3\n" + steps[-1]
        completions = [right, wrong, steps[-1], "", right]
        rows.append(
            {
                "state_id": f"{ex['id']}/s0/t1",
                "problem_id": ex["id"],
                "solution_id": f"{ex['id']}/s0",
                "t": 1,
                "prompt": arith.prompt(ex),
                "steps": steps,
                "mc_value": 0.5,
                "n_rollouts": len(completions),
                "completions": completions,
                "completion_rewards": [1.0, 0.0, 1.0, 0.0, 1.0],
                "completion_truncated": [False] * len(completions),
            }
        )
    return rows


def reference_action_rows(task: ArithTask, n: int, repeat_first: bool = True) -> list[dict]:
    """Actions at state t = 1 of the reference solutions of `n` problems: the right next step, a wrong one, and
    (with `repeat_first`) the right one again; advantages 0.1 k and reference log-probs -1 - k for candidate k."""
    rows = []
    for ex in list(task.load("train"))[:n]:
        steps = split_steps(task.reference_solution(ex))
        actions = [steps[1], "9 + 9 = 18\n", *([steps[1]] if repeat_first else [])]
        for k, action in enumerate(actions):
            rows.append(
                {
                    "state_id": f"{ex['id']}/t1",
                    "problem_id": ex["id"],
                    "prompt": task.prompt(ex),
                    "state_steps": steps[:1],
                    "action": action,
                    "value": 0.5,
                    "advantage": 0.1 * k,
                    "is_terminal": False,
                    "ref_logprob": -1.0 - k,
                    "weight": 1.0,
                }
            )
    return rows


def iterate_in_miniature(run_root: str, policy: str | Path, iterate_config: Path, overlay: dict) -> Path:
    """One `dapo iterate` round of a recipe's `iterate_config`, in the current folder, with `policy` placed where
    the recipe looks for it (`run_root/policy`) and `overlay` shrinking it; returns the round's folder."""
    Path(run_root).mkdir(parents=True)
    Path(run_root, "policy").symlink_to(policy)
    Path("miniature.yaml").write_text(yaml.safe_dump(overlay))
    cli_main(["iterate", "--config", str(iterate_config), "--config", "miniature.yaml"])
    return Path(run_root, "iterate/iter-01")

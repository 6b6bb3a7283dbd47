"""Record builders shared by tests (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from collections.abc import Callable

from dapo.steps import split_steps
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
                }
            )
    return rows

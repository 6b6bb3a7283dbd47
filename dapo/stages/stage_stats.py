"""What Stage A and Stage B made, in numbers a TensorBoard run shows beside the fit that follows them.

Stage A: the solve rate of the policy from the prompt (the mean reward of the first state's rollouts: samples of
the policy, unlike the kept solutions, which are balanced) and the mean MC value of the states at each step t.
Stage B: the share of states kept (a state is dropped when its candidates' advantage gap is under `min_gap`) and
every kept state's gap max A - min A.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dapo.records import read_records


def solve_rate(states: Iterable[Mapping[str, Any]]) -> float | None:
    """Mean reward of the rollouts from the prompt (states at t = 0); None without any."""
    rewards = [r for s in states if s["t"] == 0 for r in s["completion_rewards"]]
    return sum(rewards) / len(rewards) if rewards else None


def mc_value_by_step(states: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Mean MC value of the states at each step t (t = 0: the prompt)."""
    by_step: dict[int, list[float]] = {}
    for s in states:
        by_step.setdefault(int(s["t"]), []).append(float(s["mc_value"]))
    return {t: sum(v) / len(v) for t, v in sorted(by_step.items())}


def advantage_gaps(actions: Iterable[Mapping[str, Any]]) -> list[float]:
    """max A - min A of every state that kept actions."""
    by_state: dict[str, list[float]] = {}
    for a in actions:
        by_state.setdefault(a["state_id"], []).append(float(a["advantage"]))
    return [max(v) - min(v) for v in by_state.values()]


def stage_a_stats(out_dir: str | Path) -> dict[str, Any]:
    states = list(read_records(Path(out_dir) / "states", "states"))
    return {"solve_rate": solve_rate(states), "mc_value_by_step": mc_value_by_step(states)}


def stage_b_stats(out_dir: str | Path, states_scored: int) -> dict[str, Any]:
    gaps = advantage_gaps(read_records(Path(out_dir) / "actions", "actions"))
    return {"states_kept": len(gaps) / states_scored if states_scored else None, "gaps": gaps}

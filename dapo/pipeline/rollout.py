"""`dapo rollout`: Stage A on its own (the critic fit runs the same Stage A at its start; see dapo.stages.stage_a)."""

from __future__ import annotations

from pathlib import Path

from dapo.stages.stage_a import StageA, ensure_states


def rollout(stage_a: StageA) -> Path:
    """Run Stage A: sample solutions, keep a balanced few, MC-estimate every state's value.

    Args:
        stage_a: policy, problems, output folder, sample and rollout counts, sampling settings.
    """
    return ensure_states(stage_a)

"""`dapo advantages`: Stage B scoring on its own (the actor fit runs the same scoring at its start; see
dapo.stages.stage_b)."""

from __future__ import annotations

from pathlib import Path

from dapo.stages.candidate_advantages import AdvantageConfig
from dapo.stages.stage_b import ensure_actions


def advantages(advantages: AdvantageConfig) -> Path:
    """Stage B scoring: critic values of candidate actions, advantages, reference log-probs.

    Args:
        advantages: states, critic, reference policy, output folder, gap filter and terminal handling.
    """
    return ensure_actions(advantages)

"""Lightning callbacks (installed as dapo.callbacks): Stage A rollouts and benchmark evaluation."""

from .step_value_rollout import StageA, StepValueRollout

__all__ = ["StageA", "StepValueRollout"]

"""Lightning callbacks (installed as dapo.callbacks): Stage A rollouts, Stage B scoring, benchmark evaluation,
step checkpoints, and the guards both modules install (non-finite steps, RNG state in checkpoints)."""

from .benchmark_eval import BenchmarkEval
from .checkpoints import StepCheckpoint
from .step_advantages import StepAdvantages
from .step_value_rollout import StageA, StepValueRollout
from .training_guards import NonFiniteGuard, RngCheckpoint

__all__ = [
    "BenchmarkEval",
    "NonFiniteGuard",
    "RngCheckpoint",
    "StageA",
    "StepAdvantages",
    "StepCheckpoint",
    "StepValueRollout",
]

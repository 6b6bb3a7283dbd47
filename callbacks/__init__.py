"""Lightning callbacks (installed as dapo.callbacks): Stage A and Stage B at fit start (thin wrappers around
dapo.stages), benchmark evaluation, and step checkpoints. The guards both modules install (non-finite steps, RNG
state in checkpoints) live with the modules in dapo.training and are re-exported here for configs."""

from dapo.training.guard_callbacks import NonFiniteGuard, RngCheckpoint

from .benchmark_eval import BenchmarkEval
from .checkpoints import StepCheckpoint
from .step_advantages import StepAdvantages
from .step_value_rollout import StageA, StepValueRollout

__all__ = [
    "BenchmarkEval",
    "NonFiniteGuard",
    "RngCheckpoint",
    "StageA",
    "StepAdvantages",
    "StepCheckpoint",
    "StepValueRollout",
]

"""Lightning callbacks (installed as dapo.callbacks): Stage A rollouts, Stage B scoring, benchmark evaluation."""

from .benchmark_eval import BenchmarkEval
from .step_advantages import StepAdvantages
from .step_value_rollout import StageA, StepValueRollout

__all__ = ["BenchmarkEval", "StageA", "StepAdvantages", "StepValueRollout"]

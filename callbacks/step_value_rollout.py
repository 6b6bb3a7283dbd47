"""StepValueRollout: Stage A (`dapo.stages.stage_a.ensure_states`) at fit start, so
`dapo fit --config configs/critic.yaml` goes from problems to a trained critic in one command; the CLI adds it when
the config's `stage_a.policy_path` is set.
"""

from __future__ import annotations

import lightning as L

from dapo.stages.stage_a import StageA, ensure_states

from .stage_logging import log_stage_a

__all__ = ["StageA", "StepValueRollout"]


class StepValueRollout(L.Callback):
    """Runs Stage A at fit start when the states for the current policy are missing, stale or unfinished."""

    def __init__(self, spec: StageA) -> None:
        self.spec = spec

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ensure_states(self.spec)
        log_stage_a(trainer, self.spec.rollout.out_dir)  # solve rate, MC value by step

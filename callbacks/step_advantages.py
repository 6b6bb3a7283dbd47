"""StepAdvantages: Stage B scoring (`dapo.stages.stage_b.ensure_actions`) at fit start, so `dapo fit --config
configs/actor.yaml` goes from Stage A states and a critic to a trained actor in one command; the CLI adds it when the
config's `advantages.critic_path` is set.
"""

from __future__ import annotations

import lightning as L

from dapo.stages.candidate_advantages import AdvantageConfig
from dapo.stages.stage_b import ensure_actions

from .stage_logging import log_stage_b


class StepAdvantages(L.Callback):
    """Scores advantages and reference log-probs at fit start when the actions are missing or stale."""

    def __init__(self, config: AdvantageConfig) -> None:
        self.config = config

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ensure_actions(self.config)
        log_stage_b(trainer, self.config.out_dir)  # share of states kept, advantage gaps

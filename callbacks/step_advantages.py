"""StepAdvantages: make sure the actor's training data (Stage B actions) exists for the current critic and policy.

At fit start it checks `advantages.out_dir`: if scoring finished there with the same settings, critic and
reference policy (by weight hash), it does nothing; if any of them changed, the old folder is moved aside
(`<out_dir>.stale-<time>`) and scoring runs again. With several processes each scores its share of the batches
(`dapo.scoring.score_groups`) and rank 0 alone moves old output aside and writes, between barriers.
This lets `dapo fit --config configs/actor.yaml` go from Stage A states and a critic to a trained actor in one
command; the CLI adds the callback when the config's `advantages.critic_path` is set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from dapo.advantages import AdvantageConfig, provenance_config, run_advantages
from dapo.distributed import barrier, world
from dapo.records import move_aside, read_provenance

log = logging.getLogger(__name__)


def advantages_status(config: AdvantageConfig) -> str:
    """ "done" (finished with these settings, critic and policy), "stale" (made otherwise) or "missing"."""
    out = Path(config.out_dir)
    if not (out / "summary.json").exists():
        return "missing"
    return "done" if read_provenance(out / "actions").config == provenance_config(config) else "stale"


def ensure_actions(config: AdvantageConfig) -> Path:
    """Run Stage B scoring unless its output for this critic and policy is complete; return the actions folder.

    Called by every process of a distributed run (or by one alone): they split the scoring between them."""
    if config.critic_path is None:
        raise ValueError("scoring advantages needs advantages.critic_path: the trained critic (a `dapo export`)")
    out = Path(config.out_dir)
    status = advantages_status(config)
    barrier()  # every rank has read the status before rank 0 changes anything
    if status == "done":
        log.info("Stage B actions in %s are up to date", out)
        return out / "actions"
    if world()[0] == 0 and (status == "stale" or out.exists()):
        move_aside(out, "holds actions made with another critic, policy or settings (or unfinished)")
    run_advantages(config)
    barrier()  # rank 0 has written the actions
    return out / "actions"


class StepAdvantages(L.Callback):
    """Scores advantages and reference log-probs at fit start when the actions are missing or stale."""

    def __init__(self, config: AdvantageConfig) -> None:
        self.config = config

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ensure_actions(self.config)

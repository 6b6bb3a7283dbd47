"""Stage B scoring as one call: `ensure_actions` makes sure the actor's training data (actions with advantages and
reference log-probs) exists for a critic and policy. `dapo advantages` and the StepAdvantages callback call it.

It checks `advantages.out_dir`: if scoring finished there with the same settings, critic and reference policy (by
weight hash), it does nothing; if any of them changed, the old folder is moved aside (`<out_dir>.stale-<time>`) and
scoring runs again. With several processes each scores its share of the batches (`dapo.models.outputs.score_groups`) and
rank 0 alone moves old output aside and writes, between barriers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dapo.core.distributed import barrier, world
from dapo.core.errors import check_model_folder, make_critic
from dapo.records import move_aside, read_provenance
from dapo.stages.candidate_advantages import AdvantageConfig, provenance_config, run_advantages

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
    check_model_folder(config.critic_path, "advantages.critic_path", make_critic)
    check_model_folder(config.policy_path, "advantages.policy_path")
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

"""StepValueRollout: make sure the critic's training data (Stage A states) exists for the current policy.

At fit start it checks `rollout.out_dir`: if Stage A finished there with the same policy (by weight hash), it
does nothing; if it was made by another policy or with other settings, the old folder is moved aside
(`<out_dir>.stale-<time>`) and
Stage A runs again; an unfinished run resumes shard by shard. If the problems file is missing, the task's
train split is written first. Only global rank 0 generates; the others wait at a barrier. This lets
`dapo fit --config configs/critic.yaml` go from problems to a trained critic in one command; the CLI adds the
callback when the config's `stage_a.policy_path` is set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L

from dapo.records import move_aside, read_provenance
from dapo.rollout import RolloutConfig, policy_fingerprint, run_rollouts
from dapo.tasks import ArithTask, Task, write_problems

log = logging.getLogger(__name__)


@dataclass
class StageA:
    """Stage A settings: who generates, on which problems, how much."""

    policy_path: str | None = None
    """Hugging Face folder of the reference policy that samples and completes solutions (None: no Stage A)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Problems, output folder, n_samples / n_keep / n_rollouts and sampling."""
    task: Task | None = None
    """The task that grades responses (and writes the problems file when it is missing); None: `ArithTask()`."""
    batch_size: int = 64
    """Sequences per generate call."""
    shared_prefix: bool = True
    """Encode each state once and reuse its KV cache for all its rollouts."""


def stage_a_status(rollout: RolloutConfig, policy_hash: str) -> str:
    """ "done" (finished by this policy and config), "stale" (made by another policy or with other settings),
    "partial" (same policy and settings, unfinished: resumable) or "missing"."""
    out_dir = Path(rollout.out_dir)
    states = out_dir / "states"
    if not states.exists() or not any(states.iterdir()):
        return "missing"
    made = read_provenance(states)
    if made.policy_hash != policy_hash or made.config != asdict(rollout):
        return "stale"
    return "done" if (out_dir / "summary.json").exists() else "partial"


def ensure_states(spec: StageA) -> Path:
    """Run (or resume) Stage A unless its output for this policy is complete; return the states folder."""
    from dapo.generation import HFGenerator

    if spec.policy_path is None:
        raise ValueError("Stage A needs stage_a.policy_path: the policy that samples solutions")
    out = Path(spec.rollout.out_dir)
    policy_hash = policy_fingerprint(spec.policy_path)
    status = stage_a_status(spec.rollout, policy_hash)
    if status == "done":
        log.info("Stage A states for policy %s are up to date in %s", policy_hash, out)
        return out / "states"
    if status == "stale":
        move_aside(out, "holds Stage A made by another policy or with other settings")
    if not Path(spec.rollout.problems_path).exists():
        write_problems(spec.task or ArithTask(), spec.rollout.problems_path, "train")
    generator = HFGenerator.from_pretrained(
        spec.policy_path, batch_size=spec.batch_size, shared_prefix=spec.shared_prefix
    )
    summary = run_rollouts(spec.rollout, generator, spec.task or ArithTask(), spec.policy_path, policy_hash)
    log.info("Stage A: %s", json.dumps(asdict(summary)))
    return out / "states"


class StepValueRollout(L.Callback):
    """Runs Stage A at fit start when the states for the current policy are missing, stale or unfinished."""

    def __init__(self, spec: StageA) -> None:
        self.spec = spec

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            ensure_states(self.spec)
        trainer.strategy.barrier("step_value_rollout")

"""Stage A as one call: `ensure_states` makes sure the critic's training data (states with MC values) exists for a
policy, and `StageA` holds its settings. `dapo rollout` and the StepValueRollout callback (at `dapo fit` start) call it.

It checks `rollout.out_dir`: if Stage A finished there with the same policy (by weight hash) and settings, it does
nothing; if it was made by another policy or with other settings, the old folder is moved aside
(`<out_dir>.stale-<time>`) and Stage A runs again; an unfinished run resumes shard by shard. If the problems file is
missing, the task's train split is written first. With several processes each one loads the policy and rolls out
its share of the shards (shard i on rank i % world); rank 0 alone moves, writes the problems and the summary,
between barriers. A shard's records do not depend on which rank made it, so 1 or N processes give the same states.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from transformers import AutoTokenizer

from dapo.core.distributed import barrier, gather, world
from dapo.core.errors import check_model_folder
from dapo.core.fingerprint import policy_fingerprint
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.protocol import Generator
from dapo.generation.vllm_generator import VLLMGenerator
from dapo.models.adapters import LoadIn
from dapo.models.memory import AttnImplementation, check_attention
from dapo.records import move_aside, read_provenance
from dapo.stages.mc_rollouts import RolloutConfig, roll_out_shards, write_summary
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
    load_in: LoadIn | None = None
    """Load the policy in "8bit" or "4bit" (nf4) through bitsandbytes for sampling (less memory, other samples)."""
    attn_implementation: AttnImplementation = "sdpa"
    """Attention kernel of the HF policy: "sdpa", "eager" or "flash_attention_2" (needs `flash-attn`, a GPU)."""
    backend: Literal["hf", "vllm"] = "hf"
    """Generation engine: "hf" (transformers, shared-prefix KV reuse) or "vllm" (`pip install "dapo[vllm]"`, GPU
    only, prefix caching; `batch_size`, `shared_prefix` and `load_in` do not apply)."""
    chat_template: bool = False
    """Write missing problems with the policy tokenizer's chat template (instruct models); plain prompts if False."""

    def __post_init__(self) -> None:
        check_attention(self.attn_implementation)


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
    """Run (or resume) Stage A unless its output for this policy is complete; return the states folder.

    Called by every process of a distributed run (or by one alone): they split the shards between them."""
    if spec.policy_path is None:
        raise ValueError("Stage A needs stage_a.policy_path: the policy that samples solutions")
    check_model_folder(spec.policy_path, "stage_a.policy_path")
    rank, world_size = world()
    out, task = Path(spec.rollout.out_dir), spec.task or ArithTask()
    policy_hash = policy_fingerprint(spec.policy_path)
    status = stage_a_status(spec.rollout, policy_hash)
    barrier()  # every rank has read the status before rank 0 changes anything
    if status == "done":
        log.info("Stage A states for policy %s are up to date in %s", policy_hash, out)
        return out / "states"
    if rank == 0:
        if status == "stale":
            move_aside(out, "holds Stage A made by another policy or with other settings")
        if not Path(spec.rollout.problems_path).exists():
            tokenizer = AutoTokenizer.from_pretrained(spec.policy_path) if spec.chat_template else None
            write_problems(task, spec.rollout.problems_path, "train", tokenizer=tokenizer)
    barrier()
    work = roll_out_shards(spec.rollout, _generator(spec), task, spec.policy_path, policy_hash, rank, world_size)
    works = gather(work, world_size)  # also waits until every rank has written its shards
    if rank == 0:
        log.info("Stage A: %s", json.dumps(asdict(write_summary(spec.rollout, task, works))))
    barrier()
    return out / "states"


def _generator(spec: StageA) -> Generator:
    assert spec.policy_path is not None
    if spec.backend == "vllm":
        return VLLMGenerator.from_pretrained(spec.policy_path, seed=spec.rollout.seed)
    return HFGenerator.from_pretrained(
        spec.policy_path,
        load_in=spec.load_in,
        attn_implementation=spec.attn_implementation,
        batch_size=spec.batch_size,
        shared_prefix=spec.shared_prefix,
    )

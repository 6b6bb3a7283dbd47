"""Where Stage A's shards live on disk and whether an earlier run's can be kept: a shard is finished iff its states
folder exists; a finished shard must match the current config (`asdict(RolloutConfig)`) and policy, and temp folders
a killed writer left are cleared. Seeds derive from the shard index, so a shard's output never depends on which
process or run made it."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dapo.records import SHARD_PREFIX, read_provenance


def finished_shards(
    out: Path, shards: Sequence[int], config: dict[str, Any], policy_hash: str, defaults: dict[str, Any] | None = None
) -> set[int]:
    """Those of `shards` an earlier run finished (checked to match), after clearing their stale temp folders.
    `defaults`: the config's default values, read for options a shard written by an older dapo does not record."""
    remove_temp_dirs(out, shards)
    finished = {i for i in shards if shard_dir(out, "states", i).is_dir()}
    for i in sorted(finished):
        check_resumable(shard_dir(out, "states", i), config, policy_hash, defaults)
    return finished


def derive_seed(seed: int, shard: int, phase: str) -> int:
    """A 31-bit seed for one phase ("sample", "keep", "rollout") of one shard, stable across runs and resumes."""
    digest = hashlib.sha256(f"{seed}/{shard}/{phase}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def shard_dir(out: Path, kind: str, index: int) -> Path:
    return out / kind / f"{SHARD_PREFIX}{index:05d}"


def check_resumable(
    shard: Path, config: dict[str, Any], policy_hash: str, defaults: dict[str, Any] | None = None
) -> None:
    """Refuse to resume over a finished shard made with another config (out_dir aside) or another policy. An option
    the shard does not record (added to dapo after it was written) counts as its default from `defaults`."""
    provenance = read_provenance(shard)
    ours = {k: v for k, v in config.items() if k != "out_dir"}
    theirs = {k: v for k, v in ((defaults or {}) | provenance.config).items() if k != "out_dir"}
    changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if changed:
        raise ValueError(f"{shard} was made with a different config ({', '.join(changed)}); use a new out_dir")
    if policy_hash and provenance.policy_hash and policy_hash != provenance.policy_hash:
        raise ValueError(
            f"{shard} was made by policy {provenance.policy_hash}, not the current {policy_hash}; use a new out_dir"
        )


def remove_temp_dirs(out: Path, shards: Sequence[int]) -> None:
    """Delete temp folders a killed writer left for `shards` in `solutions/` and `states/` (never read, only disk
    space); other processes' shards are left alone, they may be writing them right now."""
    for kind in ("solutions", "states"):
        for i in shards:
            for tmp in (out / kind).glob(f".{shard_dir(out, kind, i).name}.tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)

"""`RolloutConfig`: every setting of Stage A (solution sampling, MC rollouts, reuse, adaptive allocation), checked
when built. Its own module so that the sampling (`mc_rollouts`) and the state roll-outs (`state_rollouts`) both read
it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

from dapo.core.steps import DEFAULT_DELIMITER


@dataclass
class RolloutConfig:
    """Stage A: solution sampling and MC rollouts (defaults from the paper)."""

    problems_path: str = ""
    """Folder of `problems` records to roll out."""
    out_dir: str = ""
    """Output folder: `solutions/` and `states/` (one `shard-NNNNN` per shard) and `summary.json`."""
    n_samples: int = 32
    """Solutions sampled per problem."""
    n_keep: int = 6
    """Solutions kept per problem, balanced between correct and wrong."""
    n_rollouts: int = 16
    """Completions sampled from every non-terminal state to estimate its value."""
    temperature: float = 1.0
    """Sampling temperature for solutions and rollouts."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    max_new_tokens: int = 256
    """Cap on generated tokens per solution or completion."""
    delimiter: str = DEFAULT_DELIMITER
    """Step delimiter used to split solutions into steps."""
    problems_per_shard: int = 16
    """Problems per shard: the unit of writing and of resuming."""
    seed: int = 0
    """Base seed; each shard derives its sampling seeds from it, so a resumed run equals an uninterrupted one."""
    limit: int | None = None
    """Use only the first `limit` problems (None = all), counted from `skip`."""
    skip: int = 0
    """Leave out the first `skip` problems: `dapo iterate --problems_per_round` sets it so that each round takes the
    next slice of the problems instead of the same ones again."""
    strict: bool = True
    """Raise on a malformed problem (empty prompt, repeated id, bad `example` JSON); False: skip it and report."""
    reuse_rollouts: bool = False
    """Count a rollout from s_t whose first step is the solution's own next step as a rollout from s_{t+1} too, and
    sample only the rest of s_{t+1}'s `n_rollouts` (unbiased: `dapo.stages.rollout_reuse`; one that `max_new_tokens`
    cut off is first resumed up to the cap of a fresh rollout from s_{t+1}, which needs `Generator.count_tokens`).
    States are then rolled out one step index at a time, a `generate` call per index and count (and per resume
    budget), instead of one call per shard."""
    adaptive_width: float | None = None
    """Stop adding rollouts to a state once the Wilson 95% interval of its value is narrower than this (at most
    `n_rollouts`, in chunks of `adaptive_min_rollouts`); None: every state gets `n_rollouts`. Unlike reuse this is not
    unbiased: when to stop depends on the outcomes seen (the size of the bias is measured in
    tests/test_rollout_reuse.py)."""
    adaptive_min_rollouts: int = 4
    """With `adaptive_width`: rollouts every state gets first, and the chunk added while its interval is too wide."""

    def __post_init__(self) -> None:
        for name in ("n_samples", "n_keep", "n_rollouts", "max_new_tokens", "problems_per_shard"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_keep > self.n_samples:
            raise ValueError(f"n_keep ({self.n_keep}) must be <= n_samples ({self.n_samples})")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.delimiter:
            raise ValueError("delimiter must be a non-empty string")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if self.skip < 0:
            raise ValueError(f"skip must be >= 0, got {self.skip}")
        if self.adaptive_width is not None and not 0 < self.adaptive_width <= 1:
            raise ValueError(f"adaptive_width must be in (0, 1] or None, got {self.adaptive_width}")
        if self.adaptive_width is not None and not 1 <= self.adaptive_min_rollouts <= self.n_rollouts:
            raise ValueError(
                f"adaptive_min_rollouts must be in 1..n_rollouts ({self.n_rollouts}), got {self.adaptive_min_rollouts}"
            )

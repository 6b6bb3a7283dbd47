"""The compute model behind `dapo plan`: tokens and FLOPs of each stage of one DAPO round, as pure arithmetic.

Notation (per round): P problems, n = n_samples, k = n_keep, r = n_rollouts, T steps per solution, tau tokens per
step, p prompt tokens, u = share of candidate actions that are distinct, f = share of states kept by the gap
filter, e = epochs, v = validation share. Kept solutions K = P k; a solution has states s_0..s_{T-1} with
rollouts (s_T is terminal), s_t holding p + t tau tokens and leaving (T - t) tau to write.

  sampling     processed P p (each prompt encoded once)             generated P n (T tau + 1)
  MC rollouts  processed K (T p + tau T (T - 1) / 2)                 generated K r (tau T (T + 1) / 2 + T)
  critic       trained (1 - v) e K (p + T tau); with prompt trees (data.pack_prompts) (1 - v) e P (p + k T tau)
  scoring      critic K (T p + tau T (T - 1) / 2 + T r u tau), reference f times that
  actor        trained (1 - v) e f K (T p + tau T (T - 1) / 2 + T r u tau)

(+1 and + T are end-of-sequence tokens; a state's prefix is encoded once for all its samples, rollouts and
candidates, as dapo does.) The rollouts' T^2 term is why Stage A dominates.

FLOPs: 2 N per token forward and 6 N trained (N = parameters used in matrix products, the LM head included), plus
attention: 4 L d c per token forward (3x trained), c = the token's context, taken as the mean over the stage.
Hardware time = FLOPs / (peak x utilisation), utilisation given separately for generation, scoring and training.
Left out: validation passes, evaluation, padding, and tokens the policy writes past a solution's end. With
`reuse_rollouts` the MC rollouts' generated tokens are an upper bound: the share reused depends on the policy
(38-51% on the demo; docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """What one round processes: counts from the configs, averages from the data (or assumed)."""

    problems: int
    n_samples: int
    n_keep: int
    n_rollouts: int
    steps: float
    tokens_per_step: float
    prompt_tokens: float
    critic_epochs: int = 1
    actor_epochs: int = 1
    critic_val_fraction: float = 0.0
    actor_val_fraction: float = 0.0
    unique_actions: float = 1.0
    states_kept: float = 1.0
    critic_prompt_trees: bool = False
    """The critic trains on prompt trees (`data.pack_prompts`): each problem's prompt once for its k solutions."""
    reuse_rollouts: bool = False
    """Stage A reuses rollouts: its generated tokens are then at most the planned ones."""


@dataclass(frozen=True)
class ModelShape:
    """Parameters in matrix products (N), decoder blocks (L) and width (d); the rest sizes memory (`plan_memory`)."""

    params: float
    """Parameters in matrix products, the LM head included (an untied input embedding is not)."""
    layers: int
    """Decoder blocks."""
    hidden: int
    """Width of the residual stream."""
    vocab: int = 0
    """Vocabulary size (0: the logits are left out of the memory estimate)."""
    heads: int = 1
    """Attention heads."""
    kv_heads: int = 0
    """Key/value heads (0: as many as `heads`)."""
    intermediate: int = 0
    """Width of the MLP (0: 4 x hidden)."""
    embedding: float = 0.0
    """Parameters of an untied input embedding (V d), 0 when it is tied to the LM head."""

    @property
    def kv_hidden(self) -> float:
        """Width of the keys and of the values: d x kv_heads / heads."""
        return self.hidden * (self.kv_heads or self.heads) / self.heads

    @property
    def ffn(self) -> int:
        return self.intermediate or 4 * self.hidden


@dataclass(frozen=True)
class StageCost:
    """Tokens a stage runs through and its FLOPs: `processed` are read (prompts and states encoded, sequences
    scored or trained on), `generated` are written one at a time."""

    stage: str
    kind: str  # "generate", "score" or "train": which utilisation applies
    processed: float
    generated: float
    flops: float

    @property
    def tokens(self) -> float:
        return self.processed + self.generated


def _state_prefixes(w: Workload) -> float:
    """Tokens of all rollout states of one solution: sum over t < T of (p + t tau)."""
    return w.steps * w.prompt_tokens + w.tokens_per_step * w.steps * (w.steps - 1) / 2


def _state_groups(w: Workload) -> float:
    """Packed tokens of one solution's states with their candidates: prefixes + T r u tau."""
    return _state_prefixes(w) + w.steps * w.n_rollouts * w.unique_actions * w.tokens_per_step


def _forward_flops(model: ModelShape, tokens: float, context: float) -> float:
    """2 N + 4 L d c per token."""
    return tokens * (2 * model.params + 4 * model.layers * model.hidden * context)


def stage_costs(w: Workload, model: ModelShape) -> list[StageCost]:
    """Tokens and FLOPs of sampling, MC rollouts, critic training, scoring and actor training for one round."""
    T, tau, p = w.steps, w.tokens_per_step, w.prompt_tokens
    kept = w.problems * w.n_keep
    solution, mid_state = p + T * tau, p + T * tau / 2  # a whole solution; the mean state
    sample_in, sample_out = w.problems * p, w.problems * w.n_samples * (T * tau + 1)
    rollout_in, rollout_out = kept * _state_prefixes(w), kept * w.n_rollouts * (tau * T * (T + 1) / 2 + T)
    trajectories = w.problems * (p + w.n_keep * T * tau) if w.critic_prompt_trees else kept * solution
    critic = (1 - w.critic_val_fraction) * w.critic_epochs * trajectories
    scoring = kept * _state_groups(w) * (1 + w.states_kept)
    actor = (1 - w.actor_val_fraction) * w.actor_epochs * w.states_kept * kept * _state_groups(w)
    return [
        StageCost(
            "sampling", "generate", sample_in, sample_out, _forward_flops(model, sample_in + sample_out, mid_state)
        ),
        StageCost(
            "MC rollouts",
            "generate",
            rollout_in,
            rollout_out,
            _forward_flops(model, rollout_in + rollout_out, (mid_state + solution) / 2),
        ),
        StageCost("critic", "train", critic, 0.0, 3 * _forward_flops(model, critic, solution / 2)),
        StageCost("scoring", "score", scoring, 0.0, _forward_flops(model, scoring, mid_state)),
        StageCost("actor", "train", actor, 0.0, 3 * _forward_flops(model, actor, mid_state)),
    ]


@dataclass(frozen=True)
class Device:
    """One accelerator: peak dense TFLOP/s in the training dtype, and the share of it each kind of work reaches."""

    tflops: float = 989.0
    """Peak dense TFLOP/s (989: H100 SXM bf16; 312: A100 bf16)."""
    generate_utilization: float = 0.10
    """Model FLOP utilisation while generating (decoding is memory-bound: about 0.05-0.15 with HF generate,
    more with vLLM)."""
    score_utilization: float = 0.40
    """While scoring (forward passes over whole sequences)."""
    train_utilization: float = 0.40
    """While training (forward + backward)."""
    memory_gb: float = 80.0
    """Device memory in GB (80: H100 / A100 80GB); `dapo plan` says which stage setups fit in it."""

    def hours(self, cost: StageCost) -> float:
        """Device-hours of a stage."""
        share = {"generate": self.generate_utilization, "score": self.score_utilization}.get(
            cost.kind, self.train_utilization
        )
        return cost.flops / (self.tflops * 1e12 * share) / 3600

"""Losses as pure functions: tensors in, tensors out; no module state, trainer or logging.

Shapes: b = batch rows, s or L = sequence length, n = step boundaries per row (critic) or action tokens in
the batch (actor), a = actions in the batch.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

ValueLossKind = Literal["bce", "mse"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` where `mask` is True (0 when nothing is selected, so an empty batch adds no gradient)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def gather_at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (b, s), index (b, n) -> values[i, index[i, j]] as (b, n)."""
    return values.gather(1, index)


def value_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, kind: ValueLossKind = "bce"
) -> torch.Tensor:
    """Critic loss at step boundaries, computed in fp32.

    logits (b, n): value-head outputs before the sigmoid; targets (b, n): MC values in [0, 1], kept soft
    (0.7 stays 0.7); mask (b, n): True where a boundary has a target.
    bce: binary cross-entropy with soft targets, -[y log V + (1 - y) log(1 - V)]; mse: (V - y)^2.
    """
    logits, targets = logits.float(), targets.float()
    if kind == "bce":
        per_boundary = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    elif kind == "mse":
        per_boundary = (torch.sigmoid(logits) - targets) ** 2
    else:
        raise ValueError(f"unknown value loss {kind!r}; expected 'bce' or 'mse'")
    return masked_mean(per_boundary, mask)


def gather_logprobs(
    logits: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """log p(target) of n tokens, in fp32: logits (b, L, V); rows, positions, targets (n,) say where the logits
    predicting each target token are (dapo.core.packing). Only the n selected logit rows are normalised."""
    selected = logits[rows, positions].float()  # (n, V)
    return torch.log_softmax(selected, dim=-1).gather(1, targets[:, None]).squeeze(1)  # (n,)


def sum_per_action(token_logprobs: torch.Tensor, token_action: torch.Tensor, n_actions: int) -> torch.Tensor:
    """token_logprobs (n,), token_action (n,) -> log pi(a | s) (a,): the sum over each action's tokens (no length
    normalisation); an action with no tokens gets 0."""
    out = torch.zeros(n_actions, dtype=token_logprobs.dtype, device=token_logprobs.device)
    return out.index_add(0, token_action, token_logprobs)


def mean_per_state(
    per_action: torch.Tensor, action_state: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """per_action (a,), action_state (a,), weights (a,) or None -> mean over states of the weighted mean over each
    state's actions (scalar); None weighs a state's actions equally.

    Weighting every state equally (s ~ D, then a ~ nu(. | s) over its unique actions, nu given by `weights`) makes
    the loss of a batch of k states equal the mean of k one-state batches, so accumulating micro-batches that hold
    equally many states (e.g. one each) matches one larger batch exactly."""
    n_states = int(action_state.max()) + 1 if action_state.numel() else 0
    if n_states == 0:
        return per_action.sum() * 0.0
    w = torch.ones_like(per_action) if weights is None else weights.to(per_action.dtype)  # (a,)
    totals = torch.zeros(n_states, dtype=per_action.dtype, device=per_action.device).index_add(
        0, action_state, w * per_action
    )
    mass = torch.zeros(n_states, dtype=per_action.dtype, device=per_action.device).index_add(0, action_state, w)
    present = mass > 0
    return (totals[present] / mass[present]).mean()


class DapoLoss(NamedTuple):
    loss: torch.Tensor  # scalar
    log_ratio: torch.Tensor  # (a,) log pi_theta(a|s) - log pi_ref(a|s)
    per_action: torch.Tensor  # (a,) 1/2 (A/beta - log_ratio)^2


def dapo_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    action_state: torch.Tensor,
    beta: float = 0.01,
    weights: torch.Tensor | None = None,
) -> DapoLoss:
    """DAPO's actor loss (paper eq. 12), in fp32: 1/2 (A(s,a)/beta - [log pi_theta(a|s) - log pi_ref(a|s)])^2,
    averaged per state (weighted by `weights`, the exploratory distribution nu; None: uniform), then over states
    (`mean_per_state`).

    logprobs, ref_logprobs, advantages, action_state, weights: (a,). Its minimiser sets the log-ratio of every action to
    A/beta: actions better than the state's average gain probability, worse ones lose it, by an amount set by
    beta (smaller beta = larger moves away from the reference). No clipping and no importance ratio.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    log_ratio = logprobs.float() - ref_logprobs.float()
    per_action = 0.5 * (advantages.float() / beta - log_ratio) ** 2
    return DapoLoss(mean_per_state(per_action, action_state, weights), log_ratio, per_action)

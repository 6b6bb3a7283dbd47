"""Per-action model outputs on shared-prefix batches: policy log-probs and critic values of candidate actions.

Both the actor's training step and Stage B's scoring (critic values V(s + a), reference log-probs
log pi_ref(a | s)) go through these functions, so the stored reference log-probs are computed exactly the way
the actor computes its own. `score_groups` runs many states through a model in token-budgeted packed batches,
checking once (`dapo.core.packing.packing_agrees`) that the model honours the 4D mask, else falling back to one
padded row per action.

Shapes: a = actions in a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from dapo.core.batching import token_budget_batches
from dapo.core.distributed import gather, world
from dapo.core.losses import gather_logprobs, sum_per_action
from dapo.core.packing import (
    Batch,
    TokenGroup,
    model_inputs,
    pack_groups,
    packed_length,
    packing_agrees,
    unpack_batch,
    unpacked_length,
)
from dapo.models.value import ValueModel

log = logging.getLogger(__name__)

PerAction = Callable[[Batch, bool], torch.Tensor]  # (batch, packed) -> (a,)


def param_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _on_device(batch: Batch, model: nn.Module) -> Batch:
    device = next(model.parameters()).device
    return {name: value.to(device) for name, value in batch.items()}


def policy_logprobs(model: nn.Module, batch: Batch, packed: bool) -> torch.Tensor:
    """log pi(a | s) of every action in `batch` (a,), fp32, summed over the action's tokens."""
    batch = _on_device(batch, model)
    logits = model(**model_inputs(batch, packed, param_dtype(model))).logits  # (b, L, V)
    tokens = gather_logprobs(logits, batch["logit_row"], batch["logit_pos"], batch["target_ids"])  # (n,)
    return sum_per_action(tokens, batch["token_action"], batch["action_row"].shape[0])


def critic_values(model: ValueModel, batch: Batch, packed: bool) -> torch.Tensor:
    """V(s + a) of every action in `batch` (a,), fp32: the sigmoid of the value head at the action's last token."""
    batch = _on_device(batch, model)
    inputs = model_inputs(batch, packed, param_dtype(model))
    logits = model(inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"])  # (b, L)
    return torch.sigmoid(logits[batch["action_row"], batch["action_end"]].float())


def check_packing(per_action: PerAction, vocab_size: int, pad_id: int, dtype: torch.dtype, name: str) -> bool:
    """True if `name` gives the same per-action results packed as unpacked; else warn that it runs unpacked."""
    tolerance = 1e-3 if dtype == torch.float32 else 1e-1  # half precision rounds differently per layout
    if packing_agrees(per_action, vocab_size, pad_id, atol=tolerance):
        return True
    log.warning("%s does not honour a 4D attention mask: falling back to one padded row per action (slower)", name)
    return False


def score_groups(
    groups: Sequence[TokenGroup], per_action: PerAction, *, pad_id: int, max_tokens: int, packed: bool, desc: str
) -> list[list[float]]:
    """`per_action` over every action of every group, in batches of at most `max_tokens` tokens (a group over
    budget goes alone; unpacked, a group costs one row per action). Returns one list per group, in the order of
    its actions.

    In a distributed run (every rank calls it with the same groups) the batches are planned over all groups, then
    dealt round-robin: each rank scores batches rank, rank + world, ... and the results are gathered. A batch is
    computed the same way whichever rank runs it, so 1 or N processes give the same values."""
    rank, world_size = world()
    lengths = [packed_length(g) if packed else unpacked_length(g) * len(g["suffixes"]) for g in groups]
    batches = token_budget_batches(lengths, [1] * len(groups), max_tokens, shuffle=False, bucket=True, seed=0)
    mine: dict[int, list[float]] = {}
    with (
        torch.inference_mode(),
        tqdm(total=len(groups), desc=desc, unit="state", dynamic_ncols=True, disable=rank > 0) as bar,
    ):
        for indices in batches[rank::world_size]:
            batch = pack_groups([groups[i] for i in indices], pad_id)
            if not packed:
                batch = unpack_batch(batch, pad_id)
            values = per_action(batch, packed).cpu().tolist()  # (a,)
            for state, value in zip(batch["action_state"].tolist(), values, strict=True):
                mine.setdefault(indices[state], []).append(value)
            bar.update(len(indices) * world_size)
    merged = {i: values for part in gather(mine, world_size) for i, values in part.items()}
    return [merged.get(i, []) for i in range(len(groups))]


def score_with_model(
    model: nn.Module,
    per_action: PerAction,
    groups: Sequence[TokenGroup],
    *,
    vocab_size: int,
    pad_id: int,
    max_tokens: int,
    desc: str,
) -> list[list[float]]:
    """`score_groups`, packed if the model passes the packing check (else unpacked)."""
    packed = check_packing(per_action, vocab_size, pad_id, param_dtype(model), type(model).__name__)
    return score_groups(groups, per_action, pad_id=pad_id, max_tokens=max_tokens, packed=packed, desc=desc)

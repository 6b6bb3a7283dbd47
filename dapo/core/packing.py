"""Shared-prefix packing: a state's tokens once, then every candidate action, in one row.

DAPO scores many actions a_1..a_k of the same state s: critic values V(s + a_i), reference and policy
log-probs log pi(a_i | s). Padding one row per action repeats s k times; a packed row holds s once followed by
all the actions, with a 4D attention mask in which each action sees the prefix and itself only, and position ids
that restart at the end of the prefix for every action. Row `[s, a_1, a_2]` with s = 3 tokens, |a_i| = 2:

    segment_ids   0 0 0 1 1 2 2        mask row of a_2's 2nd token: 1 1 1 0 0 1 1
    position_ids  0 1 2 3 4 3 4

The logits predicting a_i's first token sit at the prefix's last position, shared by all actions; the others
sit inside a_i's own segment. `pack_groups` records, per action token, where its logits are, so
`dapo.core.losses.gather_logprobs` never needs per-architecture code. `unpack_batch` turns a packed batch into one
padded row per action (token index == position id), the fallback for architectures that ignore a 4D mask and
the reference the tests compare against. `packing_agrees` checks a model on a random packed batch.

Shapes: b = rows, L = packed length, n = action tokens in the batch, a = actions in the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import torch

from dapo.core.padding import pad_right

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


class TokenGroup(TypedDict):
    """The candidate actions of one state, tokenized as full rows `prefix + suffixes[i]`."""

    prefix: list[int]  # tokens every row starts with (the state, up to the first token any action touches)
    suffixes: list[list[int]]  # per action: the rest of its row (the action's tokens, possibly led by state tokens)
    starts: list[int]  # per action: index in `prefix + suffix` of the action's first token (>= 1)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many first tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def group_rows(rows: Sequence[Sequence[int]], starts: Sequence[int]) -> TokenGroup:
    """Split rows (state + action_i tokens, action_i from `starts[i]` to the row's end) into a shared prefix and
    per-action suffixes. The prefix stops before any action token, and before the first token where rows differ
    (BPE can merge a state's last characters into an action's first token)."""
    if not rows or len(rows) != len(starts):
        raise ValueError(f"need one start per row, got {len(rows)} rows and {len(starts)} starts")
    shared = min(starts)
    for row in rows[1:]:
        shared = min(shared, common_prefix_length(rows[0], row))
    if shared < 1:
        raise ValueError("an action starts at the first token: nothing precedes it to predict it from")
    for row, start in zip(rows, starts, strict=True):
        if start > len(row):
            raise ValueError(f"action start {start} is past the end of its row ({len(row)} tokens)")
    return TokenGroup(prefix=list(rows[0][:shared]), suffixes=[list(r[shared:]) for r in rows], starts=list(starts))


def packed_length(group: TokenGroup) -> int:
    return len(group["prefix"]) + sum(len(s) for s in group["suffixes"])


def unpacked_length(group: TokenGroup) -> int:
    """Longest single row `prefix + suffix`: the largest position id the model sees."""
    return len(group["prefix"]) + max(len(s) for s in group["suffixes"])


def pack_groups(groups: Sequence[TokenGroup], pad_id: int) -> Batch:
    """One packed row per group, right-padded.

    Returns input_ids, position_ids, segment_ids (b, L) (segment -1 = padding, 0 = prefix, k = k-th action of
    the row); per action token: logit_row, logit_pos (where its logits are), target_ids, token_action (n,);
    per action: action_row, action_segment, action_end (last position that has seen s + a) and action_state
    (index of its group) (a,).
    """
    rows: list[list[int]] = []
    positions: list[list[int]] = []
    segments: list[list[int]] = []
    token: dict[str, list[int]] = {"logit_row": [], "logit_pos": [], "target_ids": [], "token_action": []}
    action: dict[str, list[int]] = {"action_row": [], "action_segment": [], "action_end": [], "action_state": []}
    for r, group in enumerate(groups):
        prefix = group["prefix"]
        c = len(prefix)
        ids, pos, seg = list(prefix), list(range(c)), [0] * c
        for k, (suffix, start) in enumerate(zip(group["suffixes"], group["starts"], strict=True), start=1):
            a, offset = len(action["action_row"]), len(ids)  # offset: packed index of suffix[0]
            for u in range(start, c + len(suffix)):  # u: index of an action token in its unpacked row
                token["logit_row"].append(r)
                token["logit_pos"].append(u - 1 if u - 1 < c else offset + u - 1 - c)
                token["target_ids"].append(suffix[u - c])
                token["token_action"].append(a)
            ids += suffix
            pos += range(c, c + len(suffix))
            seg += [k] * len(suffix)
            end = offset + len(suffix) - 1 if suffix else c - 1
            for name, value in zip(action, (r, k, end, r), strict=True):
                action[name].append(value)
        rows.append(ids)
        positions.append(pos)
        segments.append(seg)
    return {
        "input_ids": pad_right(rows, pad_id),
        "position_ids": pad_right(positions, 0),
        "segment_ids": pad_right(segments, -1),
        **{name: torch.tensor(values, dtype=torch.long) for name, values in (token | action).items()},
    }


LAYOUT_FIELDS = frozenset(
    {"input_ids", "position_ids", "segment_ids", "logit_row", "logit_pos", "target_ids", "token_action"}
    | {"action_row", "action_segment", "action_end", "action_state"}
)  # what `pack_groups` returns


def shared_prefix_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """segment_ids (b, L) -> bool mask (b, 1, L, L): query q may attend key k iff k <= q and k is in the prefix
    or in q's own segment. Padding queries attend padding and the prefix, so no row is fully masked."""
    length = segment_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()  # (L, L)
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]  # (b, L, 1), (b, 1, L)
    return (causal & ((key == 0) | (key == query)))[:, None]  # (b, 1, L, L)


def attention_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool mask -> additive float mask in `dtype`: 0 where allowed, the dtype's minimum where not."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def model_inputs(batch: Batch, packed: bool, dtype: torch.dtype) -> dict[str, Any]:
    """Keyword arguments for a Hugging Face forward: a 4D mask when packed, a 2D padding mask when not; no KV
    cache (one forward over whole sequences has no use for one)."""
    segments = batch["segment_ids"]
    mask = attention_bias(shared_prefix_mask(segments), dtype) if packed else (segments >= 0).long()
    ids, positions = batch["input_ids"], batch["position_ids"]
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": False}


def unpack_batch(batch: Batch, pad_id: int) -> Batch:
    """A packed batch as one right-padded row per action (prefix + that action), same fields and semantics.
    Fields outside the packing layout (per-action values such as advantages) pass through: the action order is
    unchanged."""
    rows, segments = [], []
    for r, k in zip(batch["action_row"].tolist(), batch["action_segment"].tolist(), strict=True):
        row_segments = batch["segment_ids"][r]  # (L,)
        keep = (row_segments == 0) | (row_segments == k)
        rows.append(batch["input_ids"][r][keep].tolist())
        segments.append((row_segments[keep] == k).long().tolist())  # 0 prefix, 1 action
    positions = batch["position_ids"]
    n_actions = batch["action_row"].shape[0]
    return {
        **{name: value for name, value in batch.items() if name not in LAYOUT_FIELDS},
        "input_ids": pad_right(rows, pad_id),
        "position_ids": pad_right([list(range(len(row))) for row in rows], 0),
        "segment_ids": pad_right(segments, -1),
        "logit_row": batch["token_action"].clone(),
        "logit_pos": positions[batch["logit_row"], batch["logit_pos"]],  # position id == index in its own row
        "target_ids": batch["target_ids"].clone(),
        "token_action": batch["token_action"].clone(),
        "action_row": torch.arange(n_actions),
        "action_segment": torch.ones(n_actions, dtype=torch.long),
        "action_end": positions[batch["action_row"], batch["action_end"]],
        "action_state": batch["action_state"].clone(),
    }


def probe_groups(vocab_size: int, seed: int = 0) -> list[TokenGroup]:
    """Two random states with actions of different lengths, for `packing_agrees`."""
    generator = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(0, vocab_size, (n,), generator=generator).tolist()

    return [
        TokenGroup(prefix=ids(5), suffixes=[ids(3), ids(2), ids(4)], starts=[5, 5, 5]),
        TokenGroup(prefix=ids(3), suffixes=[ids(2), ids(5)], starts=[3, 3]),
    ]


def packing_agrees(
    per_action: Callable[[Batch, bool], torch.Tensor], vocab_size: int, pad_id: int, atol: float = 1e-4
) -> bool:
    """Whether `per_action(batch, packed)` (a per-action quantity, (a,)) gives the same result on a packed batch
    as on its unpacked form: False for architectures that ignore or reject a 4D attention mask."""
    packed = pack_groups(probe_groups(vocab_size), pad_id)
    try:
        with torch.no_grad():
            together = per_action(packed, True).float()
            apart = per_action(unpack_batch(packed, pad_id), False).float()
    except (RuntimeError, ValueError, TypeError) as error:  # e.g. a model that rejects 4D masks
        log.warning("packed forward failed: %s", error)
        return False
    return bool(torch.allclose(together, apart, atol=atol, rtol=0.0))

"""Collate functions: pure, module-level, padding on the right.

Shapes: b = trajectories (critic) or action rows (actor), s = padded sequence length, n = padded number of
step boundaries. Padding ids are masked out by `attention_mask`, so their value never reaches a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import torch

from dapo.padding import pad_right, right_mask


class CriticItem(TypedDict):
    input_ids: list[int]
    boundaries: list[int]  # token index of the last token of s_0..s_T
    targets: list[float]  # MC value per boundary (0.0 where there is none)
    target_mask: list[bool]  # True where the boundary has a target


class ActorItem(TypedDict):
    """One state with all its candidate actions: one row (state + action tokens) per action."""

    input_ids: list[list[int]]
    action_spans: list[tuple[int, int]]  # [start, end) token indices of each action within its row
    advantages: list[float]
    ref_logprobs: list[float]


def collate_critic(items: Sequence[CriticItem], pad_id: int) -> dict[str, torch.Tensor]:
    """Trajectories -> input_ids (b, s), attention_mask (b, s), boundary_index (b, n), boundary_mask (b, n),
    targets (b, n) float, target_mask (b, n) bool."""
    ids = [item["input_ids"] for item in items]
    boundaries = [item["boundaries"] for item in items]
    return {
        "input_ids": pad_right(ids, pad_id),
        "attention_mask": right_mask(ids),
        "boundary_index": pad_right(boundaries, 0),
        "boundary_mask": right_mask(boundaries).bool(),
        "targets": pad_right([item["targets"] for item in items], 0.0, torch.float32),
        "target_mask": pad_right([item["target_mask"] for item in items], False, torch.bool),
    }


def collate_actor(items: Sequence[ActorItem], pad_id: int) -> dict[str, torch.Tensor]:
    """States -> one row per action, rows of a state adjacent: input_ids (b, s), attention_mask (b, s),
    action_mask (b, s) bool (True on the action's tokens), advantages (b,), ref_logprobs (b,),
    state_index (b,) (which state of the batch each row belongs to)."""
    ids = [row for item in items for row in item["input_ids"]]
    spans = [span for item in items for span in item["action_spans"]]
    input_ids = pad_right(ids, pad_id)
    positions = torch.arange(input_ids.shape[1])  # (s,)
    starts = torch.tensor([start for start, _ in spans])  # (b,)
    ends = torch.tensor([end for _, end in spans])  # (b,)
    return {
        "input_ids": input_ids,
        "attention_mask": right_mask(ids),
        "action_mask": (positions >= starts[:, None]) & (positions < ends[:, None]),
        "advantages": torch.tensor([a for item in items for a in item["advantages"]], dtype=torch.float32),
        "ref_logprobs": torch.tensor([r for item in items for r in item["ref_logprobs"]], dtype=torch.float32),
        "state_index": torch.tensor([i for i, item in enumerate(items) for _ in item["input_ids"]]),
    }

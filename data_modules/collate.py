"""Collate functions: pure, module-level, padding on the right.

Shapes: b = trajectories (critic) or states (actor, one packed row each), s = padded sequence length, n = padded
number of step boundaries, a = actions. Padding is masked out (attention mask, segment -1), so its value never
reaches a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import torch

from dapo.core.packing import TokenGroup, pack_groups
from dapo.core.padding import pad_right, right_mask


class CriticItem(TypedDict):
    key: str  # the solution's id (names the item in errors)
    input_ids: list[int]
    boundaries: list[int]  # token index of the last token of s_0..s_T
    targets: list[float]  # MC value per boundary (0.0 where there is none)
    target_mask: list[bool]  # True where the boundary has a target


class ActorItem(TokenGroup):
    """One state with all its candidate actions (a shared-prefix group), their advantages and reference log-probs."""

    key: str  # the state's id (names the item in errors)
    advantages: list[float]
    ref_logprobs: list[float]
    weights: list[float]  # each action's share of the state's loss (nu)


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
    """States -> one packed row per state (its tokens once, then each candidate action; `dapo.core.packing`) with
    advantages (a,), ref_logprobs (a,) and weights (a,) in the order of `action_row` / `action_state`."""
    return {
        **pack_groups(items, pad_id),
        "advantages": torch.tensor([a for item in items for a in item["advantages"]], dtype=torch.float32),
        "ref_logprobs": torch.tensor([r for item in items for r in item["ref_logprobs"]], dtype=torch.float32),
        "weights": torch.tensor([w for item in items for w in item["weights"]], dtype=torch.float32),
    }

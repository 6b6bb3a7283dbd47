"""Collate functions: pure, module-level, padding on the right.

Shapes: b = trajectories (critic) or states (actor, one packed row each), s = padded sequence length, n = padded
number of step boundaries, a = actions; for critic trees (`collate_critic_trees`) r = packed rows (one problem each)
and b = the trajectories in them. Padding is masked out (attention mask, segment -1), so its value never reaches
a loss.
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


class CriticTree(TypedDict):
    """The trajectories of one problem as one shared-prefix tree: their common first tokens (the prompt, at least)
    once, then each trajectory's remaining tokens (`dapo.core.packing`). Each trajectory keeps its boundaries as
    token indices in its own unpacked row, with its targets."""

    key: str  # the problem's id (names the tree in errors)
    trajectories: list[CriticItem]
    group: TokenGroup  # prefix: the shared tokens; suffixes: per trajectory, the rest of its row


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


def collate_critic_trees(trees: Sequence[CriticTree], pad_id: int) -> dict[str, torch.Tensor]:
    """Critic trees -> one packed row per tree: input_ids, position_ids, segment_ids (r, L) (a 4D mask follows
    from segment_ids: `dapo.core.packing.shared_prefix_mask`), and per trajectory boundary_row (b,) (its packed
    row), boundary_index (b, n) (packed positions of its boundaries), boundary_mask, targets, target_mask (b, n):
    the same per-trajectory fields as `collate_critic`, so losses and metrics read both alike."""
    packed = pack_groups([tree["group"] for tree in trees], pad_id)
    rows: list[int] = []
    positions: list[list[int]] = []
    for r, tree in enumerate(trees):
        shared = len(tree["group"]["prefix"])
        offset = shared  # packed index of the current suffix's first token
        for item, suffix in zip(tree["trajectories"], tree["group"]["suffixes"], strict=True):
            rows.append(r)
            positions.append([u if u < shared else offset + u - shared for u in item["boundaries"]])
            offset += len(suffix)
    items = [item for tree in trees for item in tree["trajectories"]]
    return {
        "input_ids": packed["input_ids"],
        "position_ids": packed["position_ids"],
        "segment_ids": packed["segment_ids"],
        "boundary_row": torch.tensor(rows, dtype=torch.long),
        "boundary_index": pad_right(positions, 0),
        "boundary_mask": right_mask(positions).bool(),
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

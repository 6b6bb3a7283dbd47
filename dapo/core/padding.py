"""Padding token rows into tensors: right padding for training batches, left padding for generation.

Shapes: b = rows, s = longest row. Padded positions are 0 in the attention mask, so their value never matters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase


def pad_right(rows: Sequence[Sequence[float]], value: float, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Rows padded on the right with `value` into a (b, s) tensor."""
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=dtype)
    return out


def right_mask(rows: Sequence[Sequence[object]]) -> torch.Tensor:
    """(b, s) long mask: 1 on the real positions of right-padded rows, 0 on padding."""
    return pad_right([[1] * len(row) for row in rows], 0)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id rows to a (b, s) `input_ids` tensor and its (b, s) attention mask."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (b, s)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (b, s)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's padding id, or eos when it has none: padding is always masked, so any id works."""
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token to pad with; give it one"
            " (tokenizer.pad_token = ..., then save_pretrained)"
        )
    return int(pad)

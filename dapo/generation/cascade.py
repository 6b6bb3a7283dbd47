"""Cascade attention: the n rollouts of a state attend over one shared copy of the state's prefix.

Why: `HFGenerator` encodes each state's prefix once, but then repeats its KV cache n times along the batch
(`batch_repeat_interleave`), so every decoding step of every rollout reads its own copy of the prefix's keys and
values; on CPU that attention was 30% of the rollouts' time (docs/performance.md). Here the prefix's keys and values
stay one copy per state, and each decoding step's attention is computed in two parts merged exactly:
  - prefix part: the queries of a state's n rollouts, stacked, against the state's prefix keys (one matrix product
    per state, not n);
  - suffix part: each rollout's queries against its own tokens since the prefix (the last prompt token and what it
    generated);
  - merge: softmax over the union of keys = the parts' outputs weighted by exp(their log-sum-exp), normalised.
The result equals attention over the concatenated keys (tested against the plain path to 1e-5). On the CPU both
parts run in PyTorch's fused attention kernel, which returns the log-sum-exp (`attend`). Measured on the rollout
workload: 3.07x plain `generate` and 1.46x the repeated cache, each at its best batch size (docs/performance.md).

How it plugs into transformers without forking the model: `CascadeCache` (a `DynamicCache`) keeps the suffix in
in-place layers (`dapo.generation.kv_cache.ReservedLayer`) and the prefix beside them, and reports the full length
(prefix + suffix) so `generate` positions tokens as before; `ATTENTION` is registered with transformers'
`AttentionInterface`, and `cascade_decoding(model, cache)` switches the model to it for the block. That name has no
mask function, so transformers passes no mask: the prefix's left padding comes from the cache, and the suffix has
none (its first token is the prompt's last, and finished rows' outputs are discarded).

Rows may leave the batch (`batch_select_indices`, when they finish): the cache keeps each remaining row's slot in the
(state, rollout) grid, and the prefix part scatters the queries into that grid and gathers the outputs back, so the
prefix itself is never copied.

Shapes: S = states, n = rollouts per state, R = rows still decoding (<= S * n), hq / hk = query / key-value heads
(hq = hk * g), q = new tokens, P = prefix tokens (left-padded), t = suffix tokens, d = head size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch
from transformers import AttentionInterface, DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from dapo.generation.kv_cache import ReservedLayer

ATTENTION = "dapo_cascade"
"""The attention implementation's name in transformers' `AttentionInterface`."""

UNSUPPORTED = ("sliding_window", "softcap", "s_aux")
"""Attention options some models pass that the cascade does not implement: refused, never ignored."""

_ACTIVE: ContextVar[CascadeCache | None] = ContextVar("dapo_cascade_cache", default=None)


class CascadeCache(DynamicCache):
    """A cache whose layers hold each row's suffix, beside one copy per state of the shared prefix."""

    def __init__(self, prefix: DynamicCache, prefix_mask: torch.Tensor, n: int, reserve: int) -> None:
        """`prefix`: the states' prefixes run once, (S, hk, P, d) per layer; `prefix_mask`: (S, P), 1 for a real
        token, 0 for left padding; n rollouts per state; `reserve`: the tokens still to come per row."""
        super().__init__()
        self.prefix_keys: list[torch.Tensor] = []  # each (S, hk, P, d)
        self.prefix_values: list[torch.Tensor] = []  # each (S, hk, P, d)
        for index, layer in enumerate(prefix.layers):
            full = type(layer) in (DynamicLayer, ReservedLayer)  # not a sliding-window or linear-attention kind
            keys, values = (getattr(layer, name, None) for name in ("keys", "values"))
            if not full or keys is None or values is None:
                raise ValueError(
                    f"cascade attention needs every layer's prefix in a full-attention cache layer; layer {index} "
                    f"is a {type(layer).__name__}{' with nothing cached' if full else ''}"
                )
            self.prefix_keys.append(keys)
            self.prefix_values.append(values)
        self.layers = [ReservedLayer(reserve) for _ in prefix.layers]
        self.prefix_mask = prefix_mask.bool()  # (S, P)
        self.n = n
        self.slots: torch.Tensor | None = None  # (R,) each row's slot in the (S, n) grid; None: every slot, in order

    @property
    def prefix_length(self) -> int:
        return int(self.prefix_mask.shape[1])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Prefix and suffix tokens: the positions `generate` has already seen."""
        return self.prefix_length + super().get_seq_length(layer_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` (R',): their suffixes and their slots; the prefix stays whole."""
        super().batch_select_indices(indices)
        every = torch.arange(self.prefix_mask.shape[0] * self.n, device=indices.device)
        self.slots = (every if self.slots is None else self.slots)[indices]

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a CascadeCache already shares its prefix among the rollouts; do not repeat it")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("a CascadeCache decodes rollouts, not beams: it cannot reorder its rows")


@contextlib.contextmanager
def cascade_decoding(model: PreTrainedModel, cache: CascadeCache) -> Iterator[None]:
    """Inside the block, `model` attends with `ATTENTION` over `cache`; its own implementation comes back after.
    The switch is the model's (its config), so one model decodes one cascade at a time: not from two threads."""
    before = model.config._attn_implementation
    token = _ACTIVE.set(cache)
    try:
        model.set_attn_implementation(ATTENTION)
        if model.config._attn_implementation != ATTENTION:  # transformers only warns when a model cannot switch
            raise ValueError(f"{type(model).__name__} cannot switch its attention to {ATTENTION}: use cascade=False")
        yield
    finally:
        try:
            model.set_attn_implementation(before)
        finally:
            _ACTIVE.reset(token)


def cascade_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of (R, hq, q, d) `query` over the active cache's prefix and the (R, hk, t, d) suffix `key` /
    `value`; returns (R, q, hq, d) as transformers' attention functions do."""
    cache = _ACTIVE.get()
    if cache is None:
        raise RuntimeError(f"the {ATTENTION} attention runs only inside cascade_decoding(model, cache)")
    if dropout:
        raise ValueError(f"{ATTENTION} attention is for decoding: dropout must be 0, got {dropout}")
    unsupported = [name for name in UNSUPPORTED if kwargs.get(name) is not None]
    if attention_mask is not None or unsupported:  # a mask means transformers built one: not the cascade's layout
        what = ", ".join(unsupported) or "an attention mask"
        raise ValueError(f"{ATTENTION} attention supports plain causal attention only, not {what}")
    layer = int(getattr(module, "layer_idx"))  # noqa: B009 (a module attribute transformers sets)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    prefix_out, prefix_lse = prefix_part(
        query, cache.prefix_keys[layer], cache.prefix_values[layer], cache.prefix_mask, cache.slots, cache.n, scale
    )
    suffix_out, suffix_lse = suffix_part(query, key, value, scale)
    out = merge_parts(prefix_out, prefix_lse, suffix_out, suffix_lse)  # (R, hq, q, d)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def prefix_part(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    slots: torch.Tensor | None,
    n: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of each row's (R, hq, q, d) queries over its state's (S, hk, P, d) prefix, (S, P) `mask` marking
    real tokens; rows sit at `slots` of the (S, n) grid (None: every slot, in order). Returns (R, hq, q, d) outputs
    and (R, hq, q) log-sum-exps (-inf for a state with no real prefix token)."""
    _, hq, q, d = query.shape
    states, hk, length, _ = keys.shape
    g = hq // hk
    grid = query if slots is None else query.new_zeros(states * n, hq, q, d).index_copy_(0, slots, query)
    # grid: (S * n, hq, q, d); a state's n rows and g query heads per key head become one stack of queries
    stacked = grid.view(states, n, hk, g, q, d).permute(0, 2, 1, 3, 4, 5).reshape(states, hk, n * g * q, d)
    bias = keys.new_zeros(states, 1, 1, length).masked_fill(~mask[:, None, None, :], float("-inf"))  # (S, 1, 1, P)
    out, lse = attend(stacked, keys, values, bias, scale)  # (S, hk, n * g * q, d), (S, hk, n * g * q)
    lse = lse.masked_fill(~mask.any(-1)[:, None, None], float("-inf"))
    out = out.view(states, hk, n, g, q, d).permute(0, 2, 1, 3, 4, 5).reshape(states * n, hq, q, d)
    lse = lse.view(states, hk, n, g, q).permute(0, 2, 1, 3, 4).reshape(states * n, hq, q)
    return (out, lse) if slots is None else (out[slots], lse[slots])


def suffix_part(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention of (R, hq, q, d) queries, the last q of the suffix, over the row's (R, hk, t, d) suffix.
    Returns (R, hq, q, d) outputs and (R, hq, q) log-sum-exps."""
    rows, hq, q, d = query.shape
    hk, length = keys.shape[1], keys.shape[2]
    g = hq // hk
    bias = None
    if q > 1:  # query i sits at suffix position t - q + i and sees keys up to it
        positions = torch.arange(length, device=query.device)
        seen = (positions[None, :] <= positions[length - q :, None]).repeat(g, 1)  # (g * q, t)
        bias = keys.new_zeros(1, 1, g * q, length).masked_fill(~seen, float("-inf"))  # (1, 1, g * q, t)
    out, lse = attend(query.reshape(rows, hk, g * q, d), keys, values, bias, scale)  # (R, hk, g * q, d)
    return out.reshape(rows, hq, q, d), lse.reshape(rows, hq, q)


def merge_parts(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor) -> torch.Tensor:
    """Attention over the union of two key sets from each set's (..., d) output and (...) log-sum-exp."""
    share_a = torch.sigmoid(lse_a.float() - lse_b.float())[..., None]  # (..., 1): a set with no keys weighs 0
    return torch.lerp(out_b.float(), out_a.float(), share_a)


_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
"""PyTorch's fused CPU attention kernel, which also returns the log-sum-exp the merge needs (private API: where it
is missing, or off the CPU, `attend` computes the same explicitly)."""


def attend(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(queries keys^T * scale + bias) values and the log-sum-exp of those scores: (B, H, M, d) queries,
    (B, H, K, d) keys and values, `bias` (0 or -inf) broadcastable to (B, H, M, K) or None. Returns (B, H, M, d)
    and (B, H, M); a query that sees no key gets zeros (and a meaningless log-sum-exp: mask it)."""
    if _FLASH_CPU is not None and queries.device.type == "cpu":
        out, lse = _FLASH_CPU(queries, keys, values, attn_mask=bias, scale=scale)
        return out, lse
    scores = queries.float() @ keys.float().transpose(-1, -2) * scale  # (B, H, M, K)
    if bias is not None:
        scores = scores + bias
    lse = scores.logsumexp(-1)  # (B, H, M)
    probs = (scores - lse.nan_to_num(neginf=0.0)[..., None]).exp()  # (B, H, M, K): 0 where the score is -inf
    return (probs @ values.float()).to(queries.dtype), lse


AttentionInterface.register(ATTENTION, cascade_attention)

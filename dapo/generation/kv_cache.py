"""A KV cache that appends in place: `reserved_cache(config, reserve)`.

Why: transformers' `DynamicLayer.update` appends each new token's keys and values with `torch.cat`, which copies
the whole cache of that layer on every decoding step, so generating t tokens moves O(t^2) bytes. Profiling our
rollouts on CPU (`benchmarks/rollout_throughput.py`, a 4-layer model, 64 rows, 100-260-token contexts) put 82% of
the time in `aten::cat`. A `ReservedLayer` keeps each layer's keys and values in a buffer with room for `reserve`
more tokens and writes new tokens into it; the cache exposes views of the filled part, so attention reads exactly
the same tensors as before (outputs are identical, which the tests check).

Only plain full-attention layers are replaced; other layer kinds (sliding windows, ...) keep their own behaviour.
Operations that rebuild the cache tensors (`batch_repeat_interleave`, `batch_select_indices`, `crop`, beam
reordering) still work: the next `update` notices that the tensors are no longer views of its buffer and moves
them into a new one.

Shapes: b = rows, h = key/value heads, s = cached tokens, d = head size.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values live in a buffer with `reserve` free token slots after each refill."""

    def __init__(self, reserve: int) -> None:
        super().__init__()
        if reserve < 0:
            raise ValueError(f"reserve must be >= 0, got {reserve}")
        self.reserve = reserve
        self._key_buffer: torch.Tensor | None = None  # (b, h, capacity, d)
        self._value_buffer: torch.Tensor | None = None  # (b, h, capacity, d)
        self._view: torch.Tensor | None = None  # the `keys` this layer handed out last

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (b, h, q, d) new keys and values after the cached ones; return the (b, h, s + q, d) views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        needed = length + key_states.shape[-2]
        if not self._holds_current(needed):
            self._refill(key_states, value_states, length, needed)
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[..., length:needed, :] = key_states
        self._value_buffer[..., length:needed, :] = value_states
        self.keys = self._key_buffer[..., :needed, :]
        self.values = self._value_buffer[..., :needed, :]
        self._view = self.keys
        return self.keys, self.values

    def _holds_current(self, needed: int) -> bool:
        """True if `keys` is still the view this layer handed out and the buffer has room for `needed` tokens."""
        return self._key_buffer is not None and self.keys is self._view and needed <= self._key_buffer.shape[-2]

    def _refill(self, key_states: torch.Tensor, value_states: torch.Tensor, length: int, needed: int) -> None:
        """New buffers with room for `needed + max(reserve, needed)` tokens, holding the `length` cached ones (the
        doubling keeps appends amortised O(1) if generation runs past the reserve)."""
        batch, heads, _, key_size = key_states.shape
        capacity = needed + max(self.reserve, needed)
        key_buffer = key_states.new_empty(batch, heads, capacity, key_size)
        value_buffer = value_states.new_empty(batch, heads, capacity, value_states.shape[-1])
        if length:
            assert self.keys is not None and self.values is not None
            key_buffer[..., :length, :] = self.keys
            value_buffer[..., :length, :] = self.values
        self._key_buffer, self._value_buffer = key_buffer, value_buffer

    def reset(self) -> None:
        super().reset()
        self._key_buffer = self._value_buffer = self._view = None


def reserved_cache(config: PretrainedConfig, reserve: int) -> DynamicCache:
    """A `DynamicCache` for `config` whose full-attention layers are `ReservedLayer(reserve)`: set `reserve` to the
    tokens still to come (e.g. `max_new_tokens`) and no layer is copied again after its first fill."""
    cache = DynamicCache(config=config)
    cache.layers = [ReservedLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache

"""The in-place KV cache gives the same keys, values and generations as transformers' DynamicCache."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from dapo.generation.hf_generator import longest_first
from dapo.generation.kv_cache import ReservedLayer, reserved_cache


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def _keys(length: int, batch: int = 2, start: float = 0.0) -> torch.Tensor:
    """(batch, 1 head, length, 2) keys numbered start, start + 1, ... along the tokens."""
    return (torch.arange(length, dtype=torch.float32) + start).view(1, 1, length, 1).expand(batch, 1, length, 2)


def test_layer_appends_in_place_and_grows_past_its_reserve():
    layer = ReservedLayer(reserve=2)
    keys, _ = layer.update(_keys(3), _keys(3))  # capacity 3 + max(2, 3) = 6
    buffer = layer._key_buffer
    for step in range(3):  # tokens 3, 4, 5 fit in the buffer
        layer.update(_keys(1, start=3 + step), _keys(1, start=3 + step))
        assert layer._key_buffer is buffer
    keys, _ = layer.update(_keys(1, start=6), _keys(1, start=6))  # token 6 does not: a new, larger buffer
    assert layer._key_buffer is not buffer and layer._key_buffer.shape[2] == 7 + 7
    assert torch.equal(keys, _keys(7)) and layer.get_seq_length() == 7


def test_layer_rebuilds_after_repeat_and_select():
    layer = ReservedLayer(reserve=4)
    layer.update(_keys(2, batch=1), _keys(2, batch=1))
    layer.batch_repeat_interleave(3)  # replaces `keys` with a (3, 1, 2, 2) copy
    keys, _ = layer.update(_keys(1, batch=3, start=2), _keys(1, batch=3, start=2))
    assert torch.equal(keys, _keys(3, batch=3))
    layer.batch_select_indices(torch.tensor([0, 2]))
    keys, values = layer.update(_keys(1, start=3), _keys(1, start=3))
    assert torch.equal(keys, _keys(4)) and torch.equal(values, _keys(4))
    layer.crop(-2)
    keys, _ = layer.update(_keys(1, start=2), _keys(1, start=2))
    assert torch.equal(keys, _keys(3))


def test_reserved_layer_refuses_negative_reserve():
    with pytest.raises(ValueError, match="reserve"):
        ReservedLayer(-1)


@pytest.mark.parametrize("do_sample", [False, True])
def test_generate_matches_dynamic_cache(model, tiny_model_dir, do_sample):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"
    batch = tokenizer(["What is 3 + 4?", "Start at 7. Add 2."], return_tensors="pt", padding=True)
    options = {"max_new_tokens": 12, "do_sample": do_sample, "top_k": 0, "pad_token_id": tokenizer.pad_token_id}
    outputs = []
    for cache in (DynamicCache(config=model.config), reserved_cache(model.config, reserve=5)):  # 5 < 12: grows
        torch.manual_seed(0)
        with torch.inference_mode():
            outputs.append(model.generate(**batch, cache=cache, **options))
    assert torch.equal(outputs[0], outputs[1])
    assert all(isinstance(layer, ReservedLayer) for layer in cache.layers)


def test_longest_first_is_stable():
    assert longest_first([[1], [1, 2, 3], [4, 5], [6, 7, 8]]) == [1, 3, 2, 0]
    assert longest_first([]) == []

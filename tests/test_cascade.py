"""Cascade attention: the prefix and suffix parts merge to attention over all keys, and decoding with one shared
copy of each prompt's prefix gives the logits (to 1e-5) and the texts of decoding with a copy per row."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicSlidingWindowLayer

from dapo.core.padding import left_pad
from dapo.generation import cascade as cascade_module
from dapo.generation.cascade import (
    CascadeCache,
    cascade_attention,
    cascade_decoding,
    merge_parts,
    prefix_part,
    suffix_part,
)
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.kv_cache import reserved_cache
from dapo.generation.protocol import SamplingParams

S, N, HK, G, P, T, D = 3, 2, 2, 2, 5, 4, 8


def _reference(query, prefix_keys, prefix_values, prefix_mask, keys, values, slots):
    """Softmax attention of each row over its state's real prefix tokens and its own suffix (causal), one row at a
    time, GQA by repeating the key/value heads."""
    q = query.shape[2]
    out = []
    for row, slot in enumerate(slots.tolist()):
        state = slot // N
        k = torch.cat([prefix_keys[state], keys[row]], 1).repeat_interleave(G, 0)  # (hq, P + t, d)
        v = torch.cat([prefix_values[state], values[row]], 1).repeat_interleave(G, 0)  # (hq, P + t, d)
        scores = query[row] @ k.transpose(-1, -2) / D**0.5  # (hq, q, P + t)
        visible = torch.cat([prefix_mask[state].expand(q, P), torch.ones(q, T).tril(T - q).bool()], 1)  # (q, P + t)
        out.append(scores.masked_fill(~visible, float("-inf")).softmax(-1) @ v)  # (hq, q, d)
    return torch.stack(out)  # (R, hq, q, d)


@pytest.mark.parametrize("q", [1, 3])
@pytest.mark.parametrize("slots", [None, [0, 3, 4]])
@pytest.mark.parametrize("kernel", ["fused", "explicit"])
def test_the_two_parts_merge_to_attention_over_all_keys(q, slots, kernel, monkeypatch):
    """Three states (the second left-padded by 2, the third all padding), 2 rollouts each, GQA with 2 groups;
    every row, or rows 0, 3 and 4 of the grid after the others finished; PyTorch's fused CPU kernel or the
    explicit computation (used off the CPU)."""
    if kernel == "explicit":
        monkeypatch.setattr(cascade_module, "_FLASH_CPU", None)
    else:
        assert cascade_module._FLASH_CPU is not None  # this torch has the fused CPU kernel
    generator = torch.Generator().manual_seed(0)
    prefix_keys, prefix_values = (torch.randn(S, HK, P, D, generator=generator) for _ in range(2))
    prefix_mask = torch.ones(S, P, dtype=torch.bool)
    prefix_mask[1, :2] = False
    prefix_mask[2] = False
    index = torch.tensor(slots) if slots is not None else None
    rows = S * N if slots is None else len(slots)
    query = torch.randn(rows, HK * G, q, D, generator=generator)
    keys, values = (torch.randn(rows, HK, T, D, generator=generator) for _ in range(2))
    scale = D**-0.5
    merged = merge_parts(
        *prefix_part(query, prefix_keys, prefix_values, prefix_mask, index, N, scale),
        *suffix_part(query, keys, values, scale),
    )
    every = torch.arange(S * N) if index is None else index
    expected = _reference(query, prefix_keys, prefix_values, prefix_mask, keys, values, every)
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def policy(policy_dir):
    return AutoModelForCausalLM.from_pretrained(policy_dir).eval(), AutoTokenizer.from_pretrained(policy_dir)


@pytest.fixture(scope="module")
def gqa(policy):
    """A random Llama with grouped-query attention (4 query heads over 2 key/value heads), eager attention, and
    the policy's tokenizer: the head grouping and the restoring of another attention implementation."""
    tokenizer = policy[1]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.fixture(scope="module")
def prompts(arith) -> list[str]:
    """Arith prompts of different lengths, so the prefixes are left-padded."""
    return [arith.prompt(ex) for ex in arith.load("test")[:5]] + ["Question:"]


@pytest.mark.parametrize("which", ["policy", "gqa"])
def test_logits_equal_the_plain_path_over_two_steps_and_a_dropped_row(request, which, prompts):
    model, tokenizer = request.getfixturevalue(which)
    own = model.config._attn_implementation
    generator = HFGenerator(model, tokenizer)
    ids, mask = left_pad([tokenizer(p).input_ids for p in prompts], generator.pad_id)  # (b, s)
    n = 3
    plain = reserved_cache(model.config, 8)
    generator._fill_prefix(plain, ids, mask)
    plain.batch_repeat_interleave(n)
    prefix = DynamicCache(config=model.config)
    generator._fill_prefix(prefix, ids, mask)
    cascade = CascadeCache(prefix, mask[:, :-1], n, 8)
    rows_ids, rows_mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)  # (b * n, s)
    step_ids = rows_ids[:, -1:]  # (b * n, 1): the prompts' last tokens
    with torch.inference_mode():
        for step in range(2):
            positions = rows_mask.sum(1, keepdim=True) - 1  # (r, 1)
            inputs = {"input_ids": step_ids, "attention_mask": rows_mask, "position_ids": positions}
            want = model(**inputs, cache=plain, use_cache=True).logits  # (r, 1, vocab)
            with cascade_decoding(model, cascade):
                got = model(**inputs, cache=cascade, use_cache=True).logits  # (r, 1, vocab)
            assert model.config._attn_implementation == own  # restored after the block
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            step_ids = want[:, -1].argmax(-1, keepdim=True)  # (r, 1)
            rows_mask = torch.cat([rows_mask, torch.ones_like(step_ids)], 1)
            if step == 0:  # rows 1 and 4 finish: both caches drop them
                keep = torch.tensor([i for i in range(len(step_ids)) if i not in (1, 4)])
                plain.batch_select_indices(keep)
                cascade.batch_select_indices(keep)
                step_ids, rows_mask = step_ids[keep], rows_mask[keep]
    assert cascade.get_seq_length() == plain.get_seq_length() == ids.shape[1] + 1


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(n=3, temperature=0.0, max_new_tokens=40),
        SamplingParams(n=4, temperature=1.0, max_new_tokens=40, seed=3),
        SamplingParams(n=2, temperature=1.0, max_new_tokens=24, one_step=True, seed=1),
    ],
    ids=["greedy", "sampled", "one_step"],
)
@pytest.mark.parametrize("which", ["policy", "gqa"])
def test_cascade_generates_the_texts_of_a_copy_per_row(request, which, prompts, params):
    """Chunks of 2-3 prompts; rows leave the batch as they finish (every 16 tokens)."""
    model, tokenizer = request.getfixturevalue(which)
    shared = HFGenerator(model, tokenizer, batch_size=8)
    cascade = HFGenerator(model, tokenizer, batch_size=8, cascade=True)
    assert cascade.generate(prompts, params) == shared.generate(prompts, params)
    assert cascade.tokens_generated == shared.tokens_generated > 0


def test_misuse_is_refused(policy):
    model, tokenizer = policy
    with pytest.raises(ValueError, match="needs shared_prefix=True"):
        HFGenerator(model, tokenizer, shared_prefix=False, cascade=True)
    query = torch.zeros(1, 2, 1, 4)
    with pytest.raises(RuntimeError, match="only inside cascade_decoding"):
        cascade_attention(model.model.layers[0].self_attn, query, query, query, None)
    with pytest.raises(ValueError, match="layer 0 is a DynamicLayer with nothing cached"):
        CascadeCache(DynamicCache(config=model.config), torch.ones(1, 2), 2, 4)
    sliding = DynamicCache()
    sliding.layers = [DynamicSlidingWindowLayer(sliding_window=4)]
    with pytest.raises(ValueError, match="layer 0 is a DynamicSlidingWindowLayer"):
        CascadeCache(sliding, torch.ones(1, 2), 2, 4)


def test_options_the_cascade_does_not_implement_are_refused_and_an_error_restores_the_model(policy, prompts):
    model, tokenizer = policy
    generator = HFGenerator(model, tokenizer)
    ids, mask = left_pad([tokenizer(p).input_ids for p in prompts[:2]], generator.pad_id)  # (2, s)
    prefix = DynamicCache(config=model.config)
    generator._fill_prefix(prefix, ids, mask)
    cache = CascadeCache(prefix, mask[:, :-1], 2, 4)
    attention = model.model.layers[0].self_attn
    query = torch.zeros(4, model.config.num_attention_heads, 1, model.config.head_dim)  # (R, hq, q, d)
    with pytest.raises(NotImplementedError, match="cannot reorder"):
        cache.reorder_cache(torch.arange(4))
    with pytest.raises(NotImplementedError, match="do not repeat"):
        cache.batch_repeat_interleave(2)
    with pytest.raises(RuntimeError, match="boom"), cascade_decoding(model, cache):
        with pytest.raises(ValueError, match="not sliding_window"):
            cascade_attention(attention, query, query, query, None, sliding_window=4)
        with pytest.raises(ValueError, match="not an attention mask"):
            cascade_attention(attention, query, query, query, torch.ones(4, 1, 1, 1))
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa" and cascade_module._ACTIVE.get() is None

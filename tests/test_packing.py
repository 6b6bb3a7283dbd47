"""Shared-prefix packing: literal layout, mask, and packed log-probs equal to one plain forward per action."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from dapo.core.losses import gather_logprobs, sum_per_action
from dapo.core.packing import (
    TokenGroup,
    group_rows,
    model_inputs,
    pack_groups,
    packing_agrees,
    shared_prefix_mask,
    unpack_batch,
)

PAD = 0


def test_group_rows_stops_before_actions_and_before_rows_differ():
    # rows: state [5 6 7] + action; in the third row BPE merged the state's 7 into the action's first token 9
    rows = [[5, 6, 7, 8, 8], [5, 6, 7, 3], [5, 6, 9, 4]]
    group = group_rows(rows, starts=[3, 3, 2])
    assert group == {"prefix": [5, 6], "suffixes": [[7, 8, 8], [7, 3], [9, 4]], "starts": [3, 3, 2]}
    with pytest.raises(ValueError, match="first token"):
        group_rows([[4, 5]], starts=[0])


def test_pack_groups_literal_layout():
    group = TokenGroup(prefix=[11, 12, 13], suffixes=[[21, 22], [31, 32]], starts=[3, 3])
    batch = pack_groups([group, TokenGroup(prefix=[41], suffixes=[[51]], starts=[1])], PAD)
    assert batch["input_ids"].tolist() == [[11, 12, 13, 21, 22, 31, 32], [41, 51, PAD, PAD, PAD, PAD, PAD]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4], [0, 1, 0, 0, 0, 0, 0]]
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 1, 1, 2, 2], [0, 1, -1, -1, -1, -1, -1]]
    # a_1 = 21 22: 21 predicted at the prefix's last token (2), 22 at 21 (3); a_2: 31 at 2 (shared), 32 at 5
    assert batch["logit_row"].tolist() == [0, 0, 0, 0, 1]
    assert batch["logit_pos"].tolist() == [2, 3, 2, 5, 0]
    assert batch["target_ids"].tolist() == [21, 22, 31, 32, 51]
    assert batch["token_action"].tolist() == [0, 0, 1, 1, 2]
    assert batch["action_end"].tolist() == [4, 6, 1]
    assert batch["action_state"].tolist() == [0, 0, 1]


def test_shared_prefix_mask_literal():
    mask = shared_prefix_mask(torch.tensor([[0, 0, 1, 1, 2, -1]]))[0, 0].int()
    expected = [
        [1, 0, 0, 0, 0, 0],  # prefix token 0
        [1, 1, 0, 0, 0, 0],  # prefix token 1
        [1, 1, 1, 0, 0, 0],  # a_1 token 0: prefix + itself
        [1, 1, 1, 1, 0, 0],  # a_1 token 1
        [1, 1, 0, 0, 1, 0],  # a_2 token 0: prefix + itself, not a_1
        [1, 1, 0, 0, 0, 1],  # padding: prefix and padding, never an empty row
    ]
    assert mask.tolist() == expected


def test_unpack_batch_gives_one_row_per_action():
    group = TokenGroup(prefix=[11, 12], suffixes=[[21, 22, 23], [31]], starts=[2, 2])
    rows = unpack_batch(pack_groups([group], PAD), PAD)
    assert rows["input_ids"].tolist() == [[11, 12, 21, 22, 23], [11, 12, 31, PAD, PAD]]
    assert rows["segment_ids"].tolist() == [[0, 0, 1, 1, 1], [0, 0, 1, -1, -1]]
    assert rows["logit_row"].tolist() == [0, 0, 0, 1]
    assert rows["logit_pos"].tolist() == [1, 2, 3, 1]
    assert rows["action_end"].tolist() == [4, 2]


def _model(config_class: type) -> torch.nn.Module:
    """A 2-layer model of a transformers architecture (grouped-query attention), random weights."""
    config = config_class(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return AutoModelForCausalLM.from_config(config)


def _per_action(model: torch.nn.Module, batch: dict, packed: bool) -> torch.Tensor:
    logits = model(**model_inputs(batch, packed, torch.float32)).logits
    tokens = gather_logprobs(logits, batch["logit_row"], batch["logit_pos"], batch["target_ids"])
    return sum_per_action(tokens, batch["token_action"], batch["action_row"].shape[0])


def _plain_logprob(model: torch.nn.Module, row: list[int], start: int) -> float:
    """log p(row[start:] | row[:start]) from one unpadded forward, no packing code involved."""
    logits = model(torch.tensor([row])).logits[0].float()  # (s, V)
    logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(row[1:])[:, None]).squeeze(1)
    return float(logp[start - 1 :].sum())


@pytest.mark.parametrize("config_class", [LlamaConfig, Qwen2Config], ids=["llama", "qwen2"])
def test_packed_logprobs_equal_one_plain_forward_per_action(config_class):
    torch.manual_seed(0)
    model = _model(config_class).eval()
    generator = torch.Generator().manual_seed(1)
    groups = []
    for prefix_len, action_lens in [(7, [3, 1, 5, 2]), (4, [6, 2])]:
        prefix = torch.randint(1, 97, (prefix_len,), generator=generator).tolist()
        actions = [torch.randint(1, 97, (n,), generator=generator).tolist() for n in action_lens]
        groups.append(group_rows([prefix + a for a in actions], [prefix_len] * len(actions)))
    batch = pack_groups(groups, PAD)
    with torch.no_grad():
        packed = _per_action(model, batch, packed=True)
        unpacked = _per_action(model, unpack_batch(batch, PAD), packed=False)
        plain = [
            _plain_logprob(model, group["prefix"] + suffix, start)
            for group in groups
            for suffix, start in zip(group["suffixes"], group["starts"], strict=True)
        ]
    assert packed.shape == (6,)
    torch.testing.assert_close(packed, torch.tensor(plain), atol=1e-5, rtol=0)
    torch.testing.assert_close(unpacked, torch.tensor(plain), atol=1e-5, rtol=0)
    assert packing_agrees(lambda b, p: _per_action(model, b, p), vocab_size=97, pad_id=PAD)


def test_packing_probe_catches_a_model_that_ignores_the_mask():
    model = _model(LlamaConfig).eval()

    def ignores_mask(batch: dict, packed: bool) -> torch.Tensor:
        plain = {**batch, "segment_ids": batch["segment_ids"].clamp(max=0)}  # everything looks like prefix
        return _per_action(model, plain, packed)

    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)  # sharpen the random model so context visibly matters
    assert not packing_agrees(ignores_mask, vocab_size=97, pad_id=PAD)

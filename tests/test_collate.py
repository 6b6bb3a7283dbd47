"""Collate functions against literal tensors, one comment per row."""

import torch

from dapo.data_modules import collate_actor, collate_critic

PAD = 9


def test_collate_critic_literal():
    items = [
        # trajectory 0: 5 tokens, states s_0..s_2 end at tokens 1, 3, 4; s_1 has no target
        {
            "input_ids": [1, 2, 3, 4, 5],
            "boundaries": [1, 3, 4],
            "targets": [0.5, 0.0, 1.0],
            "target_mask": [True, False, True],
        },
        # trajectory 1: 3 tokens, states s_0, s_1 end at tokens 0 and 2
        {"input_ids": [6, 7, 8], "boundaries": [0, 2], "targets": [0.7, 0.0], "target_mask": [True, True]},
    ]
    batch = collate_critic(items, pad_id=PAD)
    assert torch.equal(
        batch["input_ids"],
        torch.tensor(
            [
                [1, 2, 3, 4, 5],  # trajectory 0
                [6, 7, 8, PAD, PAD],  # trajectory 1, padded on the right
            ]
        ),
    )
    assert torch.equal(
        batch["attention_mask"],
        torch.tensor(
            [
                [1, 1, 1, 1, 1],  # all real
                [1, 1, 1, 0, 0],  # two pads
            ]
        ),
    )
    assert torch.equal(
        batch["boundary_index"],
        torch.tensor(
            [
                [1, 3, 4],  # three states
                [0, 2, 0],  # two states, then a padded boundary pointing at token 0
            ]
        ),
    )
    assert torch.equal(
        batch["boundary_mask"],
        torch.tensor(
            [
                [True, True, True],  # all boundaries real
                [True, True, False],  # the third is padding
            ]
        ),
    )
    assert torch.allclose(
        batch["targets"],
        torch.tensor(
            [
                [0.5, 0.0, 1.0],  # soft target 0.5 stays 0.5
                [0.7, 0.0, 0.0],  # soft target 0.7 stays 0.7
            ]
        ),
    )
    assert torch.equal(
        batch["target_mask"],
        torch.tensor(
            [
                [True, False, True],  # s_1 of trajectory 0 has no MC value
                [True, True, False],  # padded boundary has no target
            ]
        ),
    )


def test_collate_actor_literal():
    items = [
        # state A: prefix [1, 2], two actions [3] and [4, 5]
        {"prefix": [1, 2], "suffixes": [[3], [4, 5]], "starts": [2, 2], "advantages": [0.25, -0.25],
         "ref_logprobs": [-1.0, -2.0], "weights": [1.5, 0.5]},
        # state B: prefix [6], one action [7]
        {"prefix": [6], "suffixes": [[7]], "starts": [1], "advantages": [0.0], "ref_logprobs": [-0.5],
         "weights": [1.0]},
    ]  # fmt: skip
    batch = collate_actor(items, pad_id=PAD)
    assert torch.equal(
        batch["input_ids"],
        torch.tensor(
            [
                [1, 2, 3, 4, 5],  # state A: prefix once, then both actions
                [6, 7, PAD, PAD, PAD],  # state B
            ]
        ),
    )
    assert torch.equal(
        batch["segment_ids"],
        torch.tensor(
            [
                [0, 0, 1, 2, 2],  # prefix, action 1, action 2
                [0, 1, -1, -1, -1],  # prefix, action 1, padding
            ]
        ),
    )
    assert torch.equal(
        batch["position_ids"],
        torch.tensor(
            [
                [0, 1, 2, 2, 3],  # both actions continue from the prefix's end
                [0, 1, 0, 0, 0],  # padding positions are 0
            ]
        ),
    )
    assert batch["target_ids"].tolist() == [3, 4, 5, 7]
    assert batch["logit_pos"].tolist() == [1, 1, 3, 0]  # 3 and 4 both read the prefix's last token
    assert batch["action_state"].tolist() == [0, 0, 1]
    assert torch.allclose(batch["advantages"], torch.tensor([0.25, -0.25, 0.0]))
    assert torch.allclose(batch["ref_logprobs"], torch.tensor([-1.0, -2.0, -0.5]))
    assert torch.allclose(batch["weights"], torch.tensor([1.5, 0.5, 1.0]))

"""The DAPO loss and the log-prob gathering it needs, against arithmetic done by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dapo.core.losses import dapo_loss, gather_logprobs, mean_per_state, sum_per_action


def test_gather_logprobs_and_sum_per_action_by_hand():
    """One row, V = 2. Position 0 has logits [0, 0]: p = [1/2, 1/2]; position 1 has [ln 3, 0]: p = [3/4, 1/4].
    Action 0 = tokens (target 1 at position 0, target 0 at position 1): log(1/2) + log(3/4) = log(3/8).
    Action 1 = target 1 at position 1: log(1/4). Action 2 has no tokens: 0."""
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # (b=1, L=2, V=2)
    tokens = gather_logprobs(logits, torch.tensor([0, 0, 0]), torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1]))
    torch.testing.assert_close(tokens, torch.tensor([math.log(0.5), math.log(0.75), math.log(0.25)]))
    per_action = sum_per_action(tokens, torch.tensor([0, 0, 1]), n_actions=3)
    torch.testing.assert_close(per_action, torch.tensor([math.log(3 / 8), math.log(1 / 4), 0.0]))


def test_dapo_loss_by_hand():
    """beta = 0.5; logp = [-1, -2, -0.5], ref = [-1.5, -2, -1] -> log-ratio r = [0.5, 0, 0.5].
    A = [0.25, -0.5, 0] -> A/beta = [0.5, -1, 0]; A/beta - r = [0, -1, -0.5]; 1/2 (.)^2 = [0, 0.5, 0.125].
    Actions 0, 1 belong to state 0 (mean 0.25), action 2 to state 1 (0.125): loss = (0.25 + 0.125) / 2 = 0.1875.
    d loss / d logp_i = -(A_i/beta - r_i) / (states x actions of its state) = [0, 1/4, 1/4]."""
    logp = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    ref, advantages, states = torch.tensor([-1.5, -2.0, -1.0]), torch.tensor([0.25, -0.5, 0.0]), torch.tensor([0, 0, 1])
    out = dapo_loss(logp, ref, advantages, states, beta=0.5)
    torch.testing.assert_close(out.loss, torch.tensor(0.1875))
    torch.testing.assert_close(out.log_ratio, torch.tensor([0.5, 0.0, 0.5]))
    torch.testing.assert_close(out.per_action, torch.tensor([0.0, 0.5, 0.125]))
    out.loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, 0.25, 0.25]))


def test_dapo_loss_default_beta_and_minimiser():
    """beta = 0.01 by default; the loss is zero exactly when log-ratio = A / beta (A = 0.02 -> r = 2)."""
    out = dapo_loss(torch.tensor([1.0]), torch.tensor([-1.0]), torch.tensor([0.02]), torch.tensor([0]))
    assert out.loss.item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="beta"):
        dapo_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0]), beta=0.0)


def test_zero_advantages_pull_log_ratios_to_zero():
    """With A = 0 the loss is 1/2 r^2 per action: its gradient is r (scaled), so a step shrinks every |r|."""
    logp = torch.tensor([0.3, -0.7, 1.2], requires_grad=True)
    ref = torch.zeros(3)
    out = dapo_loss(logp, ref, torch.zeros(3), torch.tensor([0, 1, 1]))
    out.loss.backward()
    assert torch.all(torch.sign(logp.grad) == torch.sign(logp.detach()))
    stepped = logp.detach() - 0.5 * logp.grad
    assert torch.all(stepped.abs() < logp.detach().abs())


def test_mean_per_state_splits_like_gradient_accumulation():
    """Loss of 3 states together == mean of the 3 one-state losses, whatever their action counts."""
    per_action = torch.tensor([1.0, 3.0, 5.0, 2.0, 4.0, 6.0])
    states = torch.tensor([0, 0, 1, 2, 2, 2])
    together = mean_per_state(per_action, states)
    apart = [mean_per_state(per_action[states == s], torch.zeros(int((states == s).sum()), dtype=torch.long))
             for s in range(3)]  # fmt: skip
    torch.testing.assert_close(together, torch.stack(apart).mean())
    torch.testing.assert_close(together, torch.tensor((2.0 + 5.0 + 4.0) / 3))


def test_weights_set_each_actions_share_of_its_state():
    """State 0 holds actions with losses 1 and 3, weighed 3 : 1 -> (3 * 1 + 1 * 3) / 4 = 1.5; state 1 (loss 5,
    weight 0.5) -> 5. Loss (1.5 + 5) / 2. All-ones weights give the unweighted mean; only ratios within a state
    matter."""
    per_action, states = torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 1])
    weighted = mean_per_state(per_action, states, torch.tensor([3.0, 1.0, 0.5]))
    torch.testing.assert_close(weighted, torch.tensor((1.5 + 5.0) / 2))
    torch.testing.assert_close(mean_per_state(per_action, states, torch.ones(3)), mean_per_state(per_action, states))
    torch.testing.assert_close(mean_per_state(per_action, states, torch.tensor([6.0, 2.0, 7.0])), weighted)
    logp = torch.tensor([0.0, 0.0], requires_grad=True)
    weights = torch.tensor([3.0, 1.0])
    out = dapo_loss(logp, torch.zeros(2), torch.tensor([0.1, -0.1]), torch.tensor([0, 0]), 0.1, weights)
    out.loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([-0.75, 0.25]))  # -(A/beta - r) x its share 3/4, 1/4

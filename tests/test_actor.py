"""ActorModule: consistent with the stored reference log-probs, trains every parameter, accumulates exactly."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import lightning as L
import pytest
import torch
from builders import candidate_state_rows
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoModelForCausalLM

from dapo.core.losses import dapo_loss
from dapo.data_modules import StepDataModule
from dapo.pipeline.export import export_checkpoint
from dapo.records import Provenance, write_records
from dapo.stages.candidate_advantages import AdvantageConfig, run_advantages
from dapo.training.actor import RATIO_STATS, ActorModule, log_ratio_stats


@pytest.fixture(scope="module")
def actions(tmp_path_factory, arith, tiny_model_dir, critic_dir) -> Path:
    """Stage B actions of 8 states (4 unique actions each), reference log-probs from the tiny model."""
    tmp = tmp_path_factory.mktemp("stage_b")
    states = write_records(candidate_state_rows(arith, 8), tmp / "states", "states", Provenance(producer="test"))
    config = AdvantageConfig(
        states_path=str(states), critic_path=critic_dir, policy_path=tiny_model_dir, out_dir=str(tmp), min_gap=0.0
    )
    run_advantages(config)
    return tmp / "actions"


def _data(actions: Path, policy: str, **kwargs) -> StepDataModule:
    dm = StepDataModule(mode="actor", train_path=str(actions), tokenizer=policy, **kwargs)
    dm.load_items()
    return dm


def _actor(policy: str, **kwargs) -> ActorModule:
    module = ActorModule(policy, **kwargs)
    module.configure_model()
    return module


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    options = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(default_root_dir=tmp_path, enable_model_summary=False, **(options | kwargs))


def test_log_ratio_is_zero_before_training(actions, tiny_model_dir):
    """The actor computes log pi(a|s) exactly as Stage B computed the stored reference log-probs."""
    actor = _actor(tiny_model_dir).eval()
    batches = list(_data(actions, tiny_model_dir, max_tokens=512).train_dataloader())
    assert len(batches) > 1
    with torch.no_grad():
        for batch in batches:
            torch.testing.assert_close(actor.action_logprobs(batch), batch["ref_logprobs"], atol=1e-4, rtol=0)


def test_unpacked_fallback_gives_the_same_log_probs(actions, tiny_model_dir, tmp_path, monkeypatch):
    actor = _actor(tiny_model_dir).eval()
    data = _data(actions, tiny_model_dir)
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        torch.testing.assert_close(
            actor.action_logprobs(batch, packed=False), actor.action_logprobs(batch), atol=1e-5, rtol=0
        )
    monkeypatch.setattr("dapo.training.actor.check_packing", lambda *args: False)  # an architecture without 4D masks
    _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(actor, datamodule=data)
    assert actor.packed is False


def test_actions_of_another_reference_policy_are_refused(actions, policy_dir, tmp_path):
    actor = _actor(policy_dir)  # the actions' reference log-probs come from tiny_model_dir
    data = StepDataModule(mode="actor", train_path=str(actions), tokenizer=policy_dir)
    with pytest.raises(ValueError, match=r"holds reference log-probs of policy .* but the actor starts from"):
        _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(actor, datamodule=data)


def test_training_changes_every_parameter_and_exports(actions, tiny_model_dir, tmp_path):
    actor = _actor(tiny_model_dir, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))
    before = {name: p.detach().clone() for name, p in actor.named_parameters()}
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer = _trainer(tmp_path, max_steps=3, limit_val_batches=0, enable_checkpointing=True, callbacks=[checkpoints])
    trainer.fit(actor, datamodule=_data(actions, tiny_model_dir, max_tokens=512))
    unchanged = [name for name, p in actor.named_parameters() if torch.equal(p.detach(), before[name])]
    assert not unchanged

    out = export_checkpoint(str(tmp_path / "checkpoints" / "last.ckpt"), str(tmp_path / "hf"))
    exported = AutoModelForCausalLM.from_pretrained(out)  # a plain Hugging Face folder
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    for name, p in exported.named_parameters():
        torch.testing.assert_close(p, actor.model.get_parameter(name))


def test_zero_advantages_pull_log_ratios_to_zero(actions, tiny_model_dir):
    """A = 0 and a reference displaced by +-0.5: SGD on the loss shrinks the log-ratios towards 0."""
    actor = _actor(tiny_model_dir)
    batch = next(iter(_data(actions, tiny_model_dir, max_tokens=4096).train_dataloader()))
    with torch.no_grad():
        offsets = torch.tensor([0.5, -0.5]).repeat(batch["advantages"].shape[0])[: batch["advantages"].shape[0]]
        ref = actor.action_logprobs(batch) - offsets  # log-ratio starts at +-0.5
    optimizer = torch.optim.SGD(actor.parameters(), lr=0.005)
    spreads = []
    for _ in range(5):
        out = dapo_loss(actor.action_logprobs(batch), ref, torch.zeros_like(ref), batch["action_state"])
        spreads.append(out.log_ratio.abs().mean().item())
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(later < earlier for earlier, later in pairwise(spreads)), spreads
    assert spreads[-1] < 0.8 * spreads[0]


def _one_update(actions: Path, policy: str, tmp_path: Path, max_tokens: int, accumulate: int) -> dict:
    torch.manual_seed(0)
    actor = _actor(policy, optimizer=lambda params: torch.optim.SGD(params, lr=0.5))
    trainer = _trainer(
        tmp_path, max_epochs=1, limit_train_batches=accumulate, limit_val_batches=0, accumulate_grad_batches=accumulate
    )
    data = _data(actions, policy, max_tokens=max_tokens)
    assert len(data.train_dataloader()) == accumulate  # 4 states: one per batch, or all in one
    trainer.fit(actor, datamodule=data)
    assert trainer.global_step == 1
    return {name: p.detach().clone() for name, p in actor.named_parameters()}


def test_micro_batch_1_times_accumulate_4_matches_batch_4(tmp_path, arith, tiny_model_dir, critic_dir):
    states = write_records(candidate_state_rows(arith, 4), tmp_path / "states", "states", Provenance(producer="test"))
    config = AdvantageConfig(
        states_path=str(states), critic_path=critic_dir, policy_path=tiny_model_dir, out_dir=str(tmp_path), min_gap=0.0
    )
    run_advantages(config)
    actions = tmp_path / "actions"
    accumulated = _one_update(actions, tiny_model_dir, tmp_path / "a", max_tokens=1, accumulate=4)
    together = _one_update(actions, tiny_model_dir, tmp_path / "b", max_tokens=100_000, accumulate=1)
    start = dict(_actor(tiny_model_dir).named_parameters())
    assert max((together[name] - p).abs().max().item() for name, p in start.items()) > 1e-3  # a real update
    for name, value in together.items():
        torch.testing.assert_close(accumulated[name], value, atol=1e-5, rtol=1e-5)


def test_log_ratio_stats_by_hand():
    """r = [0.5, -0.5, 0, 1], A = [0.1, 0.2, 0, -0.3]: signs agree for action 0 only among A != 0 -> 1/3.
    KL estimate: mean of (e^r - 1) - r = mean([0.1487, 0.1065, 0, 0.7183]) = 0.2434."""
    stats = log_ratio_stats(torch.tensor([0.5, -0.5, 0.0, 1.0]), torch.tensor([0.1, 0.2, 0.0, -0.3]))
    assert tuple(stats) == RATIO_STATS
    assert stats["sign_agreement"].item() == pytest.approx(1 / 3)
    assert stats["log_ratio_mean"].item() == pytest.approx(0.25)
    assert stats["log_ratio_std"].item() == pytest.approx(torch.tensor([0.5, -0.5, 0.0, 1.0]).std(unbiased=False))
    assert stats["kl_ref"].item() == pytest.approx(0.2434, abs=1e-4)

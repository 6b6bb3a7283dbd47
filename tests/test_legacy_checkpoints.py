"""Checkpoints written before the layered package (class paths `dapo.critic.CriticModule`, `dapo.actor.ActorModule`)
still load: `dapo export` rebuilds their module and Lightning's `load_from_checkpoint` instantiates it by the old
class path. The fixtures and the commands that wrote them: tests/fixtures/checkpoints_v0_1/README.md."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM

from dapo import ActorModule, CriticModule
from dapo.models.value import ValueModel
from dapo.pipeline.export import export_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_v0_1"


@pytest.fixture
def in_fixtures(monkeypatch) -> Path:
    monkeypatch.chdir(FIXTURES)  # the checkpoints' model_path is the relative folder `tiny`
    return FIXTURES


def _saved_weights(name: str) -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / name, weights_only=False)["state_dict"]


@pytest.mark.parametrize(
    ("name", "old_path"), [("critic.ckpt", "dapo.critic.CriticModule"), ("actor.ckpt", "dapo.actor.ActorModule")]
)
def test_the_fixtures_name_the_old_class_paths(name, old_path):
    checkpoint = torch.load(FIXTURES / name, weights_only=False)
    assert checkpoint["dapo_module"] == old_path
    assert checkpoint["hyper_parameters"]["_class_path"] == old_path


def test_an_old_critic_checkpoint_exports_with_its_trained_head(in_fixtures, tmp_path):
    out = export_checkpoint(str(in_fixtures / "critic.ckpt"), str(tmp_path / "critic_hf"))
    head = ValueModel.from_pretrained(out).head.weight
    assert torch.equal(head, _saved_weights("critic.ckpt")["model.head.weight"])


def test_an_old_actor_checkpoint_exports_with_its_trained_weights(in_fixtures, tmp_path):
    out = export_checkpoint(str(in_fixtures / "actor.ckpt"), str(tmp_path / "actor_hf"))
    saved = _saved_weights("actor.ckpt")
    loaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, saved[f"model.{key}"]), key


@pytest.mark.parametrize(("name", "module_class"), [("critic.ckpt", CriticModule), ("actor.ckpt", ActorModule)])
def test_lightning_rebuilds_an_old_checkpoint_by_its_class_path(in_fixtures, name, module_class):
    module = L.LightningModule.load_from_checkpoint(in_fixtures / name, weights_only=False)
    assert isinstance(module, module_class)  # the old path resolves to today's class

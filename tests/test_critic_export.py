"""The exported critic is a standard Hugging Face token classifier with one label: plain transformers loads it and
reads the same values as dapo (the model card's own recipe, run here), dapo 0.1's format still loads, and a model
without a value head is an error, never a random head."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

from dapo.models import value as value_module
from dapo.models.value import StepScorer, ValueModel

PROMPT = "Question: Ann has 7 coins. She gets 5 more. How many coins now?\nSolution:\n"
STEPS = ["7 + 5 = 12\n", "Answer: 12"]


def _card_values(folder: Path, prompt: str, steps: list[str]) -> list[float]:
    """Run the python block of the folder's README (the model card) as a user would, on `prompt` and `steps`."""
    card = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)  # type: ignore[union-attr]
    code = re.sub(r"^prompt, steps = .*$", "", code, flags=re.M)
    scope = {"PATH": str(folder), "prompt": prompt, "steps": steps}
    exec(code, scope)
    return scope["values"].tolist()


def test_the_export_loads_in_plain_transformers_with_the_same_values(critic_dir):
    folder = Path(critic_dir)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForTokenClassification"] and config["id2label"] == {"0": "step_value"}
    assert not (folder / "value_head.safetensors").exists()
    ours = StepScorer.from_pretrained(folder).values([(PROMPT, STEPS)])[0]
    theirs = _card_values(folder, PROMPT, STEPS)
    assert len(ours) == 3 and theirs == pytest.approx(ours, abs=1e-5)

    classifier = AutoModelForTokenClassification.from_pretrained(folder).eval()
    loaded = ValueModel.from_pretrained(folder)
    assert torch.equal(classifier.score.weight, loaded.head.weight)  # the value head is exactly the score layer


def test_dapo_0_1_folders_still_load(critic_dir, tmp_path):
    model = ValueModel.from_pretrained(critic_dir)
    model._save_legacy(tmp_path / "old")
    AutoTokenizer.from_pretrained(critic_dir).save_pretrained(tmp_path / "old")
    assert (tmp_path / "old/value_head.safetensors").exists()
    old = StepScorer.from_pretrained(tmp_path / "old").values([(PROMPT, STEPS)])[0]
    new = StepScorer.from_pretrained(critic_dir).values([(PROMPT, STEPS)])[0]
    assert old == pytest.approx(new, abs=1e-6)


def test_a_model_without_a_value_head_is_an_error_not_a_random_head(tiny_model_dir, critic_dir):
    with pytest.raises(ValueError, match=r"has no value head"):
        StepScorer.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match=r"has no value head"):
        ValueModel.from_pretrained(tiny_model_dir)
    fresh = ValueModel.from_pretrained(tiny_model_dir, missing_head="init")  # a critic starting from the policy
    trained = ValueModel.from_pretrained(critic_dir, missing_head="init")  # a critic continuing: its head kept
    assert not torch.equal(fresh.head.weight, trained.head.weight)
    assert torch.equal(trained.head.weight, ValueModel.from_pretrained(critic_dir).head.weight)


def test_a_hub_repository_is_asked_for_its_head_file(monkeypatch, tmp_path):
    from huggingface_hub.errors import EntryNotFoundError

    head = tmp_path / "value_head.safetensors"
    asked = []

    def download(repo_id: str, filename: str) -> str:
        asked.append((repo_id, filename))
        if repo_id == "someone/critic":
            return str(head)
        raise EntryNotFoundError(f"{filename} not in {repo_id}")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    assert value_module._legacy_head_file("someone/critic") == head
    assert value_module._legacy_head_file("someone/policy") is None  # then from_pretrained raises, as above
    assert asked == [("someone/critic", "value_head.safetensors"), ("someone/policy", "value_head.safetensors")]

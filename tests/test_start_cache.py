"""The demo's start policy is copied from the cache only when it was made from the same settings, code and machine;
anything else trains it again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dapo.pipeline import demo as demo_module
from dapo.pipeline import start_cache
from dapo.pipeline.demo import StartPolicy

TINY = StartPolicy(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, sft_steps=2, batch_size=8)


def _weights(folder: Path) -> bytes:
    return (folder / "policy" / "model.safetensors").read_bytes()


def test_a_second_demo_with_the_same_start_copies_it_and_another_seed_trains(tmp_path, arith, monkeypatch):
    demo_module._start_policy(arith, TINY, 0, tmp_path / "a", cached=True)
    trained = _weights(tmp_path / "a")

    def refuse(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(demo_module, "train_start_policy", refuse)
    demo_module._start_policy(arith, TINY, 0, tmp_path / "b", cached=True)
    assert _weights(tmp_path / "b") == trained
    assert list((tmp_path / "b" / "tb" / "start_policy").iterdir())  # the loss curve came along
    for seed, start in ((1, TINY), (0, StartPolicy(**{**TINY.__dict__, "lr": 1e-3}))):
        with pytest.raises(AssertionError, match="trained again"):
            demo_module._start_policy(arith, start, seed, tmp_path / "c", cached=True)
    with pytest.raises(AssertionError, match="trained again"):
        demo_module._start_policy(arith, TINY, 0, tmp_path / "d", cached=False)


def test_a_record_that_differs_in_anything_trains_again(tmp_path):
    made = []

    def train() -> None:
        made.append(1)
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / "w").write_text(str(len(made)))

    record = start_cache.start_record({"seed": 0}, None, [start_cache.cache_root])
    assert start_cache.cached_or_trained(record, {"m": tmp_path / "out"}, train) is False
    assert start_cache.cached_or_trained(record, {"m": tmp_path / "out"}, train) is True and len(made) == 1
    assert (tmp_path / "out" / "w").read_text() == "1"
    other_code = start_cache.start_record({"seed": 0}, None, [json.dumps])
    assert other_code["code"] != record["code"] and other_code["cpu"] == record["cpu"]
    for other in (other_code, {**record, "seed": 1}, {**record, "cpu": "another CPU"}):
        assert start_cache.cached_or_trained(other, {"m": tmp_path / "out"}, train) is False
    assert len(made) == 4


def test_the_cache_lives_where_dapo_cache_says(tmp_path, monkeypatch):
    monkeypatch.setenv("DAPO_CACHE", str(tmp_path))
    assert start_cache.cache_root() == tmp_path
    monkeypatch.delenv("DAPO_CACHE")
    assert start_cache.cache_root() == Path.home() / ".cache" / "dapo"

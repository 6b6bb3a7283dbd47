"""The `dapo` command: help, every config parses, critic.yaml then actor.yaml (+ debug.yaml) run from problems to
an exported actor, and iterate.yaml runs two rounds and resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM

from dapo.cli import cli_main
from dapo.models.value import StepScorer
from dapo.records import read_provenance, read_records

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_help_lists_commands(capsys):
    cli_main(["--help"])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "rollout", "advantages", "iterate", "demo", "problems", "tiny-model", "export"):
        assert f"  {command} " in out


CONFIG_FILES = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml") if p.name != "debug.yaml")


@pytest.mark.parametrize("config", CONFIG_FILES)
def test_every_config_parses(config, capsys):
    """Each config opens with the command that runs it; that command parses it (with the debug overlay), and
    every top-level key of the file is in the parsed configuration."""
    header = (CONFIGS / config).read_text().splitlines()[0].split()
    assert header[:2] == ["#", "dapo"] and f"configs/{config}" in header, header
    command = header[2]  # the header's own --config files (an overlay names the config it goes on), then debug
    args = [str(CONFIGS / a.removeprefix("configs/")) if a.startswith("configs/") else a for a in header[3:]]
    overlay = ["--config", str(CONFIGS / "debug.yaml")] if command in ("fit", "iterate") else []
    with pytest.raises(SystemExit) as exit_info:
        cli_main([command, *args, *overlay, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert set(yaml.safe_load((CONFIGS / config).read_text())) <= set(printed)


def _tags(log_dir: Path) -> dict[str, list[str]]:
    events = EventAccumulator(str(next(log_dir.rglob("events.out.tfevents.*"))), size_guidance={"tensors": 0})
    events.Reload()
    return events.Tags()


def test_critic_then_actor_config_end_to_end(tmp_path, policy_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(policy_dir, "runs/arith/policy")
    args = ["fit", "--config", str(CONFIGS / "critic.yaml"), "--config", str(CONFIGS / "debug.yaml")]
    cli_main(args)

    states = read_records("runs/arith/stage_a/states", "states")
    assert states.num_rows > 0 and set(states["n_rollouts"]) <= {0, 2}
    tags = _tags(Path("runs/arith/critic/tb"))
    for scalar in ("train/loss", "val/bce", "val/mse", "val/pearson", "val/outcome_brier", "val/outcome_ece"):
        assert scalar in tags["scalars"], scalar
    assert "val/predicted_values" in tags["histograms"]
    assert "val/reliability" in tags["images"]
    assert any("value_traces" in t for t in tags["tensors"])

    cli_main(["export", "--ckpt", "runs/arith/critic/checkpoints/last.ckpt", "--out", "runs/arith/critic_hf"])
    values = StepScorer.from_pretrained("runs/arith/critic_hf").values([("Question: 2 + 2\nSolution:\n", ["4"])])
    assert len(values[0]) == 2

    shard = next(Path("runs/arith/stage_a/states").glob("shard-*"))
    made = shard.stat().st_mtime_ns
    cli_main(args)  # same policy and settings: Stage A is not redone
    assert shard.stat().st_mtime_ns == made
    cli_main([*args, "--stage_a.rollout.n_rollouts", "3"])  # other settings: the old run is moved aside, redone
    assert list(Path("runs/arith").glob("stage_a.stale-*"))
    assert set(read_records("runs/arith/stage_a/states", "states")["n_rollouts"]) <= {0, 3}

    actor_args = ["fit", "--config", str(CONFIGS / "actor.yaml"), "--config", str(CONFIGS / "debug.yaml")]
    cli_main(actor_args)
    actions = read_records("runs/arith/stage_b/actions", "actions")
    assert actions.num_rows > 0
    tags = _tags(Path("runs/arith/actor/tb"))
    for scalar in ("train/loss", "train/log_ratio_mean", "train/log_ratio_std", "train/sign_agreement", "train/kl_ref"):
        assert scalar in tags["scalars"], scalar
    assert "val/loss" in tags["scalars"] and "benchmark/arith/accuracy" in tags["scalars"]
    assert "train/advantages" in tags["histograms"]
    cli_main(["export", "--ckpt", "runs/arith/actor/checkpoints/last.ckpt", "--out", "runs/arith/actor_hf"])
    assert AutoModelForCausalLM.from_pretrained("runs/arith/actor_hf").config.model_type == "llama"


def _finished(root: Path) -> dict[str, int]:
    """Modification times of every stage's completion marker in an iterate folder."""
    markers = ["stage_a/summary.json", "critic/hf", "stage_b/summary.json", "actor/hf"]
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for m in markers for p in sorted(root.glob(f"iter-*/{m}"))}


def test_iterate_two_rounds_then_resumes_without_redoing(tmp_path, policy_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(policy_dir, "runs/arith/policy")
    Path("configs").symlink_to(CONFIGS)
    args = ["iterate", "--config", "configs/iterate.yaml", "--config", "configs/debug.yaml"]
    cli_main(args)
    root = Path("runs/arith/iterate")
    first = _finished(root)
    assert len(first) == 8  # 4 stages x 2 rounds
    round_2 = json.loads((root / "iter-02" / "iteration.json").read_text())
    assert round_2["policy_path"] == str(root / "iter-01" / "actor" / "hf")  # round 1's actor generates round 2
    assert round_2["critic_init"] == str(root / "iter-01" / "critic" / "hf")  # and its critic continues
    assert read_provenance(root / "iter-02" / "stage_a" / "states").policy_path == round_2["policy_path"]

    cli_main(args)  # everything finished: nothing is redone
    assert _finished(root) == first

    shutil.rmtree(root / "iter-02" / "actor" / "hf")  # as if killed while training round 2's actor
    cli_main(args)
    again = _finished(root)
    changed = sorted(k for k in first if again[k] != first[k])
    assert changed == ["iter-02/actor/hf"]

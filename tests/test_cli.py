"""The `dapo` command: help, every config parses, and critic.yaml + debug.yaml run from problems to a critic."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dapo.cli import cli_main
from dapo.models.value import StepScorer
from dapo.records import read_records

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_help_lists_commands(capsys):
    cli_main(["--help"])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "rollout", "problems", "tiny-model", "export"):
        assert f"  {command} " in out


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name != "debug.yaml"))
def test_every_config_parses(config, capsys):
    """Each config opens with the command that runs it; that command parses it (with the debug overlay)."""
    header = (CONFIGS / config).read_text().splitlines()[0].split()
    assert header[:2] == ["#", "dapo"] and f"configs/{config}" in header, header
    command = header[2]
    overlay = ["--config", str(CONFIGS / "debug.yaml")] if command == "fit" else []
    with pytest.raises(SystemExit) as exit_info:
        cli_main([command, "--config", str(CONFIGS / config), *overlay, "--print_config"])
    assert exit_info.value.code == 0
    assert "policy_path" in capsys.readouterr().out


def _tags(log_dir: Path) -> dict[str, list[str]]:
    events = EventAccumulator(str(next(log_dir.rglob("events.out.tfevents.*"))), size_guidance={"tensors": 0})
    events.Reload()
    return events.Tags()


def test_critic_config_end_to_end(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, "runs/arith/policy")
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

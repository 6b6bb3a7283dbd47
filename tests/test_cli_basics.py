"""The `dapo` command's first impressions: help without importing torch, a version, one clear line (no traceback)
when a model folder is missing, and LightningCLI's help for a module by its short name."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dapo import __version__
from dapo.cli import COMMANDS, cli_main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def dapo(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "dapo.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_help_lists_every_command_without_importing_torch():
    code = "import sys; from dapo.cli import cli_main; cli_main(['--help']); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[-1] == "False"
    assert all(any(line.strip().startswith(name + " ") for line in lines) for name in [*COMMANDS, "fit", "validate"])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_summary_is_its_functions_docstring(name):
    target, summary = COMMANDS[name]
    module, _, function = target.partition(":")
    doc = getattr(importlib.import_module(module), function).__doc__
    assert doc.strip().splitlines()[0] == summary


def test_version(tmp_path):
    done = dapo(["--version"], tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"dapo {__version__}"


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["fit", "--config", str(CONFIGS / "critic.yaml")], "runs/arith/policy"),
        (
            [
                "plan",
                "--config",
                str(CONFIGS / "iterate.yaml"),
                "--critic_config",
                str(CONFIGS / "critic.yaml"),
                "--actor_config",
                str(CONFIGS / "actor.yaml"),
            ],
            "runs/arith/policy",
        ),
        (["advantages", "--config", str(CONFIGS / "advantages.yaml")], "runs/arith/critic_hf"),
        (["evaluate", "--model", "runs/arith/policy", "--task", "arith"], "runs/arith/policy"),
    ],
)
def test_a_missing_model_folder_is_one_line_naming_it_and_its_maker(tmp_path, args, names):
    done = dapo(args, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("dapo "))
    assert names in line and "make it first: dapo " in line


def test_a_module_is_found_by_its_short_name_for_help(tmp_path):
    done = dapo(["fit", "--model.help", "CriticModule"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--model.model_path" in done.stdout and "dapo.training.critic.CriticModule" in done.stdout


def test_repeated_config_files_merge_section_by_section(tmp_path, capsys):
    """`--config debug.yaml --config ddp.yaml` keeps debug.yaml's trainer settings beside ddp.yaml's (jsonargparse
    alone would let the second file replace the whole `trainer` dict); plain values still follow the last file,
    and a `--trainer` flag between files starts that section over."""
    from dapo.pipeline.configs import merge_repeated_configs

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("trainer: {max_epochs: 1, limit_train_batches: 4}\niterations: 3\n")
    second.write_text("trainer: {devices: 2, max_epochs: 2}\n")
    args = merge_repeated_configs(["--config", str(first), "--config", str(second), "--iterations", "5"])
    assert yaml.safe_load(args[3]) == {"trainer": {"max_epochs": 2, "limit_train_batches": 4, "devices": 2}}
    assert args[4:] == ["--iterations", "5"]
    reset = merge_repeated_configs(["--config", str(first), "--trainer", "{}", f"--config={second}"])
    assert yaml.safe_load(reset[-1]) == {"trainer": {"devices": 2, "max_epochs": 2}}
    assert merge_repeated_configs(["--config", str(first)]) == ["--config", str(first)]  # one file: untouched


def test_a_missing_repeated_config_file_is_named(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("iterations: 1\n")
    with pytest.raises(SystemExit):
        cli_main(["plan", "--config", str(tmp_path / "a.yaml"), "--config", str(tmp_path / "nope.yaml")])
    assert "nope.yaml: no such file" in capsys.readouterr().err

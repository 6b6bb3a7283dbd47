"""Exact resume: a `dapo fit` subprocess SIGKILLed mid-epoch and resumed with `--ckpt_path last` ends with the
weights of an uninterrupted run. Dropout is on (RNG restored), an LR schedule runs (scheduler restored), AdamW
carries moments (optimizer restored), and the kills land mid-epoch in both epochs (data position restored)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from builders import reference_state_rows
from killers import KILL_AT_PROBLEM, KILL_AT_STEP

from dapo.pipeline.configs import deep_merge
from dapo.records import Provenance, write_records

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
CHECKPOINT_EVERY = 3
TOLERANCE = 1e-6  # float ops replay identically on CPU: any drift means state was lost, not rounding


def child_env(**extra: str) -> dict[str, str]:
    """Environment of a `dapo` subprocess: offline, the tests folder importable (killers), one thread."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": path, "OMP_NUM_THREADS": "1"} | extra


def run_dapo(
    args: list[str], cwd: Path, kill_at: str | None = None, kill_problem: str | None = None
) -> subprocess.CompletedProcess:
    """`dapo ARGS` in a subprocess; SIGKILLed at "<fit folder>:<step>" (`kill_at`) or when Stage A first scores a
    response to `kill_problem`."""
    env = child_env(
        **({KILL_AT_STEP: kill_at} if kill_at else {}), **({KILL_AT_PROBLEM: kill_problem} if kill_problem else {})
    )
    command = [sys.executable, "-m", "dapo.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def dropout_model(tiny_model_dir: str, out: Path) -> str:
    """The tiny model with attention dropout on, so a resumed run must restore the RNG to draw the same masks."""
    shutil.copytree(tiny_model_dir, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"attention_dropout": 0.2}))
    return str(out)


def critic_config(root: Path, model: str, states: Path) -> Path:
    config = {
        "seed_everything": 0,
        "model": {
            "class_path": "dapo.training.critic.CriticModule",
            "init_args": {
                "model_path": model,
                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 3e-3}},
                "lr_scheduler": {
                    "class_path": "torch.optim.lr_scheduler.LinearLR",
                    "init_args": {"start_factor": 1.0, "end_factor": 0.1, "total_iters": 20},
                },
            },
        },
        "data": {"mode": "critic", "train_path": str(states), "max_tokens": 160, "max_length": 256},
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 2,
            "limit_val_batches": 0,
            "logger": False,
            "enable_progress_bar": False,
            "default_root_dir": str(root),
            "callbacks": [
                {
                    "class_path": "dapo.callbacks.StepCheckpoint",
                    "init_args": {
                        "dirpath": str(root / "checkpoints"),
                        "save_last": True,
                        "every_n_train_steps": CHECKPOINT_EVERY,
                    },
                },
                {"class_path": "killers.KillAtStep"},
            ],
        },
    }
    path = root / "critic.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def loop_position(root: Path) -> tuple[int, int, list[dict]]:
    """(epoch, batches done in it, the train loader's saved state) of the run's last checkpoint."""
    checkpoint = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    fit_loop = checkpoint["loops"]["fit_loop"]
    done = fit_loop["epoch_loop.batch_progress"]["current"]["processed"]  # "completed" lags by one there
    return checkpoint["epoch"], done, fit_loop["state_dict"]["combined_loader"]


def test_fit_killed_mid_epoch_twice_resumes_to_the_uninterrupted_weights(tmp_path, arith, tiny_model_dir):
    model = dropout_model(tiny_model_dir, tmp_path / "model")
    states = write_records(
        reference_state_rows(arith, 40, lambda t, T: (t + 1) / (T + 2)),
        tmp_path / "states",
        "states",
        Provenance(producer="test"),
    )
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = run_dapo(["fit", "--config", str(critic_config(straight, model, states))], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    per_epoch = steps // 2
    assert steps % CHECKPOINT_EVERY != 0  # so the final last.ckpt can only come from StepCheckpoint's end save
    assert per_epoch > 2 * CHECKPOINT_EVERY  # room for a kill between checkpoints inside each epoch

    config = str(critic_config(killed, model, states))
    first_kill, second_kill = CHECKPOINT_EVERY + 1, per_epoch + 2 * CHECKPOINT_EVERY - 1  # epoch 0, then epoch 1
    died = run_dapo(["fit", "--config", config], tmp_path, kill_at=f"killed:{first_kill}")
    assert died.returncode == -9, died.stderr[-3000:]
    epoch, done_in_epoch, loader = loop_position(killed)
    assert (epoch, done_in_epoch) == (0, CHECKPOINT_EVERY) and loader == [{"epoch": 0, "batches": CHECKPOINT_EVERY}]

    died = run_dapo(["fit", "--config", config, "--ckpt_path", "last"], tmp_path, kill_at=f"killed:{second_kill}")
    assert died.returncode == -9, died.stderr[-3000:]
    epoch, done_in_epoch, _ = loop_position(killed)
    assert epoch == 1 and 0 < done_in_epoch < per_epoch  # the second kill is mid-epoch too

    resumed = run_dapo(["fit", "--config", config, "--ckpt_path", "last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr  # Lightning's warning when it cannot restore the data position
    a, b = final_weights(straight), final_weights(killed)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= TOLERANCE, f"resumed weights differ from the uninterrupted run by {worst}"


def _iterate_overlay(path: Path) -> Path:
    """configs/debug.yaml plus: one round; checkpoints every 2 steps; Stage A grades with KillingArithTask, fits
    carry KillAtStep (both idle unless their environment variable is set, so every run has the same settings).
    One file, because a later `--config` replaces a whole section of `dapo iterate` rather than merging into it."""
    debug = yaml.safe_load((TESTS.parent / "configs" / "debug.yaml").read_text())
    overlay = {
        "iterations": 1,
        "trainer": {
            "max_epochs": 2,
            "callbacks": [
                {
                    "class_path": "dapo.callbacks.StepCheckpoint",
                    "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 2},
                },
                {"class_path": "killers.KillAtStep"},
            ],
        },
        "stage_a": {"task": {"class_path": "killers.KillingArithTask"}},
    }
    path.write_text(yaml.safe_dump(deep_merge(debug, overlay)))
    return path


def _hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {name: tensor for file in sorted(folder.glob("*.safetensors")) for name, tensor in load_file(file).items()}


def test_iterate_killed_in_stage_a_and_in_the_actor_fit_ends_as_an_uninterrupted_run(tmp_path, policy_dir):
    configs = TESTS.parent / "configs"
    runs = {}
    for name in ("straight", "killed"):
        cwd = tmp_path / name
        shutil.copytree(policy_dir, cwd / "runs/arith/policy")
        args = ["iterate", "--config", str(configs / "iterate.yaml")]
        args += ["--config", str(_iterate_overlay(tmp_path / f"{name}.yaml"))]
        args += ["--critic_config", str(configs / "critic.yaml"), "--actor_config", str(configs / "actor.yaml")]
        runs[name] = (cwd, args)
    cwd, args = runs["straight"]
    done = run_dapo(args, cwd)
    assert done.returncode == 0, done.stderr[-3000:]

    cwd, args = runs["killed"]
    round_dir = cwd / "runs/arith/iterate/iter-01"
    stage_a = round_dir / "stage_a"
    died = run_dapo(args, cwd, kill_problem="arith-train-00005")  # shard 1 of 2 (4 problems per shard)
    assert died.returncode == -9, died.stderr[-3000:]
    assert [p.name for p in sorted((stage_a / "states").glob("shard-*"))] == ["shard-00000"]
    assert not (stage_a / "summary.json").exists()

    died = run_dapo(args, cwd, kill_at="iter-01/actor:3")
    assert died.returncode == -9, died.stderr[-3000:]
    assert (round_dir / "critic/hf").exists() and (round_dir / "stage_b/summary.json").exists()
    assert not (round_dir / "actor/hf").exists()
    assert torch.load(round_dir / "actor/checkpoints/last.ckpt", weights_only=True)["global_step"] == 2

    resumed = run_dapo(args, cwd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the fit" in resumed.stderr
    straight_round = runs["straight"][0] / "runs/arith/iterate/iter-01"
    for stage in ("critic/hf", "actor/hf"):
        a, b = _hf_weights(straight_round / stage), _hf_weights(round_dir / stage)
        worst = max(float((a[k] - b[k]).abs().max()) for k in a)
        assert a.keys() == b.keys() and worst <= TOLERANCE, f"{stage} differs by {worst}"

"""`dapo iterate` with a multi-process overlay (configs/ddp.yaml, configs/fsdp.yaml) on 2 CPU processes: one round
in miniature finishes with an exported critic and actor, both ranks having joined each fit; and a rank that cannot
start fails the command with that rank's error, in bounded time, instead of leaving rank 0 waiting for it.

Each multi-process fit runs as a `dapo fit --config fit.yaml` subprocess whose Lightning starts rank 1 by re-running
that command line (dapo/pipeline/fit.py `fit_in_processes`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import yaml

from dapo.cli import cli_main

TESTS = Path(__file__).resolve().parent
CONFIGS = TESTS.parent / "configs"


class FailOnRank1(L.Callback):
    """A callback rank 1 cannot build (Lightning's launcher gives it LOCAL_RANK=1), as when a rank lacks a file,
    a package or memory that rank 0 has."""

    def __init__(self) -> None:
        if os.environ.get("LOCAL_RANK") == "1":
            raise RuntimeError("rank 1 cannot start: simulated by FailOnRank1")


def _workspace(tmp_path: Path, policy_dir: str, overlay: str, extra: dict[str, Any] | None = None) -> list[str]:
    """A run folder with the policy where configs/iterate.yaml looks for it, and the issue's command line for one
    round: `dapo iterate --config configs/iterate.yaml --config configs/debug.yaml --config configs/<overlay>
    --iterations 1` (plus one more file for `extra`)."""
    shutil.copytree(policy_dir, tmp_path / "runs/arith/policy")
    files = [CONFIGS / "iterate.yaml", CONFIGS / "debug.yaml", CONFIGS / overlay]
    if extra:
        (tmp_path / "extra.yaml").write_text(yaml.safe_dump(extra))
        files.append(tmp_path / "extra.yaml")
    configs = [arg for file in files for arg in ("--config", str(file))]
    fits = ["--critic_config", str(CONFIGS / "critic.yaml"), "--actor_config", str(CONFIGS / "actor.yaml")]
    return ["iterate", *configs, "--iterations", "1", *fits]


@pytest.mark.parametrize("overlay", ["ddp.yaml", "fsdp.yaml"])
def test_iterate_round_on_two_processes(overlay, tmp_path, policy_dir, monkeypatch, capfd):
    """Also with the launch variables an earlier in-process multi-process fit leaves in the environment (a
    MASTER_PORT whose port is taken, WORLD_SIZE, RANK, ...): the fit must start its own ranks on a free port rather
    than fail with EADDRINUSE or wait for ranks of a launcher that is not there."""
    monkeypatch.chdir(tmp_path)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        monkeypatch.setenv("MASTER_PORT", str(held.getsockname()[1]))
        for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "NODE_RANK": "0"}.items():
            monkeypatch.setenv(name, value)  # as an in-process fit leaves them
        cli_main(_workspace(tmp_path, policy_dir, overlay))

    round_dir = tmp_path / "runs/arith/iterate/iter-01"
    assert (round_dir / "stage_a/summary.json").exists() and (round_dir / "stage_b/summary.json").exists()
    for fit in ("critic", "actor"):
        assert (round_dir / fit / "hf" / "model.safetensors").is_file(), fit
        assert (round_dir / fit / "fit.yaml").is_file()  # the `dapo fit --config` the fit ran as
    critic_config = json.loads((round_dir / "critic/hf/config.json").read_text())
    assert critic_config["architectures"] == ["LlamaForTokenClassification"]  # the critic's standard export
    err = capfd.readouterr().err
    for rank in (0, 1):  # both ranks joined each fit (Lightning logs this from every rank)
        assert err.count(f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2") == 2, rank
    if overlay == "fsdp.yaml":  # a sharded checkpoint: one file of shards per rank
        assert len(list((round_dir / "critic/checkpoints/last.ckpt").glob("*.distcp"))) == 2


def test_a_rank_that_cannot_start_fails_the_command_with_its_error(tmp_path, policy_dir):
    checkpoint = {"class_path": "dapo.callbacks.StepCheckpoint", "init_args": {"save_last": True, "save_top_k": 0}}
    failing = {"class_path": "test_iterate_distributed.FailOnRank1"}
    args = _workspace(tmp_path, policy_dir, "ddp.yaml", {"trainer": {"callbacks": [checkpoint, failing]}})
    env = os.environ | {"PYTHONPATH": str(TESTS), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dapo.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    seconds = time.perf_counter() - start
    assert done.returncode != 0
    assert "FitFailed" in done.stderr and "rank 1 cannot start: simulated by FailOnRank1" in done.stderr
    assert not (tmp_path / "runs/arith/iterate/iter-01/critic/hf").exists()
    print(f"failed after {seconds:.0f} s")

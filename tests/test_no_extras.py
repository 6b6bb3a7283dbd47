"""The core pipeline runs on the design card's packages and `[project.dependencies]` alone: a debug-size iterate
round (Stage A, critic fit and export, Stage B, actor fit and export), `dapo export` and `dapo evaluate` in a child
process where peft, gguf, accelerate, reasoning_gym and vllm cannot be imported (tests/no_extras/sitecustomize.py).
An optional feature asked for there says which extra to install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
CONFIGS = TESTS.parent / "configs"


def run_without_extras(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(TESTS / "no_extras"), os.environ.get("PYTHONPATH", "")) if p)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dapo.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_blocker_blocks(tmp_path):
    done = run_without_extras(["--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    probe = subprocess.run(
        [sys.executable, "-c", "import peft"],
        env=os.environ | {"PYTHONPATH": str(TESTS / "no_extras")},
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr


def test_iterate_export_and_evaluate_run_without_extras(tmp_path, policy_dir):
    shutil.copytree(policy_dir, tmp_path / "runs/arith/policy")
    args = ["iterate", "--config", str(CONFIGS / "iterate.yaml"), "--config", str(CONFIGS / "debug.yaml")]
    args += ["--critic_config", str(CONFIGS / "critic.yaml"), "--actor_config", str(CONFIGS / "actor.yaml")]
    done = run_without_extras([*args, "--iterations", "1"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    round_dir = tmp_path / "runs/arith/iterate/iter-01"
    assert (round_dir / "critic/hf/README.md").exists()  # exported as a token classifier, with its model card
    assert (round_dir / "actor/hf/config.json").exists()

    ckpt = round_dir / "actor/checkpoints/last.ckpt"
    done = run_without_extras(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "exported")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "exported/config.json").exists()

    out = tmp_path / "eval"
    evaluate = ["evaluate", "--model", str(tmp_path / "exported"), "--task", "arith", "--limit", "4", "--out", str(out)]
    done = run_without_extras(evaluate, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "summary.json").exists()


def test_an_optional_feature_names_its_extra(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"GGUF")  # reading it needs the gguf package, which is blocked
    done = run_without_extras(
        ["import-gguf", "--out", str(tmp_path / "m"), "--gguf", str(tmp_path / "x.gguf")], tmp_path
    )
    assert done.returncode != 0
    assert "dapo[scale]" in done.stderr and "Traceback" not in done.stderr

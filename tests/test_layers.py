"""The package's layers contract (import-linter, configured in pyproject.toml) holds, and it is not vacuous: a
wrong-way import or an import cycle planted in a copy of the package breaks it, naming the import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(root)}  # this copy of dapo, ahead of the installed one
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _copy(tmp_path: Path) -> Path:
    for folder in ("dapo", "callbacks", "data_modules"):  # dapo/callbacks and dapo/data_modules are links to these
        shutil.copytree(ROOT / folder, tmp_path / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def _plant(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}  # planted\n")


def test_the_package_keeps_its_layers_and_has_no_cycles():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_a_wrong_way_import_breaks_the_layers_contract(tmp_path):
    root = _copy(tmp_path)
    _plant(root / "dapo" / "core" / "steps.py", "from dapo.pipeline import configs")
    done = _lint(root)
    assert done.returncode == 1
    assert "dapo.core is not allowed to import dapo.pipeline" in done.stdout
    assert "dapo.core.steps -> dapo.pipeline.configs" in done.stdout


def test_a_callback_imported_by_the_training_layer_breaks_it_too(tmp_path):
    root = _copy(tmp_path)  # the linked top-level folders are part of the graph
    _plant(root / "dapo" / "training" / "optim.py", "from dapo.callbacks import checkpoints")
    done = _lint(root)
    assert done.returncode == 1
    assert "dapo.training.optim -> dapo.callbacks.checkpoints" in done.stdout


def test_an_import_cycle_inside_a_package_breaks_the_cycles_contract(tmp_path):
    root = _copy(tmp_path)
    _plant(root / "dapo" / "tasks" / "base.py", "from dapo.tasks import arith")  # arith imports base
    done = _lint(root)
    assert done.returncode == 1
    assert "No cycles are allowed in dapo.tasks" in done.stdout and ".base -> .arith" in done.stdout

"""Ways for a test to kill a real `dapo` subprocess at a chosen point, with SIGKILL: no handler, no cleanup, as
when a node dies or the OOM killer strikes. Each does nothing unless the environment variable it names is set, so
the first run and its resumption can share one config (`dapo iterate` and Stage A compare configs on resume).
Imported by the child through PYTHONPATH (the tests folder), e.g. `class_path: killers.KillAtStep`."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L

from dapo.tasks import ArithTask

KILL_AT_STEP = "DAPO_TEST_KILL_AT_STEP"  # "<end of the fit's folder>:<global step>", e.g. "iter-01/actor:3"
KILL_AT_PROBLEM = "DAPO_TEST_KILL_AT_PROBLEM"  # a problem id: die when scoring the first response to it


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(L.Callback):
    """Dies after optimizer step N of the fit whose default_root_dir ends with the given path."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        where, _, step = os.environ.get(KILL_AT_STEP, "").rpartition(":")
        if step and str(trainer.default_root_dir).endswith(where) and trainer.global_step == int(step):
            die()


class KillingArithTask(ArithTask):
    """ArithTask that dies when it first scores a response to one problem (Stage A mid-run)."""

    def score(self, example: dict[str, Any], response: str) -> float:
        if example.get("id") == os.environ.get(KILL_AT_PROBLEM):
            die()
        return super().score(example, response)

"""LightningCLI for `dapo fit|validate`: the model is chosen by class_path, the data is StepDataModule.

The tokenizer is linked from the model's checkpoint path, so a config names it once. Two top-level sections
make the data a fit needs, each off unless set: `stage_a` (on when `stage_a.policy_path` is set) adds the
StepValueRollout callback (Stage A states for the critic), `advantages` (on when `advantages.critic_path` is
set) adds StepAdvantages (Stage B actions for the actor). Lightning's distributed sampler is off by default:
StepDataModule's batch sampler gives each data-parallel rank its share of the token-budgeted batches.
CriticModule and ActorModule are imported here so that their short names resolve (`--model.help CriticModule`).

`fit_in_processes` runs one fit as a `dapo fit --config FILE` subprocess: a fit on several devices must be started
from a real `dapo fit` command line, because Lightning starts the other ranks by re-running this process's command.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import lightning as L
import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from dapo.callbacks import StepAdvantages, StepValueRollout
from dapo.core.errors import check_model_folder
from dapo.data_modules import StepDataModule
from dapo.stages.candidate_advantages import AdvantageConfig
from dapo.stages.stage_a import StageA
from dapo.training.actor import ActorModule
from dapo.training.critic import CriticModule

__all__ = ["ActorModule", "CriticModule", "DapoLightningCLI"]  # the modules a config's class_path may name

log = logging.getLogger(__name__)
OUTPUT_TAIL = 4000  # characters of a failed fit's output its error repeats
GRACE_SECONDS = 60.0  # how long the other ranks may take to exit after rank 0 exited cleanly


class DapoLightningCLI(LightningCLI):
    def __init__(self, args: list[str] | dict[str, Any] | None = None) -> None:
        super().__init__(
            model_class=L.LightningModule,
            datamodule_class=StepDataModule,
            subclass_mode_model=True,
            args=args,
            save_config_kwargs={"overwrite": True},
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.init_args.model_path", "data.tokenizer")
        # StepDataModule's token-budget batch sampler splits batches across data-parallel ranks itself
        parser.set_defaults({"trainer.use_distributed_sampler": False})
        parser.add_dataclass_arguments(StageA, "stage_a")
        parser.add_dataclass_arguments(AdvantageConfig, "advantages")

    def before_instantiate_classes(self) -> None:
        """A missing model folder is one clear line here (the modules check it too, but jsonargparse would bury
        their error in a page of its own)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        path = config["model"]["init_args"]["model_path"]
        check_model_folder(path, "model.init_args.model_path")

    def before_fit(self) -> None:
        """Stage A (for the critic) and Stage B scoring (for the actor) run at fit start when configured."""
        config = self.config_init[self.subcommand]
        if config["stage_a"].policy_path is not None:
            self.trainer.callbacks.append(StepValueRollout(config["stage_a"]))  # type: ignore[attr-defined]
        if config["advantages"].critic_path is not None:
            self.trainer.callbacks.append(StepAdvantages(config["advantages"]))  # type: ignore[attr-defined]


class FitFailed(RuntimeError):
    """A `dapo fit` subprocess (any of its ranks) failed; the message ends with the tail of its output."""


def fit_in_processes(config: dict[str, Any], config_file: Path) -> None:
    """Run `dapo fit --config config_file` (written from `config`) in a subprocess that starts its own ranks.

    Lightning's launcher re-runs the command of the process that calls `Trainer.fit` once per extra rank, so that
    command must be `dapo fit` itself (in-process, the other ranks would re-run `dapo iterate`'s command line).
    The fit runs in a process group of its own: when it ends, any rank still alive is killed, so a rank 0 that
    died cannot leave a rank 1 waiting in a collective. When a rank other than 0 exits with an error, Lightning
    kills the rest; either way this raises `FitFailed` with the end of the fit's output (the ranks' stderr)."""
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "dapo.cli", "fit", "--config", str(config_file)]
    log.info("running the fit in its own processes: %s", " ".join(command))
    fit = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True, env=_fit_environment(config))
    assert fit.stderr is not None
    tail: list[str] = [""]
    copier = threading.Thread(target=_copy_stream, args=(fit.stderr, tail), daemon=True)
    copier.start()
    try:
        code = fit.wait()
        copier.join(GRACE_SECONDS if code == 0 else 5.0)  # stderr ends when every rank has exited
    finally:
        _kill_group(fit.pid)
    copier.join(5.0)  # the killed ranks' ends of the pipe are closed now
    if code != 0:
        raise FitFailed(f"`{' '.join(command)}` failed (exit code {code}); the end of its output:\n{tail[0]}")


LAUNCH_VARIABLES = ("MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE")
"""What a launcher tells a rank; left in this process by an earlier in-process multi-process fit."""


def _fit_environment(config: dict[str, Any]) -> dict[str, str]:
    """This process's environment for the fit, without the launch variables on a single node, where the fit starts
    its own ranks. Inherited ones mislead it: Lightning writes them into the environment of a process that ran a
    multi-process fit in-process; with WORLD_SIZE and RANK set, the fit takes itself for a rank of an outside
    launcher and waits for ranks that never come, and an inherited MASTER_PORT may still be held (EADDRINUSE).
    Several nodes keep them: there the nodes' launcher sets them."""
    env = dict(os.environ)
    if int((config.get("trainer") or {}).get("num_nodes") or 1) == 1:
        for name in LAUNCH_VARIABLES:
            env.pop(name, None)
    return env


def _copy_stream(stream: IO[bytes], tail: list[str]) -> None:
    """Copy a fit's stderr to ours as it comes (progress bars included) and keep its last OUTPUT_TAIL characters
    in tail[0] for the error message."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := stream.read1(65536):  # type: ignore[attr-defined]
        text = decoder.decode(chunk)
        sys.stderr.write(text)
        sys.stderr.flush()
        tail[0] = (tail[0] + text)[-OUTPUT_TAIL:]


def _kill_group(pid: int) -> None:
    """SIGKILL whatever is left of the process group `pid` leads (ranks that outlived rank 0)."""
    with contextlib.suppress(ProcessLookupError):  # every rank has exited
        os.killpg(pid, signal.SIGKILL)

"""`dapo iterate`: N rounds of DAPO, each Stage A -> critic -> advantages -> actor, resumable stage by stage.

Round i runs two ordinary fits, built from the same configs `dapo fit` takes (critic and actor YAML, plus any
overlay such as configs/debug.yaml): the critic fit, whose StepValueRollout callback first runs Stage A with
the round's policy, and the actor fit, whose StepAdvantages callback first scores the candidates with the round's
critic. The actor of round i is the policy (generator, completer and reference) of round i + 1, and the critic
of round i + 1 continues from the critic of round i.

Everything of round i lives in `out_dir/iter-NN/`: stage_a/, critic/ (tb, checkpoints, hf), stage_b/,
actor/ (tb, checkpoints, hf). A stage is finished when its artifact is complete (Stage A's summary, the
critic's `hf` export, Stage B's summary, the actor's `hf` export; each written atomically), so a rerun skips
finished stages and continues the first unfinished one: Stage A and B from their last finished shard, a fit from
its `last.ckpt` (mid-epoch with `StepCheckpoint`) when the fit's settings are the ones it was started with
(`fit_config.json` beside the checkpoints; other settings move the old checkpoints aside and the fit starts over).
`iteration.json` records the policy and critic a round started from; a rerun refuses to continue a round that
started from different ones.
A fit on one device runs in this process. A fit on several (configs/ddp.yaml, configs/fsdp.yaml, or a
`num_nodes` above 1) runs as a `dapo fit --config fit.yaml` subprocess whose Lightning starts the other ranks (they
re-run that command line), and the model is exported from its `last.ckpt`, so its checkpoint callback must set
`save_last`. A rank that fails fails the round with its error.
Left out: launching iterate itself under torchrun or SLURM (every rank would drive the rounds).

    dapo iterate --config configs/iterate.yaml [--config configs/debug.yaml]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import torch

from dapo.core.errors import UserError, check_model_folder
from dapo.core.fingerprint import policy_fingerprint
from dapo.pipeline.configs import (
    Config,
    Overlay,
    check_problems_per_round,
    deep_merge,
    fit_overlay,
    load_config,
    place_outputs,
    round_problems,
)
from dapo.pipeline.export import export_checkpoint
from dapo.pipeline.fit import DapoLightningCLI, fit_in_processes
from dapo.records import move_aside, staged_dir, write_json

log = logging.getLogger(__name__)


def critic_fit(base: Config, round_dir: Path, policy: str, critic_init: str) -> Config:
    """The round's critic fit: Stage A by `policy` into round_dir/stage_a, critic from `critic_init`."""
    stage_a_dir = round_dir / "stage_a"
    overrides = {
        "stage_a": {"policy_path": policy, "rollout": {"out_dir": str(stage_a_dir)}},
        "model": {"init_args": {"model_path": critic_init}},
        "data": {"train_path": str(stage_a_dir / "states")},
    }
    return place_outputs(deep_merge(base, overrides), round_dir / "critic")


def actor_fit(base: Config, round_dir: Path, policy: str, critic: str) -> Config:
    """The round's actor fit: Stage B scoring with `critic` into round_dir/stage_b, actor (and reference) `policy`."""
    stage_b_dir = round_dir / "stage_b"
    overrides = {
        "stage_a": {"policy_path": None},
        "advantages": {
            "states_path": str(round_dir / "stage_a" / "states"),
            "critic_path": critic,
            "policy_path": policy,
            "out_dir": str(stage_b_dir),
        },
        "model": {"init_args": {"model_path": policy}},
        "data": {"train_path": str(stage_b_dir / "actions")},
    }
    return place_outputs(deep_merge(base, overrides), round_dir / "actor")


def resume_point(config: Config) -> str | None:
    """`last.ckpt` of an earlier, unfinished run of this fit if it ran with the same settings, else None.

    The settings are recorded as `fit_config.json` in the fit's folder; checkpoints written under other settings
    (or with no record) are moved aside, because resuming them would mix two different fits."""
    root = Path(config["trainer"]["default_root_dir"])
    record, checkpoints = root / "fit_config.json", root / "checkpoints"
    settings = json.loads(json.dumps(config, default=repr))  # as it reads back (an object by its repr)
    same = record.exists() and json.loads(record.read_text()) == settings
    if checkpoints.exists() and not same:
        move_aside(checkpoints, "holds checkpoints of a fit with other settings")
    write_json(record, settings)
    last = checkpoints / "last.ckpt"
    if same and last.exists():
        log.info("resuming the fit in %s from %s", root, last)
        return str(last)
    return None


def run_fit(config: Config, export_to: Path) -> float:
    """Run `dapo fit` on a config dict (resuming its last checkpoint, `resume_point`) and export the trained model
    to `export_to` atomically; seconds taken."""
    start = time.perf_counter()
    if launches_processes(config.get("trainer") or {}):
        _fit_in_processes(config, export_to)
    else:
        _fit_here(config, export_to)
    return time.perf_counter() - start


def _fit_here(config: Config, export_to: Path) -> None:
    """A one-process fit, in this process; the module in memory is exported."""
    resume = resume_point(config)
    argv, sys.argv = sys.argv, sys.argv[:1]  # the fit's arguments are `config`, not this process's command line
    try:
        cli = DapoLightningCLI(args={"fit": config | ({"ckpt_path": resume} if resume else {})})
    finally:
        sys.argv = argv
    if cli.trainer.is_global_zero:
        with staged_dir(export_to) as tmp:
            cli.model.save_hf(str(tmp))


def _fit_in_processes(config: Config, export_to: Path) -> None:
    """A multi-process fit, as a `dapo fit --config <root>/fit.yaml` subprocess; its last.ckpt is exported (an
    FSDP checkpoint's shards consolidated), since no process here holds the trained model."""
    last = last_checkpoint(config)  # checked before the fit, not after it
    resume = resume_point(config)
    config_file = Path(config["trainer"]["default_root_dir"]) / "fit.yaml"
    fit_in_processes(config | ({"ckpt_path": resume} if resume else {}), config_file)
    export_checkpoint(str(last), str(export_to))


def launches_processes(trainer: Config) -> bool:
    """Whether Lightning would run this fit on several processes (devices x num_nodes above 1): then it must be
    started from a `dapo fit` command line. Devices "auto" means every GPU, or one process on CPU."""
    if int(trainer.get("num_nodes") or 1) > 1:
        return True
    devices = trainer.get("devices", "auto")
    if devices in ("auto", None):
        return trainer.get("accelerator") != "cpu" and torch.cuda.device_count() > 1
    if isinstance(devices, str):  # "2", "-1", or GPU ids "0,1"
        devices = [d for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    if isinstance(devices, int):
        return devices > 1 or devices == -1  # -1: every device
    return len(devices) > 1


def last_checkpoint(config: Config) -> Path:
    """`last.ckpt` of a fit that runs in other processes, which is what gets exported: the fit's checkpoint
    callback must keep one (`save_last`); its folder is `default_root_dir/checkpoints` (`place_outputs`)."""
    for callback in config["trainer"].get("callbacks") or []:
        if not isinstance(callback, dict):
            continue
        settings = callback.get("init_args", {})
        if str(callback.get("class_path", "")).endswith("Checkpoint") and settings.get("save_last"):
            return Path(callback["init_args"]["dirpath"]) / "last.ckpt"
    raise UserError(
        f"the fit in {config['trainer']['default_root_dir']} runs on several processes and is exported from its "
        "last.ckpt, but no checkpoint callback in trainer.callbacks sets save_last: true (configs/critic.yaml has one)"
    )


def _start_round(round_dir: Path, policy: str, critic_init: str) -> None:
    """Record what the round starts from, or check that an earlier run of it started from the same policy."""
    record = round_dir / "iteration.json"
    now = {"policy_path": policy, "policy_hash": policy_fingerprint(policy), "critic_init": critic_init}
    if record.exists():
        before = json.loads(record.read_text())
        if (before["policy_hash"], before["critic_init"]) != (now["policy_hash"], critic_init):
            raise ValueError(
                f"{round_dir} was started from policy {before['policy_hash']} ({before['policy_path']}) and critic "
                f"{before['critic_init']}, not {now['policy_hash']} ({policy}) and {critic_init}; use a new out_dir "
                f"or remove {round_dir}"
            )
        return
    write_json(record, now)


def _record_seconds(round_dir: Path, stage: str, seconds: float) -> None:
    """Add a finished fit's wall time to the round's iteration.json (under "seconds")."""
    record = round_dir / "iteration.json"
    data = json.loads(record.read_text())
    data.setdefault("seconds", {})[stage] = seconds
    write_json(record, data)


def iterate(
    policy_path: str,
    out_dir: str,
    iterations: int = 2,
    critic_config: str = "configs/critic.yaml",
    actor_config: str = "configs/actor.yaml",
    critic_init: str | None = None,
    trainer: Overlay | None = None,
    data: Overlay | None = None,
    stage_a: Overlay | None = None,
    advantages: Overlay | None = None,
    seed: int | None = None,
    problems_per_round: int | None = None,
) -> Path:
    """Run DAPO for several rounds (Stage A, critic, advantages, actor), resuming at the first unfinished stage.

    Args:
        policy_path: Hugging Face folder of the starting policy (round 1's generator and reference).
        out_dir: folder for every round's artifacts (`iter-01/`, `iter-02/`, ...).
        iterations: number of rounds.
        critic_config: `dapo fit` config of the critic (its `stage_a` section sets Stage A).
        actor_config: `dapo fit` config of the actor (its `advantages` section sets Stage B scoring).
        critic_init: folder the round-1 critic starts from (None: the starting policy's backbone).
        trainer: overlay merged into both fits' `trainer` section (e.g. from configs/debug.yaml).
        data: overlay merged into both fits' `data` section.
        stage_a: overlay merged into the critic fit's `stage_a` section.
        advantages: overlay merged into the actor fit's `advantages` section.
        seed: if set, both fits' `seed_everything` and Stage A's sampling seed (None: as the configs say).
        problems_per_round: if set, round i's Stage A takes the i-th slice of this many problems (the critic
            config's stage_a.rollout.limit, if any, bounds them all), so the rounds walk through the problems as one
            round over all of them would; None: every round takes the problems the config sets.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    check_model_folder(policy_path, "policy_path")
    overlay = fit_overlay(trainer, data, stage_a, advantages, seed)
    critic_base = load_config(critic_config, [overlay])
    actor_base = load_config(actor_config, [overlay])
    check_problems_per_round(critic_base, iterations, problems_per_round)
    policy, critic = policy_path, critic_init or policy_path
    for i in range(1, iterations + 1):
        round_dir = Path(out_dir) / f"iter-{i:02d}"
        _start_round(round_dir, policy, critic)
        critic_hf, actor_hf = round_dir / "critic" / "hf", round_dir / "actor" / "hf"
        if critic_hf.exists():
            log.info("round %d: critic finished (%s), skipping Stage A and critic", i, critic_hf)
        else:
            critic_round = round_problems(critic_base, i, problems_per_round)
            seconds = run_fit(critic_fit(critic_round, round_dir, policy, critic), critic_hf)
            _record_seconds(round_dir, "critic_fit", seconds)
            log.info("round %d: Stage A + critic took %.1f s", i, seconds)
        if actor_hf.exists():
            log.info("round %d: actor finished (%s), skipping advantages and actor", i, actor_hf)
        else:
            seconds = run_fit(actor_fit(actor_base, round_dir, policy, str(critic_hf)), actor_hf)
            _record_seconds(round_dir, "actor_fit", seconds)
            log.info("round %d: advantages + actor took %.1f s", i, seconds)
        policy, critic = str(actor_hf), str(critic_hf)
    print(f"dapo iterate: {iterations} round(s) done; final policy {policy}")
    return Path(policy)

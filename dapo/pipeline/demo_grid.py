"""The demo's tuning budget, the same for every method: a small grid of (learning rate, epochs), each point trained
on the same Stage A samples for the same training tokens, and the point chosen on validation problems carved from
the training split (never the test split).

Methods, all starting from the same start policy:
- `dapo`: the actor on round 1's Stage B actions (step-level advantages from the critic);
- `response`: the same actor, loss, beta and action weighting on response-level actions
  (`dapo.stages.response_advantages`: whole responses, A = r - mean r over the problem's samples; outcome only);
- `rft`: rejection-sampling fine-tuning on every distinct correct sample (outcome only, no loss family).
"epochs" E means E times the tokens of one epoch of the DAPO actor: every method trains for the same tokens at the
same grid point. Every fit trains on all of its data (no share held out for a validation loss).

Everything lands in `out/grid/METHOD/POINT/` (`hf/` the trained policy, `point.json` what it trained from) and
`out/grid/validation.json` (each point's validation accuracy, beside the key of the provenance it scored). A rerun
skips a finished point made from the current round's data and refuses one made from other inputs, naming it
(`dapo.pipeline.demo_record`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from dapo.data_modules import StepDataModule
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.protocol import SamplingParams
from dapo.pipeline.baseline import actor_train_tokens, correct_solutions, rejection_finetune
from dapo.pipeline.configs import Config, deep_merge, place_outputs
from dapo.pipeline.demo_record import (
    check_made,
    load_scores,
    point_made,
    provenance_key,
    round_made,
    save_scores,
)
from dapo.pipeline.iterate import actor_fit, run_fit
from dapo.records import staged_dir, write_json
from dapo.stages.evaluation import EvalResult, evaluate_examples
from dapo.stages.response_advantages import ResponseAdvantageConfig, run_response_advantages
from dapo.tasks.arith import ArithTask

METHODS = ("dapo", "response", "rft")

log = logging.getLogger(__name__)


@dataclass
class TuningGrid:
    """The grid each method is tuned over, and the validation problems that choose its point."""

    lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4])
    epochs: list[int] = field(default_factory=lambda: [1, 3])
    """Training tokens, in epochs of the DAPO actor's data."""
    validation: int = 200
    """The last `validation` problems of the task's train split (Stage A uses the first ones); greedy."""
    rft_batch_size: int = 32
    min_gap: float = 0.1
    """The response-level baseline drops problems whose advantage gap is under this (as Stage B drops states)."""

    def points(self) -> list[tuple[str, float, int]]:
        return [(f"lr{lr:g}-ep{e}", lr, e) for lr in self.lrs for e in self.epochs]


@dataclass
class Round:
    """What the grid trains from: round 1 of `dapo iterate` and the actor config it ran."""

    folder: Path
    policy: Path
    actor_base: Config


def validation_examples(task: ArithTask, count: int, stage_a_problems: int) -> list[dict[str, Any]]:
    """The last `count` train problems, refused if they could overlap the first `stage_a_problems` Stage A used."""
    train = list(task.load("train"))
    if count + stage_a_problems > len(train):
        raise ValueError(
            f"validation needs {count} train problems after the {stage_a_problems} Stage A uses, but the task has "
            f"{len(train)}; lower grid.validation or raise task.train_size"
        )
    return train[-count:]


def tune(
    round_: Round,
    grid: TuningGrid,
    task: ArithTask,
    out: Path,
    seed: int,
    stage_a_problems: int,
    max_new_tokens: int,
    timed: Any,
) -> dict[str, Any]:
    """Train every method at every grid point, score each on validation (greedy, `max_new_tokens` as the test
    evaluation), and pick each method's best point."""
    examples = validation_examples(task, grid.validation, stage_a_problems)

    def validate(path: Path) -> float:
        return _validate(path, task, examples, max_new_tokens).accuracy

    record = out / "validation.json"
    scores, keys = load_scores(record)
    epoch_tokens = _dapo_epoch_tokens(round_)
    made = round_made(round_.folder, round_.policy)
    trainers = {
        "dapo": lambda name, lr, e: _fit_dapo(round_, lr, e, out / "dapo" / name, seed),
        "response": lambda name, lr, e: _fit_response(round_, lr, e * epoch_tokens, out / "response", name, grid, seed),
        "rft": lambda name, lr, e: _fit_rft(round_, lr, e * epoch_tokens, out / "rft" / name, grid, seed),
    }

    def point(method: str, lr: float, e: int) -> dict[str, Any]:
        return point_made(method, lr, e, e * epoch_tokens, made, {"seed": seed, **_own_settings(method, grid)})

    def train(method: str, name: str, lr: float, e: int) -> Path:
        """The point's policy, trained unless it finished from the same inputs (refused if from others)."""
        if not (method == "dapo" and _is_the_rounds_own_fit(round_, lr, e)):  # else `dapo iterate` trained it
            folder = out / method / name
            check_made(folder, point(method, lr, e), (folder / FINISHED[method]).exists())
        return trainers[method](name, lr, e)

    def key(provenance: dict[str, Any]) -> str:  # a score holds for this point scored on these validation problems
        return provenance_key({**provenance, "validation": grid.validation, "max_new_tokens": max_new_tokens})

    for method in METHODS:
        now = {name: key(point(method, lr, e)) for name, lr, e in grid.points()}
        done = keys.setdefault(method, {})
        scores.setdefault(method, {})
        todo = [p for p in grid.points() if done.get(p[0]) != now[p[0]]]  # a score of other inputs is no score
        if not todo:  # finished earlier: keep the seconds it took then
            continue
        with timed(f"grid_{method}"):
            for name, lr, e in todo:
                scores[method][name], done[name] = validate(train(method, name, lr, e)), now[name]
                save_scores(record, scores, keys)
    start = key({"method": "start", "start_policy": made["start_policy"]})
    if keys.get("start", {}).get("-") != start:  # the point every method's validation accuracy is read against
        scores["start"], keys["start"] = {"-": validate(round_.policy)}, {"-": start}
        save_scores(record, scores, keys)
    names = [name for name, _, _ in grid.points()]
    scores = {**{m: {name: scores[m][name] for name in names} for m in METHODS}, "start": scores["start"]}
    chosen = {method: max(scores[method], key=lambda name: scores[method][name]) for method in METHODS}
    lrs_epochs = {name: (lr, e) for name, lr, e in grid.points()}
    paths = {m: str(train(m, chosen[m], *lrs_epochs[chosen[m]])) for m in METHODS}  # finished: no training
    return {
        "scores": scores,
        "chosen": chosen,
        "paths": paths,
        "dapo_epoch_tokens": epoch_tokens,
        "validation": grid.validation,
    }


FINISHED = {"dapo": "hf", "response": "tokens.json", "rft": "tokens.json"}
"""What a finished point of each method holds (written last)."""


def _own_settings(method: str, grid: TuningGrid) -> dict[str, Any]:
    """The grid settings a method's points depend on besides lr and epochs."""
    own: dict[str, dict[str, Any]] = {
        "response": {"min_gap": grid.min_gap},
        "rft": {"rft_batch_size": grid.rft_batch_size},
    }
    return own.get(method, {})


def validate_policy(path: Path, task: ArithTask, grid: TuningGrid, stage_a_problems: int, max_new_tokens: int) -> float:
    """Greedy accuracy of the policy at `path` on the grid's validation problems."""
    examples = validation_examples(task, grid.validation, stage_a_problems)
    return _validate(path, task, examples, max_new_tokens).accuracy


def _validate(path: Path, task: ArithTask, examples: list[dict[str, Any]], max_new_tokens: int) -> EvalResult:
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    return evaluate_examples(HFGenerator.from_pretrained(str(path)), task, examples, params, split="validation")


def _dapo_epoch_tokens(round_: Round) -> int:
    """Tokens of one epoch of the DAPO actor: every state's prefix once plus its candidate actions, packed."""
    config = _actor_config(round_, 1e-4, 1, round_.folder / "stage_b" / "actions")
    return actor_train_tokens(_data(config, round_.policy), 1)


def _actor_config(round_: Round, lr: float, max_epochs: int, actions: Path) -> Config:
    """The round's actor fit with `lr` and `max_epochs`, training on `actions`, on all of them."""
    config = actor_fit(round_.actor_base, round_.folder, str(round_.policy), str(round_.folder / "critic" / "hf"))
    overrides = {
        "model": {"init_args": {"optimizer": {"init_args": {"lr": lr}}}},
        "data": {"train_path": str(actions), "val_fraction": 0.0},
        "trainer": {"max_epochs": max_epochs, "limit_val_batches": 0},
    }
    return deep_merge(config, overrides)


def _data(config: Config, policy: Path) -> StepDataModule:
    return StepDataModule(**{**config["data"], "mode": "actor", "tokenizer": str(policy)})


def _fit_dapo(round_: Round, lr: float, epochs: int, out: Path, seed: int) -> Path:
    if _is_the_rounds_own_fit(round_, lr, epochs):  # `dapo iterate` trained this point already
        return round_.folder / "actor" / "hf"
    if not (out / "hf").exists():
        config = _actor_config(round_, lr, epochs, round_.folder / "stage_b" / "actions")
        run_fit(place_outputs(deep_merge(config, {"seed_everything": seed}), out), out / "hf")
    drop_checkpoints(out)
    return out / "hf"


def drop_checkpoints(point: Path) -> None:
    """Delete a finished grid point's checkpoints: its `hf` export is what the grid uses, and `last.ckpt` (weights
    and optimizer state, 1.6 GB for a 135M-parameter model) only served resuming the fit; kept at every point, they
    filled the disk in the real-model comparison (docs/real_model.md)."""
    shutil.rmtree(point / "checkpoints", ignore_errors=True)


def _is_the_rounds_own_fit(round_: Round, lr: float, epochs: int) -> bool:
    base = round_.actor_base
    own_lr = base["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    own = (float(own_lr), int(base["trainer"]["max_epochs"]), float(base["data"].get("val_fraction", 0.0)))
    return own == (lr, epochs, 0.0)


def _fit_response(
    round_: Round, lr: float, token_budget: int, root: Path, name: str, grid: TuningGrid, seed: int
) -> Path:
    """The actor on response-level actions for `token_budget` tokens: whole epochs, then the steps of the rest."""
    out = root / name
    if (out / "tokens.json").exists():  # written last: the point is finished
        return out / "hf"
    settings = response_settings(round_, root, grid.min_gap)
    finished = (root / "summary.json").exists()
    check_made(root, _response_actions_made(round_, settings), finished, record=ACTIONS_MADE)
    if not finished:
        run_response_advantages(settings)
    config = _actor_config(round_, lr, 1, root / "actions")
    config["advantages"] = {"critic_path": None}  # the actions are made above, not by Stage B
    data = _data(config, round_.policy)
    per_epoch, batches = actor_train_tokens(data, 1), len(data.train_dataloader())
    steps = max(1, round(token_budget / per_epoch * batches))
    config = deep_merge(config, {"trainer": {"max_epochs": math.ceil(steps / batches), "max_steps": steps}})
    run_fit(place_outputs(deep_merge(config, {"seed_everything": seed}), out), out / "hf")
    write_json(out / "tokens.json", {"tokens": round(steps / batches * per_epoch), "steps": steps})
    drop_checkpoints(out)
    return out / "hf"


def response_settings(round_: Round, out: Path, min_gap: float) -> ResponseAdvantageConfig:
    """The response-level baseline's scoring as DAPO's Stage B ran: its action weighting, quantization and attention
    kernel (the reference log-probs must match the actor's model as DAPO's do)."""
    stage_b = round_.actor_base.get("advantages") or {}
    shared = {key: stage_b[key] for key in ("action_weight", "load_in", "attn_implementation") if key in stage_b}
    return ResponseAdvantageConfig(str(round_.folder / "stage_a"), str(round_.policy), str(out), min_gap, **shared)


ACTIONS_MADE = "actions_made.json"
"""Beside the response-level baseline's shared `actions/`: what they were made from."""


def _response_actions_made(round_: Round, settings: ResponseAdvantageConfig) -> dict[str, Any]:
    """What the response-level actions are made from: the start policy, Stage A's samples and the scoring settings
    (less the paths, which only place them)."""
    made = round_made(round_.folder, round_.policy)
    paths = ("stage_a_dir", "policy_path", "out_dir")
    scoring = {key: value for key, value in asdict(settings).items() if key not in paths}
    return {key: made[key] for key in ("start_policy", "stage_a_solutions")} | scoring


def _fit_rft(round_: Round, lr: float, token_budget: int, out: Path, grid: TuningGrid, seed: int) -> Path:
    """RFT on every distinct correct sample for `token_budget` tokens; with none, a copy of the start policy."""
    if (out / "tokens.json").exists():  # written last: the point is finished
        return out / "hf"
    pairs = correct_solutions(round_.folder / "stage_a")
    if not pairs:  # nothing to imitate: the baseline is the start policy itself
        log.warning("RFT baseline: Stage A sampled no correct solution; the baseline is the unchanged start policy")
        with staged_dir(out / "hf") as tmp:  # a copy cut short must not pass for the baseline
            shutil.copytree(round_.policy, tmp)
        write_json(out / "tokens.json", {"tokens": 0, "steps": 0})
        return out / "hf"
    with contextlib.closing(SummaryWriter(str(out / "tb"))) as writer:
        batch_size, on_step = grid.rft_batch_size, _logger(writer)
        summary = rejection_finetune(
            round_.policy, out / "hf", pairs, token_budget, batch_size=batch_size, lr=lr, seed=seed, on_step=on_step
        )
    write_json(out / "tokens.json", {"tokens": summary.tokens, "steps": summary.steps})
    return out / "hf"


def _logger(writer: SummaryWriter) -> Callable[[int, float], None]:
    return lambda step, loss: writer.add_scalar("sft/loss", loss, step)

"""Two processes on CPU (gloo) against one: FSDP2 (ModelParallelStrategy) and DDP train the critic and the actor to
the same weights and losses as one process taking the same optimizer steps, Stage A and Stage B scoring split
their work and write the same records, a sharded checkpoint resumes, and `dapo export` consolidates it.

One process with accumulate_grad_batches=2 takes exactly the optimizer steps of two processes with 1 each: the
token-budget sampler deals batch 2k to rank 0 and 2k + 1 to rank 1, and both average the two micro-batch
gradients. Each run is a real `dapo fit` subprocess (Lightning starts the second process itself).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from dapo.core.losses import dapo_loss, gather_at, value_loss
from dapo.data_modules import StepDataModule
from dapo.models.outputs import policy_logprobs
from dapo.models.value import ValueModel
from dapo.records import read_records

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WEIGHT_TOLERANCE = 1e-4  # max |w_1 - w_2| after the run: float reductions differ in order, nothing more
LR = ("--model.init_args.optimizer.init_args.lr", "0.003")  # large enough that every run moves the weights a lot
# The actor's first AdamW step moves every weight by about lr * sign(gradient), which turns rounding noise in tiny
# gradients into lr-sized differences; plain SGD keeps weight differences proportional to gradient differences.
SGD = ("--model.init_args.optimizer.class_path", "torch.optim.SGD", "--model.init_args.optimizer.init_args.lr", "1e-4")


def _fit(cwd: Path, config: str, *overlays: str, args: tuple[str, ...] = ()) -> None:
    command = [sys.executable, "-m", "dapo.cli", "fit", "--config", str(CONFIGS / config)]
    for overlay in ("debug.yaml", *overlays):
        command += ["--config", str(CONFIGS / overlay)]
    command += ["--trainer.limit_train_batches", "1.0", "--trainer.limit_val_batches", "0", *args]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


def _export(cwd: Path, stage: str, out: str) -> Path:
    command = [sys.executable, "-m", "dapo.cli", "export", "--ckpt", f"runs/arith/{stage}/checkpoints/last.ckpt"]
    done = subprocess.run([*command, "--out", out], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return cwd / out


def _workspace(root: Path, name: str, policy_dir: str) -> Path:
    cwd = root / name
    shutil.copytree(policy_dir, cwd / "runs/arith/policy")
    return cwd


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    out = load_file(str(folder / "model.safetensors"))
    head = folder / "value_head.safetensors"
    return out | ({f"head.{k}": v for k, v in load_file(str(head)).items()} if head.exists() else {})


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _backbone_change(before: Path, after: Path) -> float:
    """Largest weight change of the backbone (a causal LM's keys carry a "model." prefix, a critic's do not)."""
    wa, wb = ({k.removeprefix("model."): v for k, v in _weights(f).items()} for f in (before, after))
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa.keys() & wb.keys())


def _rows(path: Path, kind: str) -> list[dict]:
    return sorted(read_records(path, kind).to_list(), key=lambda row: json.dumps(row, sort_keys=True))


def _batches(states: Path, tokenizer: str) -> int:
    data = StepDataModule("critic", str(states), tokenizer, val_fraction=0.25, max_tokens=256)
    return len(data.train_dataloader())


def _critic_loss(critic: Path, states: Path) -> float:
    """Mean BCE of an exported critic over every training batch (the same data for every run)."""
    model = ValueModel.from_pretrained(critic).eval()
    data = StepDataModule("critic", str(states), str(critic), val_fraction=0.25, max_tokens=256)
    losses = []
    with torch.no_grad():
        for batch in data.train_dataloader():
            logits = gather_at(model(batch["input_ids"], batch["attention_mask"]), batch["boundary_index"])
            losses.append(float(value_loss(logits, batch["targets"], batch["target_mask"], "bce")))
    return sum(losses) / len(losses)


def _actor_loss(policy: Path, actions: Path) -> float:
    """Mean DAPO loss of a policy over every training batch of `actions` (the same data for every run)."""
    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    data = StepDataModule("actor", str(actions), str(policy), val_fraction=0.25, max_tokens=256)
    losses = []
    with torch.no_grad():
        for batch in data.train_dataloader():
            logprobs = policy_logprobs(model, batch, packed=True)
            out = dapo_loss(logprobs, batch["ref_logprobs"], batch["advantages"], batch["action_state"], 0.01)
            losses.append(float(out.loss))
    return sum(losses) / len(losses)


def test_two_processes_match_one(tmp_path, policy_dir):
    one = _workspace(tmp_path, "one", policy_dir)
    fsdp = _workspace(tmp_path, "fsdp", policy_dir)
    ddp = _workspace(tmp_path, "ddp", policy_dir)

    # Stage A + critic: one process (two micro-batches per step) vs FSDP2 on two processes
    _fit(fsdp, "critic.yaml", "fsdp.yaml", args=("--trainer.max_epochs", "2", *LR))
    states = fsdp / "runs/arith/stage_a/states"
    n = _batches(states, policy_dir)
    assert n >= 4, n
    even = ("--trainer.limit_train_batches", str(2 * (n // 2)))  # the 2-process sampler drops an odd last batch
    _fit(one, "critic.yaml", args=("--trainer.max_epochs", "2", "--trainer.accumulate_grad_batches", "2", *even, *LR))
    assert _rows(one / "runs/arith/stage_a/states", "states") == _rows(states, "states")
    assert (fsdp / "runs/arith/critic/checkpoints/last.ckpt").is_dir()  # sharded

    shutil.copytree(states.parent, ddp / "runs/arith/stage_a")
    _fit(ddp, "critic.yaml", "ddp.yaml", args=("--trainer.max_epochs", "2", *LR))

    critics = {
        name: _export(cwd, "critic", "runs/arith/critic_hf")
        for name, cwd in [("one", one), ("fsdp", fsdp), ("ddp", ddp)]
    }
    losses = {name: _critic_loss(path, states) for name, path in critics.items()}
    print(f"critic BCE after 2 epochs: {losses}")
    for name in ("fsdp", "ddp"):
        assert _max_difference(critics["one"], critics[name]) < WEIGHT_TOLERANCE, name
        assert abs(losses[name] - losses["one"]) < 1e-5, losses
    assert _backbone_change(Path(policy_dir), critics["one"]) > 100 * WEIGHT_TOLERANCE  # the runs did train

    # Stage B scoring + actor: one process vs FSDP2 on two, from the same critic
    shutil.rmtree(critics["fsdp"])
    shutil.copytree(critics["one"], critics["fsdp"])
    _fit(fsdp, "actor.yaml", "fsdp.yaml", args=SGD)
    m = len(
        StepDataModule(
            "actor", str(fsdp / "runs/arith/stage_b/actions"), policy_dir, val_fraction=0.25, max_tokens=256
        ).train_dataloader()
    )
    even = ("--trainer.limit_train_batches", str(2 * (m // 2)))
    _fit(one, "actor.yaml", args=("--trainer.accumulate_grad_batches", "2", *even, *SGD))
    assert _rows(one / "runs/arith/stage_b/actions", "actions") == _rows(fsdp / "runs/arith/stage_b/actions", "actions")
    actors = [_export(cwd, "actor", "runs/arith/actor_hf") for cwd in (one, fsdp)]
    actions = fsdp / "runs/arith/stage_b/actions"
    actor_losses = [_actor_loss(path, actions) for path in (Path(policy_dir), *actors)]
    print(f"actor DAPO loss: start {actor_losses[0]}, one process {actor_losses[1]}, FSDP2 x2 {actor_losses[2]}")
    assert abs(actor_losses[1] - actor_losses[2]) < 1e-4 * abs(actor_losses[0]) and actor_losses[1] < actor_losses[0]
    assert _max_difference(*actors) < WEIGHT_TOLERANCE
    assert _backbone_change(Path(policy_dir), actors[0]) > 10 * WEIGHT_TOLERANCE


def test_sharded_checkpoint_resumes(tmp_path, policy_dir):
    straight = _workspace(tmp_path, "straight", policy_dir)
    resumed = _workspace(tmp_path, "resumed", policy_dir)
    _fit(straight, "critic.yaml", "fsdp.yaml", args=("--trainer.max_epochs", "2", *LR))
    shutil.copytree(straight / "runs/arith/stage_a", resumed / "runs/arith/stage_a")
    _fit(resumed, "critic.yaml", "fsdp.yaml", args=("--trainer.max_epochs", "1", *LR))
    last = "runs/arith/critic/checkpoints/last.ckpt"
    _fit(resumed, "critic.yaml", "fsdp.yaml", args=("--trainer.max_epochs", "2", "--ckpt_path", last, *LR))
    meta, straight_meta = (torch.load(cwd / last / "meta.pt", weights_only=False) for cwd in (resumed, straight))
    assert meta["epoch"] == straight_meta["epoch"] == 2  # last.ckpt is written when training ends, 2 epochs done
    assert meta["global_step"] == straight_meta["global_step"]
    a, b = (_export(cwd, "critic", "runs/arith/critic_hf") for cwd in (straight, resumed))
    assert _max_difference(a, b) < WEIGHT_TOLERANCE

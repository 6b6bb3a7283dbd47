"""The demo's start-policy fine-tuning step, timed several ways on CPU: where its seconds go and what makes it faster.

Why: the start policy is the largest stage of `dapo demo` (900 AdamW steps of batch 64 on a 1.1M-parameter Llama,
265 of 565 s on a 2-core AMD EPYC). Each way below runs the same steps on the same batches from the same weights:
  - fp32: what `supervised_finetune` does today (AdamW, default foreach implementation);
  - fused AdamW: `torch.optim.AdamW(fused=True)`;
  - bf16 autocast: matrix products in bfloat16 (`torch.autocast("cpu")`), weights and optimizer in fp32;
  - compiled: `torch.compile(model)` (its compile time falls in the untimed warm-up run).
Also reported: the tokens per batch with and without padding, the share of one fp32 step spent in forward, backward
and the optimizer, and the loss each way reaches after the timed steps (bf16 changes the numbers; the start
policy's accuracy decides if that matters).

Run: `python -m benchmarks.sft_step [--steps 30 --repeats 3]`   (~2 minutes)
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.common import CACHE_DIR, interleaved, machine_line, median_spread, rates, table_header, table_row
from dapo.core.padding import pad_id_of, pad_right, right_mask
from dapo.pipeline.demo import StartPolicy
from dapo.pipeline.tiny_model import tiny_model_for_task
from dapo.tasks.arith import ArithTask, slip_carries
from dapo.training.sft import IGNORE, sft_rows

Batch = dict[str, torch.Tensor]


def demo_batches(steps: int, seed: int = 0) -> tuple[Any, list[Batch]]:
    """The demo's start model (built once into CACHE_DIR) and `steps` batches of its fine-tuning data."""
    settings, task = StartPolicy(), ArithTask()
    examples = task.load("train")
    base = CACHE_DIR / "demo-start-base"
    if not (base / "config.json").exists():
        sizes = {k: getattr(settings, k) for k in ("vocab_size", "hidden_size", "num_layers", "num_heads")}
        tiny_model_for_task(base, examples, task, **sizes, seed=seed, overwrite=True)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    rng = random.Random(seed)
    rows = [sft_rows(tokenizer, task.prompt(ex), slip_carries(ex, settings.slip_rate, rng)) for ex in examples]
    pad, batches = pad_id_of(tokenizer), []
    for _ in range(steps):
        batch = [rows[i] for i in rng.sample(range(len(rows)), settings.batch_size)]
        ids = [ids for ids, _ in batch]
        batches.append(
            {
                "input_ids": pad_right(ids, pad),  # (b, s)
                "attention_mask": right_mask(ids),  # (b, s)
                "labels": pad_right([labels for _, labels in batch], IGNORE),  # (b, s)
            }
        )
    return AutoModelForCausalLM.from_pretrained(str(base)), batches


def trainer(model: Any, batches: Sequence[Batch], fused: bool, bf16: bool, compiled: bool) -> Callable[[], float]:
    """A function that runs every batch once (one AdamW step each) on a fresh copy of `model`; returns the loss."""

    def run() -> float:
        net = copy.deepcopy(model).train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=StartPolicy().lr, fused=fused or None)
        forward = torch.compile(net) if compiled else net
        loss = torch.zeros(())
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = forward(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return float(loss.detach())

    return run


def step_shares(model: Any, batches: Sequence[Batch]) -> dict[str, float]:
    """Seconds per fp32 step in forward, backward and the optimizer (mean over the batches)."""
    net = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=StartPolicy().lr)
    seconds = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    for batch in batches:
        start = time.perf_counter()
        loss = net(**batch).loss
        middle = time.perf_counter()
        loss.backward()
        end = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        seconds["forward"] += middle - start
        seconds["backward"] += end - middle
        seconds["optimizer"] += time.perf_counter() - end
    return {part: s / len(batches) for part, s in seconds.items()}


WAYS = {
    "fp32": {"fused": False, "bf16": False, "compiled": False},
    "fused AdamW": {"fused": True, "bf16": False, "compiled": False},
    "bf16 autocast": {"fused": False, "bf16": True, "compiled": False},
    "bf16 + fused": {"fused": True, "bf16": True, "compiled": False},
    "compiled": {"fused": False, "bf16": False, "compiled": True},
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=30, help="AdamW steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS))
    args = parser.parse_args(argv)
    model, batches = demo_batches(args.steps)
    losses: dict[str, list[float]] = {name: [] for name in args.ways}
    runs: dict[str, Callable[[], object]] = {
        name: _recording(trainer(model, batches, **WAYS[name]), losses[name]) for name in args.ways
    }
    seconds = interleaved(runs, args.repeats)
    speed = {name: rates([args.steps] * args.repeats, seconds[name]) for name in runs}
    shares = step_shares(model, batches)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) / len(batches)
    padded = sum(b["input_ids"].numel() for b in batches) / len(batches)
    print(machine_line())
    print(
        f"workload: the demo's start model ({sum(p.numel() for p in model.parameters()):,} parameters), "
        f"batch {StartPolicy().batch_size}, {tokens:.0f} tokens per batch ({padded:.0f} with padding), "
        f"{args.steps} steps per run, "
        f"median of {args.repeats} runs"
    )
    total = sum(shares.values())
    print("fp32 step: " + ", ".join(f"{part} {1000 * s:.0f} ms ({100 * s / total:.0f}%)" for part, s in shares.items()))
    print("loss after the steps: " + ", ".join(f"{name} {losses[name][-1]:.3f}" for name in args.ways))
    print(table_header())
    for name in args.ways[1:]:
        ratio = statistics.median(speed[name]) / statistics.median(speed["fp32"])
        a, b = f"{name}: {median_spread(speed[name], 2)} steps/s", f"fp32: {median_spread(speed['fp32'], 2)} steps/s"
        print(table_row("start-policy SFT steps/s", a, b, ratio))


def _recording(run: Callable[[], float], into: list[float]) -> Callable[[], None]:
    return lambda: into.append(run())


if __name__ == "__main__":
    main()

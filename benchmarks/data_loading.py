"""Data loading: StepDataModule with length bucketing vs without, for the critic and the actor, on CPU.

Why: a micro-batch costs (rows) x (longest row) tokens once padded, and `StepDataModule` fills each one up to a
`max_tokens` budget. With `bucket=True` (the default) the sampler sorts shuffled items by length inside windows, so
neighbours in a batch have similar lengths; with `bucket=False` a batch takes items in shuffled order. Trajectory
lengths vary a lot (solutions of 3 to 17 lines here, as solutions do in MATH), so unbucketed batches spend much of
the budget on padding. This measures the padding of the real collated batches, the loader's throughput (sampler +
collation, one epoch of `train_dataloader()`) and the one-time `load_items()` (read + tokenize) cost.

Workload: arith problems with k = `--min-steps` .. `--max-steps` operations, equally many per k. Critic: the
reference solutions of `--trajectories` train problems, a `states` record for every step t = 0 .. T with a random
MC value in [0, 1]. Actor: `--actor-problems` test problems per k, the states before every reference step, each
with `--actions` candidate actions (`benchmarks.actor_packing.action_rows`: random advantages, ref_logprob -10).
Both are written with `dapo.records.write_records` to a temp folder and read by a `StepDataModule` per setting; the
tokenizer is that of a random tiny model (`random_tiny_model`, BPE trained on the longest problems). Budgets:
`--max-tokens` (critic) and `--actor-max-tokens` (actor), 8192 as in configs/critic.yaml and configs/actor.yaml.

Timing as in `benchmarks.common` (one warm-up epoch, interleaved repeats, median ± half the range): an epoch is a
full iteration of the same `train_dataloader()` (batch plan + collation; num_workers=0 unless said). Padding is
counted on the collated tensors of one epoch: critic `attention_mask == 0`, actor `segment_ids == -1`.
`load_items()` (read the records + tokenize; the tokenizer itself is loaded before, by `setup`) is timed once per
module: the bucketed and unbucketed modules do the same work. Workers: the bucketed critic loader with
num_workers=1 against 2 (workers are started at every epoch, as the module does not keep them alive).

Run: `python -m benchmarks.data_loading [--trajectories 3000 --actor-problems 20 --actions 8 --repeats 5 ...]`
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers.utils import logging as hf_logging

from benchmarks.actor_packing import action_rows
from benchmarks.common import (
    interleaved,
    machine_line,
    median_spread,
    random_tiny_model,
    rates,
    reference_states,
    table_header,
    table_row,
)
from dapo.core.packing import packed_length
from dapo.data_modules import StepDataModule
from dapo.records import Provenance, write_records
from dapo.tasks import ArithTask

Row = dict[str, Any]
SETTINGS = ("bucket", "no bucket")  # A, B of every comparison


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trajectories", type=int, default=3000, help="critic trajectories, spread over the k")
    parser.add_argument("--actor-problems", type=int, default=20, help="actor problems per k (k + 1 states each)")
    parser.add_argument("--actions", type=int, default=8, help="candidate actions per actor state")
    parser.add_argument("--min-steps", type=int, default=2, help="fewest operations per problem")
    parser.add_argument("--max-steps", type=int, default=16, help="most operations per problem")
    parser.add_argument("--max-tokens", type=int, default=8192, help="critic micro-batch budget (padded tokens)")
    parser.add_argument("--actor-max-tokens", type=int, default=8192, help="actor micro-batch budget")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per setting, after one warm-up")
    parser.add_argument("--no-workers", action="store_true", help="skip the 1 vs 2 DataLoader workers comparison")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# -- workload ----------------------------------------------------------------------------------------------------


def arith_tasks(args: argparse.Namespace) -> dict[int, ArithTask]:
    """One arith task per number of operations k, with enough train (critic) and test (actor) problems."""
    ks = range(args.min_steps, args.max_steps + 1)
    per_k = -(-args.trajectories // len(ks))
    return {k: ArithTask(n_steps=k, train_size=per_k, test_size=max(args.actor_problems, 1), seed=0) for k in ks}


def critic_rows(tasks: dict[int, ArithTask], trajectories: int, seed: int) -> list[Row]:
    """`states` records of `trajectories` reference solutions, taken round-robin over the tasks (so over k)."""
    rng = random.Random(seed)
    examples = [(k, ex) for k, task in tasks.items() for ex in task.load("train")]
    examples.sort(key=lambda pair: int(pair[1]["id"].rsplit("-", 1)[1]))  # interleave the k: index-major
    rows: list[Row] = []
    for k, ex in examples[:trajectories]:
        rows += reference_states(tasks[k], ex, rng, f"k{k}/{ex['id']}", 4)
    return rows


def actor_rows(tasks: dict[int, ArithTask], problems: int, actions: int, seed: int) -> list[Row]:
    """`actions` records of every state of `problems` test problems per k, with ids prefixed by k."""
    rows: list[Row] = []
    for k, task in tasks.items():
        for row in action_rows(task, problems, actions, seed + k):
            rows.append({**row, "state_id": f"k{k}/{row['state_id']}", "problem_id": f"k{k}/{row['problem_id']}"})
    return rows


def write_workload(args: argparse.Namespace, folder: Path) -> dict[str, Path]:
    """The tokenizer folder and both record folders, written under `folder`."""
    tasks = arith_tasks(args)
    provenance = Provenance(producer="benchmarks.data_loading", seed=args.seed)
    states = critic_rows(tasks, args.trajectories, args.seed)
    actions = actor_rows(tasks, args.actor_problems, args.actions, args.seed)
    return {
        "tokenizer": random_tiny_model(tasks[args.max_steps], folder / "tiny", 64, 2, 512),
        "critic": write_records(states, folder / "states", "states", provenance),
        "actor": write_records(actions, folder / "actions", "actions", provenance),
    }


# -- measurements ------------------------------------------------------------------------------------------------


def loaded_module(mode: str, paths: dict[str, Path], max_tokens: int, **kwargs: Any) -> tuple[StepDataModule, float]:
    """A StepDataModule outside a Trainer, its items loaded, and the seconds `load_items()` took."""
    path, tokenizer = str(paths[mode]), str(paths["tokenizer"])
    dm = StepDataModule(mode=mode, train_path=path, tokenizer=tokenizer, max_tokens=max_tokens, **kwargs)
    dm.setup()  # the tokenizer is loaded in setup, outside the load_items timing (as under a Trainer)
    start = time.perf_counter()
    dm.load_items()
    return dm, time.perf_counter() - start


def padded(batch: dict[str, torch.Tensor], mode: str) -> tuple[int, int]:
    """(padded tokens, all tokens) of one collated batch."""
    pad = batch["attention_mask"] == 0 if mode == "critic" else batch["segment_ids"] == -1
    return int(pad.sum()), pad.numel()


def epoch_stats(loader: DataLoader, mode: str) -> dict[str, float]:
    """One epoch of `loader`: batches, items (rows), padding fraction, and the padding fraction of the worst batch."""
    n_batches = items = pad = total = 0
    worst = 0.0
    for batch in loader:
        n_pad, n_all = padded(batch, mode)
        n_batches, items = n_batches + 1, items + batch["input_ids"].shape[0]
        pad, total, worst = pad + n_pad, total + n_all, max(worst, n_pad / n_all)
    return {"batches": n_batches, "items": items, "padding": pad / total, "worst": worst}


def epoch_run(loader: DataLoader) -> Callable[[], int]:
    """One full iteration of `loader` (its batch plan and collation), returning the number of batches."""

    def run() -> int:
        return sum(1 for _ in loader)

    return run


# -- report ------------------------------------------------------------------------------------------------------


def lengths_line(mode: str, dm: StepDataModule) -> str:
    """Items and their row lengths in tokens (trajectory, or state packed with its actions)."""
    lengths = [len(item["input_ids"]) if mode == "critic" else packed_length(item) for item in dm.train_items]
    what = "trajectories" if mode == "critic" else "states"
    return (
        f"{mode}: {len(lengths)} {what}, row tokens mean {statistics.mean(lengths):.0f}, min {min(lengths)}, "
        f"max {max(lengths)}, budget {dm.max_tokens} tokens/batch"
    )


def rate_rows(mode: str, stats: dict[str, dict[str, float]], seconds: dict[str, list[float]]) -> list[str]:
    """batches/s and items/s of bucket (A) against no bucket (B), with each one's batch count."""
    item_name = "trajectories" if mode == "critic" else "states"
    out = []
    for unit in ("batches", item_name):
        count = {name: stats[name]["batches" if unit == "batches" else "items"] for name in SETTINGS}
        speed = {name: rates([count[name]] * len(seconds[name]), seconds[name]) for name in SETTINGS}
        a, b = (f"{name} ({stats[name]['batches']} batches): {median_spread(speed[name], 0)}/s" for name in SETTINGS)
        ratio = statistics.median(speed[SETTINGS[0]]) / statistics.median(speed[SETTINGS[1]])
        note = "(bucketed batches hold more rows)" if unit == "batches" else ""
        out.append(table_row(f"{mode}: {unit}/s, one epoch", a, b, ratio, note))
    return out


def padding_row(mode: str, stats: dict[str, dict[str, float]]) -> str:
    """Padded share of the collated batches, bucket (A) against no bucket (B); ratio = B / A."""
    pad = {name: stats[name]["padding"] for name in SETTINGS}
    a, b = (f"{name}: {100 * pad[name]:.1f}% (worst batch {100 * stats[name]['worst']:.0f}%)" for name in SETTINGS)
    return table_row(f"{mode}: padding tokens / all tokens", a, b, pad[SETTINGS[1]] / max(pad[SETTINGS[0]], 1e-9))


def compare_bucketing(mode: str, paths: dict[str, Path], max_tokens: int, repeats: int) -> tuple[list[str], str]:
    """Table rows for one mode and a line with its items and load times."""
    modules, load = {}, {}
    for name in SETTINGS:
        modules[name], load[name] = loaded_module(mode, paths, max_tokens, bucket=name == "bucket")
    loaders = {name: dm.train_dataloader() for name, dm in modules.items()}
    stats = {name: epoch_stats(loader, mode) for name, loader in loaders.items()}
    seconds = interleaved({name: epoch_run(loader) for name, loader in loaders.items()}, repeats)
    rows = [*rate_rows(mode, stats, seconds), padding_row(mode, stats)]
    loads = ", ".join(f"{name} {s:.2f} s" for name, s in load.items())
    return rows, f"{lengths_line(mode, modules['bucket'])}; load_items() (read + tokenize, once): {loads}"


def compare_workers(paths: dict[str, Path], max_tokens: int, repeats: int) -> str:
    """batches/s of the bucketed critic loader with 1 (A) against 2 (B) DataLoader workers (forked every epoch)."""
    loaders = {}
    for workers in (1, 2):
        dm, _ = loaded_module("critic", paths, max_tokens, num_workers=workers)
        loaders[f"{workers} worker{'s' * (workers > 1)}"] = dm.train_dataloader()
    a_name, b_name = loaders
    n_batches = len(loaders[a_name].batch_sampler)
    seconds = interleaved({name: epoch_run(loader) for name, loader in loaders.items()}, repeats)
    speed = {name: rates([n_batches] * len(s), s) for name, s in seconds.items()}
    ratio = statistics.median(speed[a_name]) / statistics.median(speed[b_name])
    a, b = (f"{name}: {median_spread(speed[name], 0)}/s" for name in loaders)
    return table_row("critic, bucketed: batches/s, DataLoader workers", a, b, ratio)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    hf_logging.disable_progress_bar()
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_workload(args, Path(tmp))
        critic, critic_line = compare_bucketing("critic", paths, args.max_tokens, args.repeats)
        actor, actor_line = compare_bucketing("actor", paths, args.actor_max_tokens, args.repeats)
        workers = [] if args.no_workers else [compare_workers(paths, args.max_tokens, args.repeats)]
    ks = f"k = {args.min_steps}..{args.max_steps} operations"
    print(f"workload: arith reference solutions, {ks}; {critic_line}; {actor_line}; median of {args.repeats} epochs")
    print(table_header())
    for row in [*critic, *actor, *workers]:
        print(row)


if __name__ == "__main__":
    main()

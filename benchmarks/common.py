"""What every benchmark shares: the machine line, interleaved timing with warm-up, median and spread, markdown
table rows, peak memory of a child process, and the paper-shaped policy.

Timing: every way of doing the work gets one untimed warm-up run, then `repeats` rounds of one timed run each,
interleaved (a, b, a, b, ...) so that other load on the machine hits all of them alike. A figure is the median,
± half the min-max range. The times are only meaningful on otherwise idle cores.

Tables: each benchmark prints markdown rows `| comparison | A | B | ratio |`, so its output pastes into
docs/performance.md as it is.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from dapo.core.machine import cpu_model

Row = dict[str, Any]

CACHE_DIR = Path(os.environ.get("DAPO_BENCH_CACHE", "runs/bench"))
"""Where models built for benchmarks are kept between runs (built once per machine)."""


def machine_line() -> str:
    """CPU model, cores, threads, torch version and the load at start."""
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"1-min load average {os.getloadavg()[0]:.2f} at start"
    )


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each run: one warm-up each, then `repeats` interleaved timed rounds."""
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def median_spread(values: Sequence[float], digits: int = 1) -> str:
    """ "median (± half the range)"."""
    spread = (max(values) - min(values)) / 2
    return f"{statistics.median(values):,.{digits}f} (± {spread:,.{digits}f})"


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that train a random tiny Llama: timing repeats, model size, AdamW lr, seed,
    threads (apply with `set_threads`)."""
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per mode, after one warm-up")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")


def set_threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def table_header() -> str:
    return "| comparison | A | B | ratio |\n|---|---|---|---|"


def table_row(comparison: str, a: str, b: str, ratio: float, note: str = "") -> str:
    """One comparison: A and B with their figures, and the ratio (written so that > 1 means A is better)."""
    return f"| {comparison} | {a} | {b} | {ratio:.2f}x{' ' + note if note else ''} |"


def rates(counts: Sequence[float], seconds: Sequence[float]) -> list[float]:
    """Items (tokens, batches, ...) per second of each timed run."""
    return [n / s for n, s in zip(counts, seconds, strict=True)]


# -- one training epoch, dapo's way and the HF Trainer's ------------------------------------------------------------


def fit_one_epoch(module: Any, datamodule: Any) -> None:
    """One CPU epoch of a dapo LightningModule: no validation, checkpoints, logging or progress bars."""
    import lightning as L

    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)


def hf_epoch_settings(out: str, batch: int, lr: float) -> dict[str, Any]:
    """`TrainingArguments` (and TRL configs) for one quiet CPU epoch with the optimizer dapo's modules use: AdamW at
    a constant `lr` with torch's default weight decay, nothing saved or logged."""
    return {
        "output_dir": out,
        "per_device_train_batch_size": batch,
        "num_train_epochs": 1,
        "learning_rate": lr,
        "weight_decay": 0.01,
        "lr_scheduler_type": "constant",
        "optim": "adamw_torch",
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
    }


# -- memory --------------------------------------------------------------------------------------------------------


def resident_kib(field: str = "VmRSS") -> int:
    """This process's resident memory (`VmRSS`) or its peak since the last reset (`VmHWM`), in KiB (Linux)."""
    found = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    if found is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return int(found.group(1))


def peak_above_current_mib(work: Callable[[], object]) -> float:
    """Peak resident memory while `work` runs, above the resident memory just before, in MiB (Linux).

    Resets the kernel's high-water mark first (`/proc/self/clear_refs`). Run it in a fresh process with
    MALLOC_MMAP_THRESHOLD_ set low (see `child_env`): then tensors are mmapped and returned to the system when
    freed, so what an earlier step freed does not hide this one's peak."""
    before = resident_kib()
    Path("/proc/self/clear_refs").write_text("5")
    work()
    return (resident_kib("VmHWM") - before) / 1024


def child_env() -> dict[str, str]:
    """Environment for a memory-measuring child: allocations over 64 KiB are mmapped (and unmapped when freed)."""
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}


# -- the paper-shaped policy ---------------------------------------------------------------------------------------


def paper_shaped_policy(n_steps: int = 12, sft_steps: int = 250, seed: int = 0) -> Path:
    """A tiny Llama (hidden 128, 4 layers) fine-tuned for `sft_steps` on `n_steps`-operation arith solutions, so it
    writes solutions of about n_steps + 1 lines and stops: states at every step then have as much left to generate
    as in a real multi-step solution. Built once (about 70 s on 2 cores) into CACHE_DIR and reused."""
    from dapo.pipeline.tiny_model import tiny_model_for_task
    from dapo.training.sft import supervised_finetune

    out = CACHE_DIR / f"policy-arith{n_steps}-sft{sft_steps}-seed{seed}"
    if (out / "config.json").exists():
        return out
    task = paper_task(n_steps)
    examples = task.load("train")
    sizes = {"vocab_size": 512, "hidden_size": 128, "num_layers": 4, "num_heads": 4}
    base = tiny_model_for_task(out.with_name(out.name + ".base"), examples, task, **sizes, seed=seed, overwrite=True)
    pairs = [(task.prompt(ex), task.reference_solution(ex) or "") for ex in examples]
    supervised_finetune(base, out, pairs, steps=sft_steps, batch_size=32, lr=3e-3, seed=seed)
    return out


def random_tiny_model(task: Any, out: Path, hidden_size: int, num_layers: int, vocab_size: int) -> Path:
    """A random tiny Llama (4 heads) whose BPE tokenizer is trained on the task's training prompts and solutions."""
    from dapo.pipeline.tiny_model import tiny_model_for_task

    sizes = {"vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": num_layers, "num_heads": 4}
    return tiny_model_for_task(out, task.load("train"), task, **sizes, seed=0)


def reference_states(task: Any, ex: Any, rng: random.Random, problem_id: str, n_rollouts: int) -> list[Row]:
    """`states` records (dapo.records) for s_0 .. s_T of the reference solution of `ex`, random MC values."""
    from dapo.core.steps import split_steps

    steps = split_steps(task.reference_solution(ex) or "")
    return [
        {
            "state_id": f"{problem_id}/s0/t{t}",
            "problem_id": problem_id,
            "solution_id": f"{problem_id}/s0",
            "t": t,
            "prompt": task.prompt(ex),
            "steps": steps,
            "mc_value": rng.random(),
            "n_rollouts": n_rollouts * (t < len(steps)),
            "completions": [],
            "completion_rewards": [],
        }
        for t in range(len(steps) + 1)
    ]


def paper_task(n_steps: int = 12, test_size: int = 64) -> Any:
    """The arith task of the paper-shaped workload (solutions of n_steps + 1 lines)."""
    from dapo.tasks import ArithTask

    return ArithTask(n_steps=n_steps, train_size=2000, test_size=test_size, seed=0)

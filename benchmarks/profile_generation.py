"""Profile of the rollout workload: where HFGenerator, plain `generate` and `generate_batch` spend their time.

Why: on one H200 (docs/performance.md, GPU check) dapo's HFGenerator generated 2,710 tok/s on a 135M model where
transformers' continuous batching reached 3,770; at batch 128-256 a 135M model's decode step is a few ms of GPU
work, so such rates point at the host. This runs each way once under `torch.profiler` on the same states and
reports, per way: wall seconds, tokens/s, the GPU's busy share (kernel time / wall) and the host operators with
the most self time. A GPU busy share far under 1 means the host (Python, launches, synchronisation) is the limit.

Workload: benchmarks/rollout_throughput.py's (states of `--n-steps`-step arith solutions, `--rollouts` each, at
most `--max-new-tokens`), on `--model` (with `--random-weights`, its shape and tokenizer with random weights).
One warm-up per way first, unprofiled. `--cpu` runs it on the CPU (no GPU rows), so CI-free checks are possible.

Run (repository root): python -m benchmarks.profile_generation --model DIR [--random-weights] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import paper_task
from benchmarks.gpu_check import SEED, Setup, random_weights
from benchmarks.rollout_throughput import ROLLOUT_WAYS, RolloutWay, workload_states
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.protocol import SamplingParams

WAYS = ROLLOUT_WAYS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", required=True, help="policy folder")
    parser.add_argument("--random-weights", action="store_true", help="--model's shape with random weights")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU")
    parser.add_argument("--problems", type=int, default=2)
    parser.add_argument("--n-steps", type=int, default=6)
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rows", type=int, default=15, help="operators listed per way")
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS), help="ways to profile")
    parser.add_argument("--out", default=None, help="folder for each way's full operator table")
    return parser.parse_args(argv)


def profiled(way: RolloutWay, generator: HFGenerator, states: Sequence[str], params: SamplingParams, cpu: bool):
    """One profiled run: (tokens, wall seconds, profiler)."""
    activities = [ProfilerActivity.CPU] + ([] if cpu else [ProfilerActivity.CUDA])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        tokens = way(generator, states, params)
        if not cpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return tokens, seconds, prof


def device_busy_seconds(prof: profile) -> float:
    """Seconds of device kernel time: the self device time of every operator, summed (0 on CPU)."""
    return sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages()) / 1e6


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dapo-profile-"))
    setup = Setup(args.cpu, work, args.model, None, args.random_weights)
    model = random_weights(setup) if args.random_weights else args.model
    print(f"model: {model}")
    assert setup.model is not None
    dtype, device = (torch.float32, "cpu") if args.cpu else (torch.bfloat16, "cuda")
    generator = HFGenerator.from_pretrained(setup.model, dtype=dtype, device=device, batch_size=args.batch_size)
    states = workload_states(paper_task(args.n_steps, test_size=args.problems), args.problems)
    params = SamplingParams(n=args.rollouts, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=SEED)
    print(f"workload: {len(states)} states x {args.rollouts} rollouts, at most {args.max_new_tokens} new tokens")
    summary = ["| way | tokens | wall s | tok/s | GPU busy | top host operator (self) |", "|---|---|---|---|---|---|"]
    for name in args.ways:
        way = WAYS[name]
        way(generator, states[:2], params)  # warm-up
        tokens, seconds, prof = profiled(way, generator, states, params, args.cpu)
        averages = prof.key_averages()
        by_host = averages.table(sort_by="self_cpu_time_total", row_limit=args.rows)
        print(f"\n== {name}: {tokens} tokens in {seconds:.2f} s\n{by_host}")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            sort = "self_cpu_time_total" if args.cpu else "self_device_time_total"
            Path(args.out, f"{name.replace(' ', '_')}.txt").write_text(
                by_host + "\n" + averages.table(sort_by=sort, row_limit=40)
            )
        busy = "n/a" if args.cpu else f"{device_busy_seconds(prof) / seconds:.0%}"
        top = max(averages, key=lambda e: e.self_cpu_time_total)
        top_text = f"{top.key} {top.self_cpu_time_total / 1e6:.2f} s x {top.count}"
        summary.append(f"| {name} | {tokens} | {seconds:.2f} | {tokens / seconds:,.0f} | {busy} | {top_text} |")
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    main()

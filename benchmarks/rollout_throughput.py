"""Rollout throughput: shared-prefix vs plain `HFGenerator` on a DAPO-shaped workload, on CPU.

Why: DAPO's Monte Carlo value estimates sample many rollouts (16 here) from every state s_t = prompt + first t
steps of a solution. The shared-prefix path encodes each state once and repeats its KV cache; the plain path
encodes it once per rollout. This measures what that buys on the same model, states, seeds and settings.

Workload: `--problems` arith problems with `--n-steps` operations; for each, the states before every step of the
reference solution (t = 0 .. steps - 1), `--rollouts` sampled continuations each (temperature 1.0), at most
`--max-new-tokens` tokens. The model is a freshly built tiny Llama (untrained, so rollouts mostly run to the cap).
Each mode gets one warm-up run, then `--repeats` timed runs; the median tokens/s is reported.

Run: `python -m benchmarks.rollout_throughput [--problems 4 --rollouts 16 ...]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers.utils import logging as hf_logging

from dapo.generation import HFGenerator
from dapo.models import build_tiny_model
from dapo.sampling import SamplingParams
from dapo.steps import split_steps, state_text
from dapo.tasks import ArithTask


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--problems", type=int, default=4, help="arith problems whose states are rolled out")
    parser.add_argument("--n-steps", type=int, default=4, help="operations per problem (solution has one more line)")
    parser.add_argument("--rollouts", type=int, default=16, help="rollouts per state (SamplingParams.n)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64, help="rows (states x rollouts) per generate call")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode, after one warm-up")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=512)
    return parser.parse_args(argv)


def build_model(task: ArithTask, out_dir: Path, args: argparse.Namespace) -> Path:
    """A tiny Llama whose BPE tokenizer is trained on the task's training prompts and solutions."""
    texts = [task.prompt(ex) + (task.reference_solution(ex) or "") for ex in task.load("train")]
    return build_tiny_model(
        out_dir,
        texts,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=4,
        seed=0,
    )


def workload_states(task: ArithTask, problems: int) -> list[str]:
    """Every non-terminal state (prompt + first t steps, t < number of steps) of the first test problems."""
    states = []
    for ex in task.load("test")[:problems]:
        steps = split_steps(task.reference_solution(ex) or "")
        states += [state_text(task.prompt(ex), steps, t) for t in range(len(steps))]
    return states


def time_run(generator: HFGenerator, states: list[str], params: SamplingParams) -> tuple[float, int]:
    """Seconds and generated tokens of one `generate` call over all states."""
    before = generator.tokens_generated
    start = time.perf_counter()
    generator.generate(states, params)
    return time.perf_counter() - start, generator.tokens_generated - before


def measure(generator: HFGenerator, states: list[str], params: SamplingParams, repeats: int) -> float:
    """Median tokens/s over `repeats` timed runs, after one untimed warm-up."""
    time_run(generator, states, params)
    rates = []
    for _ in range(repeats):
        seconds, tokens = time_run(generator, states, params)
        rates.append(tokens / seconds)
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    hf_logging.disable_progress_bar()
    task = ArithTask(n_steps=args.n_steps, train_size=500, test_size=max(args.problems, 1), seed=0)
    states = workload_states(task, args.problems)
    params = SamplingParams(n=args.rollouts, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(task, Path(tmp) / "tiny", args)
        shared = HFGenerator.from_pretrained(str(model_dir), batch_size=args.batch_size)
    plain = HFGenerator(shared.model, shared.tokenizer, batch_size=args.batch_size, shared_prefix=False)
    prompt_tokens = [len(ids) for ids in shared.tokenizer(states)["input_ids"]]
    print(
        f"workload: {len(states)} states x {args.rollouts} rollouts, prompt tokens "
        f"{min(prompt_tokens)}-{max(prompt_tokens)} (mean {statistics.mean(prompt_tokens):.0f}), "
        f"max_new_tokens {args.max_new_tokens}, batch_size {args.batch_size}, "
        f"model hidden {args.hidden_size} x {args.num_layers} layers, vocab {len(shared.tokenizer)}"
    )
    rates = {}
    for name, generator in (("shared-prefix", shared), ("plain", plain)):
        rates[name] = measure(generator, states, params, args.repeats)
        print(f"{name:>13}: {rates[name]:10.1f} tokens/s (median of {args.repeats})")
    print(f"{'ratio':>13}: {rates['shared-prefix'] / rates['plain']:10.2f}x (shared-prefix / plain)")


if __name__ == "__main__":
    main()

"""Rollout throughput: dapo's `HFGenerator` vs plain per-sample generation, on a paper-shaped MC workload, on CPU.

Why: DAPO's Monte Carlo value estimates sample many rollouts (16 here) from every state s_t = prompt + first t
steps of a solution, and every rollout runs to the end of the solution, so Stage A's cost grows with the square
of the steps. Three ways to do the same rollouts, on the same model, states and sampling settings:
  - plain: `model.generate` on every state repeated n times (each rollout encodes its state), in the states' own
    order, with transformers' default `DynamicCache`: what one writes with transformers alone;
  - dapo, no shared prefix: `HFGenerator(shared_prefix=False)`: states longest first, in-place KV cache
    (`dapo.generation.kv_cache`), each rollout still encodes its state;
  - dapo: `HFGenerator()`: the above, plus each state encoded once and its KV cache repeated for its n rollouts;
  - dapo, cascade: `HFGenerator(cascade=True)`: each state encoded once and its KV cache kept once, the n rollouts
    attending over that one copy (`dapo.generation.cascade`);
  - generate_batch (`--generate-batch`): transformers' own continuous batching (`model.generate_batch`, paged
    attention, a request per rollout): the peer a transformers user would pick for many independent rollouts.

Workload: the states before every step (t = 0 .. T - 1) of the reference solutions of `--problems` arith problems
with `--n-steps` operations (T = n_steps + 1 lines), `--rollouts` sampled continuations each (temperature 1.0,
at most `--max-new-tokens`), from a tiny Llama fine-tuned to write such solutions (`paper_shaped_policy`, built
once into runs/bench), so a rollout from s_t writes about T - t more lines and stops, as in a real solution.
Timing as in `benchmarks.common`; tokens/s counts generated tokens (eos included, padding not).

Run: `python -m benchmarks.rollout_throughput [--problems 2 --rollouts 16 --batch-size 64 ...]`
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from benchmarks.common import (
    interleaved,
    machine_line,
    median_spread,
    paper_shaped_policy,
    paper_task,
    rates,
    table_header,
    table_row,
)
from dapo.core.padding import left_pad
from dapo.core.steps import split_steps, state_text
from dapo.generation.hf_generator import HFGenerator, count_new_tokens
from dapo.generation.protocol import SamplingParams


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--problems", type=int, default=2, help="arith problems whose states are rolled out")
    parser.add_argument("--n-steps", type=int, default=12, help="operations per problem (solution has one more line)")
    parser.add_argument("--rollouts", type=int, default=16, help="rollouts per state (SamplingParams.n)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=64, help="rows (states x rollouts) per generate call")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per way, after one warm-up")
    parser.add_argument(
        "--generate-batch", action="store_true", help="also time transformers' continuous batching (slow on CPU)"
    )
    return parser.parse_args(argv)


def workload_states(task: Any, problems: int) -> list[str]:
    """Every non-terminal state (prompt + first t steps, t < number of steps) of the first test problems."""
    states = []
    for ex in task.load("test")[:problems]:
        steps = split_steps(task.reference_solution(ex) or "")
        states += [state_text(task.prompt(ex), steps, t) for t in range(len(steps))]
    return states


def plain_generate(generator: HFGenerator, states: Sequence[str], params: SamplingParams) -> int:
    """The baseline: `model.generate` on each state repeated n times, `batch_size` rows per call, in order, default
    cache, the same sampling options as `generator`. Returns the tokens generated."""
    model, tokenizer = generator.model, generator.tokenizer
    rows = [ids for ids in tokenizer(list(states))["input_ids"] for _ in range(params.n)]
    config = generator._generation_config(params)
    generated = 0
    with torch.inference_mode():
        for start in range(0, len(rows), generator.batch_size):
            ids, mask = left_pad(rows[start : start + generator.batch_size], generator.pad_id)  # (b, s)
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)  # (b, s + t)
            generated += count_new_tokens(out[:, ids.shape[1] :], generator.pad_id)
    return generated


def batch_generate(generator: HFGenerator, states: Sequence[str], params: SamplingParams, warmup: bool = True) -> int:
    """The continuous-batching peer: `model.generate_batch` with one request per rollout (each state repeated n
    times), the same sampling options as `generator`, called as its docs show (`warmup` pre-captures CUDA graphs
    for the call's sizes, part of every call). Returns the tokens generated; a failed request is an error."""
    rows = [ids for ids in generator.tokenizer(list(states))["input_ids"] for _ in range(params.n)]
    config = generator._generation_config(params)
    config.num_return_sequences = 1
    with torch.inference_mode():
        outputs = generator.model.generate_batch(
            inputs=rows, generation_config=config, progress_bar=False, warmup=warmup
        )
    failed = [out.error for out in outputs.values() if out.error is not None]
    if failed or len(outputs) != len(rows):
        raise RuntimeError(f"generate_batch: {len(outputs)} of {len(rows)} requests came back; errors: {failed[:3]}")
    return sum(len(out.generated_tokens) for out in outputs.values())


def counted(generator: HFGenerator, states: Sequence[str], params: SamplingParams) -> int:
    """Tokens generated by one `generator.generate` call."""
    before = generator.tokens_generated
    generator.generate(states, params)
    return generator.tokens_generated - before


RolloutWay = Callable[[HFGenerator, Sequence[str], SamplingParams], int]
ROLLOUT_WAYS: dict[str, RolloutWay] = {
    "HFGenerator": counted,
    "plain generate": plain_generate,
    "generate_batch": batch_generate,
    "HFGenerator, cascade": lambda generator, states, params: counted(
        HFGenerator(generator.model, generator.tokenizer, generator.batch_size, cascade=True), states, params
    ),
}
"""The ways other benchmarks time or profile by name: dapo's generator, plain `generate`, continuous batching, and
dapo's generator with cascade attention."""


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    hf_logging.disable_progress_bar()
    task = paper_task(args.n_steps, test_size=max(args.problems, 1))
    states = workload_states(task, args.problems)
    params = SamplingParams(n=args.rollouts, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    dapo = HFGenerator.from_pretrained(str(paper_shaped_policy(args.n_steps)), batch_size=args.batch_size)
    unshared = HFGenerator(dapo.model, dapo.tokenizer, batch_size=args.batch_size, shared_prefix=False)
    cascade = HFGenerator(dapo.model, dapo.tokenizer, batch_size=args.batch_size, cascade=True)
    tokens: dict[str, list[int]] = {"plain": [], "dapo, no shared prefix": [], "dapo": [], "dapo, cascade": []}
    runs = {
        "plain": lambda: tokens["plain"].append(plain_generate(dapo, states, params)),
        "dapo, no shared prefix": lambda: tokens["dapo, no shared prefix"].append(counted(unshared, states, params)),
        "dapo": lambda: tokens["dapo"].append(counted(dapo, states, params)),
        "dapo, cascade": lambda: tokens["dapo, cascade"].append(counted(cascade, states, params)),
    }
    if args.generate_batch:
        tokens["generate_batch"] = []
        runs["generate_batch"] = lambda: tokens["generate_batch"].append(batch_generate(dapo, states, params))
    seconds = interleaved(runs, args.repeats)
    speed = {name: rates(tokens[name][1:], seconds[name]) for name in runs}  # [0] is the warm-up's count
    prompt_tokens = [len(ids) for ids in dapo.tokenizer(states)["input_ids"]]
    print(machine_line())
    print(
        f"workload: {len(states)} states x {args.rollouts} rollouts, state tokens {min(prompt_tokens)}-"
        f"{max(prompt_tokens)} (mean {statistics.mean(prompt_tokens):.0f}), mean rollout "
        f"{statistics.mean(tokens['dapo'][1:]) / len(states) / args.rollouts:.0f} tokens (max {args.max_new_tokens}), "
        f"{args.batch_size} rows per generate call, tiny Llama hidden 128 x 4 layers; median of {args.repeats} runs"
    )
    print(table_header())
    pairs = [("dapo", "plain"), ("dapo, no shared prefix", "plain"), ("dapo", "dapo, no shared prefix")]
    pairs += [("dapo, cascade", "plain"), ("dapo, cascade", "dapo")]
    pairs += [("dapo", "generate_batch"), ("generate_batch", "plain")] if args.generate_batch else []
    for a, b in pairs:
        ratio = statistics.median(speed[a]) / statistics.median(speed[b])
        a_text, b_text = f"{a}: {median_spread(speed[a], 0)} tok/s", f"{b}: {median_spread(speed[b], 0)} tok/s"
        print(table_row("rollouts: generated tokens/s", a_text, b_text, ratio))


if __name__ == "__main__":
    main()

"""Actor step: shared-prefix packed micro-batches vs one padded sequence per action, on CPU.

Why: DAPO's actor trains on many candidate actions a_1..a_k of every state s (16 here). A packed row holds s once
followed by all its actions (a 4D mask keeps the actions apart, `dapo.core.packing`); the fallback pads one row
s + a_i per action, so the model sees s k times. This measures what packing buys in tokens and in training-step
time on the same model, data and micro-batches, and checks that both layouts give the same log-probs.

Workload: `--problems` arith problems with `--n-steps` operations; for each, the states s_t before every step of
the reference solution (t = 0 .. steps - 1, the last step being the terminal "Answer: N"). Every state gets
`--actions` unique candidates for its next step: the reference step plus variants with another operator, operand
and/or result (a wrong "Answer: N" for the last step, terminal, so it ends with eos). Advantages are random in
[-0.5, 0.5], reference log-probs -10. The rows go through `actor_items` and `collate_actor` into micro-batches of
`--states-per-batch` states; the unpacked form of each is `unpack_batch` (built once, outside the timing).
One actor step per micro-batch is `policy_logprobs` + `dapo_loss` + backward + AdamW step + zero_grad on a freshly
built tiny Llama (each mode trains its own copy, from the same weights); a pass is one step on every micro-batch.
Timing as in `benchmarks.common` (warm-up, interleaved repeats, median ± half the range). Peak memory: one pass in
a fresh child process per mode, above the resident model and optimizer state (`peak_above_current_mib`). The
log-prob check runs first, on the untrained copy, in eval mode without grad, in fp32.

Run: `python -m benchmarks.actor_packing [--problems 4 --actions 16 --states-per-batch 4 ...]`
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from benchmarks.common import (
    add_training_args,
    child_env,
    interleaved,
    machine_line,
    median_spread,
    peak_above_current_mib,
    random_tiny_model,
    set_threads,
    table_header,
    table_row,
)
from dapo.core.losses import dapo_loss
from dapo.core.packing import Batch, unpack_batch
from dapo.core.steps import split_steps
from dapo.data_modules.collate import ActorItem, collate_actor
from dapo.data_modules.featurize import actor_items
from dapo.models.outputs import policy_logprobs
from dapo.tasks import ArithTask
from dapo.tasks.arith import ALLOWED_OPS, apply_op

Row = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--problems", type=int, default=4, help="arith problems whose states are trained on")
    parser.add_argument("--n-steps", type=int, default=6, help="operations per problem (solution has one more line)")
    parser.add_argument("--actions", type=int, default=16, help="unique candidate actions per state")
    parser.add_argument("--states-per-batch", type=int, default=1, help="states (packed rows) per micro-batch")
    add_training_args(parser)
    parser.add_argument("--peak-memory-of", choices=["packed", "unpacked"], help=argparse.SUPPRESS)  # child process
    return parser.parse_args(argv)


# -- workload ----------------------------------------------------------------------------------------------------


def step_variants(step: str, k: int, rng: random.Random) -> list[str]:
    """`step` plus k - 1 distinct plausible alternatives: "a op n = c\\n" with another operator, operand and/or
    result (c >= 0, at most 3 off), or "Answer: N" with another N >= 0 (at most 20 off). Raises if fewer exist."""
    if step.startswith("Answer:"):
        answer = int(step.split(":")[1])
        candidates = [f"Answer: {answer + d}" for d in range(-20, 21) if answer + d >= 0]
    else:
        value = int(step.split(" ")[0])
        candidates = [
            f"{value} {op} {n} = {apply_op(value, op, n) + d}\n"
            for op in ALLOWED_OPS
            for n in range(1, 10)
            for d in range(-3, 4)
            if apply_op(value, op, n) + d >= 0
        ]
    candidates = [c for c in candidates if c != step]
    if len(candidates) < k - 1:
        raise ValueError(f"step {step!r} has only {len(candidates)} variants, {k - 1} needed")
    return [step, *rng.sample(candidates, k - 1)]


def action_rows(task: ArithTask, problems: int, actions: int, seed: int) -> list[Row]:
    """`actions` records (dapo.records' actions schema) for every state before each reference step."""
    rng = random.Random(seed)
    rows: list[Row] = []
    for ex in task.load("test")[:problems]:
        steps = split_steps(task.reference_solution(ex) or "")
        for t, step in enumerate(steps):
            terminal = t == len(steps) - 1
            for action in step_variants(step, actions, rng):
                rows.append(
                    {
                        "state_id": f"{ex['id']}-t{t}",
                        "problem_id": ex["id"],
                        "prompt": task.prompt(ex),
                        "state_steps": steps[:t],
                        "action": action,
                        "value": rng.random(),
                        "advantage": rng.uniform(-0.5, 0.5),
                        "is_terminal": terminal,
                        "ref_logprob": -10.0,
                    }
                )
    return rows


def micro_batches(items: Sequence[ActorItem], states_per_batch: int, pad_id: int) -> list[Batch]:
    """Consecutive groups of `states_per_batch` items, each collated into one packed batch."""
    return [collate_actor(items[i : i + states_per_batch], pad_id) for i in range(0, len(items), states_per_batch)]


def token_means(items: Sequence[ActorItem]) -> tuple[float, float]:
    """Mean state tokens and mean action tokens (eos included for terminal actions), over all actions."""
    state, action = [], []
    for item in items:
        for suffix, start in zip(item["suffixes"], item["starts"], strict=True):
            state.append(start)
            action.append(len(item["prefix"]) + len(suffix) - start)
    return statistics.mean(state), statistics.mean(action)


# -- measurements ------------------------------------------------------------------------------------------------


def tokens_per_state(batches: Sequence[Batch], n_states: int) -> float:
    """Elements of input_ids (rows x padded length), summed over batches, per state."""
    return sum(batch["input_ids"].numel() for batch in batches) / n_states


@torch.no_grad()
def all_logprobs(model: nn.Module, batches: Sequence[Batch], packed: bool) -> torch.Tensor:
    """log pi(a | s) of every action of every batch, concatenated (a_total,), fp32."""
    return torch.cat([policy_logprobs(model, batch, packed) for batch in batches])


def max_logprob_diff(model: nn.Module, packed: Sequence[Batch], unpacked: Sequence[Batch]) -> float:
    """Largest |packed - unpacked| per-action log-prob, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    diff = (all_logprobs(model, packed, True) - all_logprobs(model, unpacked, False)).abs().max()
    model.train(was_training)
    return float(diff)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, packed: bool) -> None:
    """One actor step on one micro-batch: log-probs, DAPO loss, backward, optimizer step, zero_grad."""
    logprobs = policy_logprobs(model, batch, packed)  # (a,)
    loss = dapo_loss(logprobs, batch["ref_logprobs"], batch["advantages"], batch["action_state"]).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def training_pass(model: nn.Module, batches: Sequence[Batch], packed: bool, lr: float) -> Callable[[], None]:
    """One training step on every batch, on a private copy of `model` (train mode) with its own AdamW."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def run() -> None:
        for batch in batches:
            train_step(model, optimizer, batch, packed)

    return run


def peak_memory_mib(argv: Sequence[str], mode: str) -> float:
    """Peak resident memory of one training pass in `mode`, above the loaded model and optimizer state, measured
    in a fresh child process (so the two modes cannot share freed memory)."""
    command = [sys.executable, "-m", "benchmarks.actor_packing", *argv, "--peak-memory-of", mode]
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def measure_own_peak(args: argparse.Namespace) -> None:
    """The child's side of `peak_memory_mib`: warm up (optimizer state exists), then print the pass's peak."""
    model, batches, _ = prepare(args)
    packed = args.peak_memory_of == "packed"
    run = training_pass(model, batches[args.peak_memory_of], packed, args.lr)
    run()
    print(f"{peak_above_current_mib(run):.2f}")


# -- report ------------------------------------------------------------------------------------------------------


def print_header(args: argparse.Namespace, items: Sequence[ActorItem], n_batches: int, vocab: int) -> None:
    """The machine and the workload."""
    state_tokens, action_tokens = token_means(items)
    n_actions = sum(len(item["suffixes"]) for item in items)
    print(machine_line())
    print(
        f"workload: {args.problems} problems, {len(items)} states, {n_actions / len(items):.0f} actions per state, "
        f"mean state tokens {state_tokens:.1f}, mean action tokens {action_tokens:.1f}; {n_batches} micro-batches "
        f"of {args.states_per_batch} state(s); model hidden {args.hidden_size} x {args.num_layers} layers, "
        f"vocab {vocab}; step = log-probs + DAPO loss + backward + AdamW; median of {args.repeats} passes"
    )


def print_table(tokens: dict[str, float], ms: dict[str, list[float]], peak: dict[str, float]) -> None:
    """tokens/state, step ms/state and peak memory, packed (A) against one padded row per action (B)."""
    print(table_header())
    a, b = "packed", "unpacked"
    print(table_row("actor: tokens per state", f"{a} {tokens[a]:,.0f}", f"{b} {tokens[b]:,.0f}", tokens[b] / tokens[a]))
    ratio = statistics.median(ms[b]) / statistics.median(ms[a])
    print(table_row("actor: step ms per state", f"{a} {median_spread(ms[a])}", f"{b} {median_spread(ms[b])}", ratio))
    print(table_row("actor: peak MiB per pass", f"{a} {peak[a]:.1f}", f"{b} {peak[b]:.1f}", peak[b] / peak[a]))


def load_model(args: argparse.Namespace, task: ArithTask) -> tuple[nn.Module, Any]:
    """A random tiny Llama (fp32, train mode) with a BPE tokenizer trained on the task's texts."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_tiny_model(task, Path(tmp) / "tiny", args.hidden_size, args.num_layers, args.vocab_size)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).float().train()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return model, tokenizer


def prepare(args: argparse.Namespace) -> tuple[nn.Module, dict[str, list[Batch]], list[ActorItem]]:
    """The model, each mode's micro-batches and the actor items, the same in every process for the same args."""
    torch.manual_seed(args.seed)
    task = ArithTask(n_steps=args.n_steps, train_size=500, test_size=max(args.problems, 1), seed=0)
    model, tokenizer = load_model(args, task)
    pad_id = tokenizer.pad_token_id
    items, _ = actor_items(action_rows(task, args.problems, args.actions, args.seed), tokenizer, max_length=4096)
    batches = {"packed": micro_batches(items, args.states_per_batch, pad_id)}
    batches["unpacked"] = [unpack_batch(batch, pad_id) for batch in batches["packed"]]
    return model, batches, items


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    hf_logging.disable_progress_bar()
    set_threads(args)
    if args.peak_memory_of:
        measure_own_peak(args)
        return
    model, batches, items = prepare(args)
    print_header(args, items, len(batches["packed"]), model.config.vocab_size)
    diff = max_logprob_diff(model, batches["packed"], batches["unpacked"])
    n_states = len(items)
    tokens = {name: tokens_per_state(b, n_states) for name, b in batches.items()}
    runs = {name: training_pass(model, b, name == "packed", args.lr) for name, b in batches.items()}
    seconds = interleaved(runs, args.repeats)
    ms = {name: [1000 * s / n_states for s in values] for name, values in seconds.items()}
    own_args = list(argv if argv is not None else sys.argv[1:])
    peak = {name: peak_memory_mib(own_args, name) for name in batches}
    print_table(tokens, ms, peak)
    print(f"log-prob check: max |packed - unpacked| = {diff:.2e} per action (eval mode, fp32)")


if __name__ == "__main__":
    main()

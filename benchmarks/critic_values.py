"""Critic values: one forward per trajectory vs one forward per state (training), and candidate scoring packed vs
one padded row per candidate (Stage B), on CPU.

Why: the critic reads V(s_t) at the last token of every state s_t = prompt + first t steps. With causal attention
one forward pass over a whole solution gives V at every step boundary, which is how `CriticModule` trains
(`critic_items` + `collate_critic`, `gather_at` the boundaries); the obvious alternative feeds every state as its
own row, so a solution of T steps is encoded T + 1 times over growing prefixes. Stage B then scores V(s + a) of
many candidate next steps a of every state (`score_groups` with `critic_values`): packed, a row holds s once
followed by all its candidates (`dapo.core.packing`); unpacked, one padded row per candidate repeats s each time. This
measures both on the same model and data, and checks that each pair of ways gives the same values.

Workload: `--problems` arith test problems with `--n-steps` operations (paper-shaped: solutions of n_steps + 1
lines); states at every step boundary of the reference solution (t = 0 .. T) with random MC targets in [0, 1].
Training: the trajectories, or the states (each its prefix of the trajectory's tokens, value at its last token),
are planned into batches of at most `--max-tokens` padded tokens (`token_budget_batches`, length-bucketed, no shuffle);
a step is ValueModel forward + `gather_at` + BCE `value_loss` + backward + AdamW step + zero_grad, each mode on
its own copy of the model from the same weights; a pass is one step on every batch. Scoring: the states before
every step (t = 0 .. T - 1), each with `--candidates` unique next steps (the reference step plus variants,
`benchmarks.actor_packing.step_variants`), tokenized as Stage B does (`state_group`, no eos), one
`score_groups` call over all states per pass, same `--max-tokens`. The model is a random tiny Llama with a BPE
tokenizer trained on the task (`random_tiny_model`) under a fresh value head. Timing as in `benchmarks.common`
(warm-up, interleaved repeats, median ± half the range). Tokens per state count padded input_ids. The value
checks run first, on the untrained model, in eval mode without grad, in fp32.

Run: `python -m benchmarks.critic_values [--problems 8 --n-steps 12 --candidates 16 --max-tokens 8192 ...]`
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import random
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from benchmarks.actor_packing import step_variants
from benchmarks.common import (
    add_training_args,
    interleaved,
    machine_line,
    median_spread,
    paper_task,
    random_tiny_model,
    reference_states,
    set_threads,
    table_header,
    table_row,
)
from dapo.core.batching import token_budget_batches
from dapo.core.losses import gather_at, value_loss
from dapo.core.packing import Batch, TokenGroup, pack_groups, packed_length, unpack_batch, unpacked_length
from dapo.core.padding import pad_id_of, pad_right, right_mask
from dapo.core.steps import join_steps, split_steps
from dapo.data_modules.collate import CriticItem, collate_critic
from dapo.data_modules.featurize import critic_items, state_group
from dapo.models.outputs import critic_values, score_groups
from dapo.models.value import ValueModel

Row = dict[str, Any]
TRAJECTORY, STATE, PACKED, UNPACKED = "per trajectory", "per state", "packed", "unpacked"
SCORING = (PACKED, UNPACKED)
PLAN: Mapping[str, Any] = {"shuffle": False, "bucket": True, "seed": 0}  # as score_groups plans


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--problems", type=int, default=8, help="arith test problems whose states are used")
    parser.add_argument("--n-steps", type=int, default=12, help="operations per problem (solution has one more line)")
    parser.add_argument("--candidates", type=int, default=16, help="unique candidate next steps per state (scoring)")
    parser.add_argument("--max-tokens", type=int, default=8192, help="padded-token budget of a batch (both modes)")
    add_training_args(parser)
    return parser.parse_args(argv)


# -- workload ----------------------------------------------------------------------------------------------------


def state_rows(task: Any, problems: int, seed: int) -> list[Row]:
    """`states` records (dapo.records) for s_0 .. s_T of the reference solutions, with random MC values."""
    rng = random.Random(seed)
    return [row for ex in task.load("test")[:problems] for row in reference_states(task, ex, rng, ex["id"], 16)]


def candidate_groups(task: Any, tokenizer: Any, problems: int, candidates: int, seed: int) -> list[TokenGroup]:
    """For every state s_t, t < T, its `candidates` next steps as one shared-prefix group (as Stage B's critic
    scoring builds them: `state_group` without eos)."""
    rng = random.Random(seed)
    groups: list[TokenGroup] = []
    for ex in task.load("test")[:problems]:
        steps = split_steps(task.reference_solution(ex) or "")
        for t, step in enumerate(steps):
            prefix = task.prompt(ex) + join_steps(steps[:t])
            groups.append(state_group(tokenizer, prefix, step_variants(step, candidates, rng), [False] * candidates))
    return groups


def state_offsets(items: Sequence[CriticItem]) -> list[int]:
    """Index of each trajectory's first state in the flat order of all states (trajectory by trajectory)."""
    offsets, total = [], 0
    for item in items:
        offsets.append(total)
        total += len(item["boundaries"])
    return offsets


def trajectory_batches(items: Sequence[CriticItem], max_tokens: int, pad_id: int) -> list[Batch]:
    """`collate_critic` batches of whole trajectories under the token budget, plus state_index (b, n): the flat
    index of the state at each boundary (-1 on padding)."""
    offsets = state_offsets(items)
    plan = token_budget_batches([len(i["input_ids"]) for i in items], [1] * len(items), max_tokens, **PLAN)
    batches = []
    for indices in plan:
        batch = collate_critic([items[i] for i in indices], pad_id)
        flat = [list(range(offsets[i], offsets[i] + len(items[i]["boundaries"]))) for i in indices]
        batch["state_index"] = pad_right(flat, -1)  # (b, n)
        batches.append(batch)
    return batches


def state_batches(items: Sequence[CriticItem], max_tokens: int, pad_id: int) -> list[Batch]:
    """One row per state (its prefix of the trajectory's tokens, so the tokens are identical), in batches under
    the token budget, with the fields of `collate_critic`: one boundary per row, at its last token."""
    rows = [
        (item["input_ids"][: end + 1], target)
        for item in items
        for end, target in zip(item["boundaries"], item["targets"], strict=True)
    ]
    plan = token_budget_batches([len(ids) for ids, _ in rows], [1] * len(rows), max_tokens, **PLAN)
    batches = []
    for indices in plan:
        ids = [rows[i][0] for i in indices]
        batches.append(
            {
                "input_ids": pad_right(ids, pad_id),  # (b, s)
                "attention_mask": right_mask(ids),  # (b, s)
                "boundary_index": torch.tensor([[len(row) - 1] for row in ids]),  # (b, 1)
                "boundary_mask": torch.ones(len(ids), 1, dtype=torch.bool),  # (b, 1)
                "targets": torch.tensor([[rows[i][1]] for i in indices], dtype=torch.float32),  # (b, 1)
                "target_mask": torch.ones(len(ids), 1, dtype=torch.bool),  # (b, 1)
                "state_index": torch.tensor([[i] for i in indices]),  # (b, 1)
            }
        )
    return batches


# -- critic training: values at every step boundary ----------------------------------------------------------------


def boundary_logits(model: ValueModel, batch: Batch) -> torch.Tensor:
    """Value logits at the batch's boundaries (b, n), as `CriticModule.boundary_logits` computes them."""
    return gather_at(model(batch["input_ids"], batch["attention_mask"]), batch["boundary_index"])


@torch.no_grad()
def values_by_state(model: ValueModel, batches: Sequence[Batch], n_states: int) -> torch.Tensor:
    """V of every state (n_states,), fp32, in the flat state order, whatever the batches' layout."""
    out = torch.full((n_states,), float("nan"))
    for batch in batches:
        keep = batch["boundary_mask"]  # (b, n)
        out[batch["state_index"][keep]] = torch.sigmoid(boundary_logits(model, batch).float())[keep]
    return out


def max_value_diff(model: ValueModel, a: Sequence[Batch], b: Sequence[Batch], n_states: int) -> float:
    """Largest |V_a - V_b| over all states, in eval mode (the model's mode is restored); NaN if a state is missing."""
    was_training = model.training
    model.eval()
    diff = (values_by_state(model, a, n_states) - values_by_state(model, b, n_states)).abs()
    model.train(was_training)
    return float("nan") if diff.isnan().any() else float(diff.max())


def critic_step(model: ValueModel, optimizer: torch.optim.Optimizer, batch: Batch) -> None:
    """One critic step: boundary logits, BCE against the MC targets, backward, optimizer step, zero_grad."""
    loss = value_loss(boundary_logits(model, batch), batch["targets"], batch["target_mask"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def training_pass(model: ValueModel, batches: Sequence[Batch], lr: float) -> Callable[[], None]:
    """One critic step on every batch, on a private copy of `model` (train mode) with its own AdamW."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def run() -> None:
        for batch in batches:
            critic_step(model, optimizer, batch)

    return run


# -- candidate scoring -------------------------------------------------------------------------------------------


def scoring_pass(
    model: ValueModel, groups: Sequence[TokenGroup], pad_id: int, max_tokens: int, packed: bool
) -> Callable[[], list[list[float]]]:
    """One `score_groups` call over all groups with `critic_values` (its progress bar silenced)."""

    def run() -> list[list[float]]:
        with contextlib.redirect_stderr(io.StringIO()):
            return score_groups(
                groups,
                lambda batch, packed: critic_values(model, batch, packed),
                pad_id=pad_id,
                max_tokens=max_tokens,
                packed=packed,
                desc="critic values",
            )

    return run


def scoring_tokens(groups: Sequence[TokenGroup], pad_id: int, max_tokens: int, packed: bool) -> int:
    """Padded input_ids elements of the batches `score_groups` runs (planned the same way)."""
    lengths = [packed_length(g) if packed else unpacked_length(g) * len(g["suffixes"]) for g in groups]
    total = 0
    for indices in token_budget_batches(lengths, [1] * len(groups), max_tokens, **PLAN):
        batch = pack_groups([groups[i] for i in indices], pad_id)
        total += (batch if packed else unpack_batch(batch, pad_id))["input_ids"].numel()
    return total


def max_score_diff(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """Largest |a - b| over all candidates of all states."""
    return max(abs(x - y) for xs, ys in zip(a, b, strict=True) for x, y in zip(xs, ys, strict=True))


# -- report ------------------------------------------------------------------------------------------------------


def cell(name: str, ms: Sequence[float], tokens: float) -> str:
    """One table cell: the mode, its ms per state (median ± half the range) and its tokens per state."""
    return f"{name}: {median_spread(ms, 2)} ms, {tokens:,.0f} tokens"


def print_header(
    args: argparse.Namespace, items: Sequence[CriticItem], groups: Sequence[TokenGroup], batches: Mapping[str, Any]
) -> None:
    """The machine and the workload."""
    n_states = sum(len(item["boundaries"]) for item in items)
    mean_tokens = statistics.mean(len(item["input_ids"]) for item in items)
    action_tokens = statistics.mean(len(s) for g in groups for s in g["suffixes"])
    print(machine_line())
    print(
        f"workload: {len(items)} arith problems of {args.n_steps} operations, mean {mean_tokens:.0f} tokens per "
        f"solution; training: {n_states} states (t = 0..T), {len(batches[TRAJECTORY])} vs "
        f"{len(batches[STATE])} batches; scoring: {len(groups)} states (t < T) x {args.candidates} candidates of "
        f"{action_tokens:.1f} tokens; max {args.max_tokens} tokens per batch; model hidden {args.hidden_size} x "
        f"{args.num_layers} layers + value head; step = forward + BCE + backward + AdamW; "
        f"median of {args.repeats} passes"
    )


def print_table(ms: Mapping[str, Sequence[float]], tokens: Mapping[str, float]) -> None:
    """One row per comparison: ms and tokens per state; the ratio is B's median ms over A's."""
    print(table_header())
    for comparison, a, b in (
        ("critic: values at every step boundary (train step)", TRAJECTORY, STATE),
        ("critic: candidate scoring (score_groups)", PACKED, UNPACKED),
    ):
        ratio = statistics.median(ms[b]) / statistics.median(ms[a])
        print(table_row(comparison, cell(a, ms[a], tokens[a]), cell(b, ms[b], tokens[b]), ratio))


def load_critic(args: argparse.Namespace, task: Any) -> tuple[ValueModel, Any]:
    """A random tiny Llama backbone (fp32, train mode) under a fresh value head, and its task-trained tokenizer."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_tiny_model(task, Path(tmp) / "tiny", args.hidden_size, args.num_layers, args.vocab_size)
        model = ValueModel.from_pretrained(model_dir, dtype=torch.float32).train()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return model, tokenizer


def time_per_state(runs: Mapping[str, Callable[[], object]], n_states: int, repeats: int) -> dict[str, list[float]]:
    """ms per state of each run's timed passes (`interleaved`)."""
    seconds = interleaved(dict(runs), repeats)
    return {name: [1000 * s / n_states for s in values] for name, values in seconds.items()}


def prepare(
    args: argparse.Namespace,
) -> tuple[ValueModel, int, list[CriticItem], dict[str, list[Batch]], list[TokenGroup]]:
    """The model, pad id, critic items, each training mode's batches and the scoring groups."""
    torch.manual_seed(args.seed)
    task = paper_task(args.n_steps, test_size=max(args.problems, 1))
    model, tokenizer = load_critic(args, task)
    pad_id = pad_id_of(tokenizer)
    items, _ = critic_items(state_rows(task, args.problems, args.seed), tokenizer, max_length=4096)
    batches = {
        TRAJECTORY: trajectory_batches(items, args.max_tokens, pad_id),
        STATE: state_batches(items, args.max_tokens, pad_id),
    }
    groups = candidate_groups(task, tokenizer, args.problems, args.candidates, args.seed)
    return model, pad_id, items, batches, groups


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    hf_logging.disable_progress_bar()
    set_threads(args)
    model, pad_id, items, batches, groups = prepare(args)
    n_states = sum(len(item["boundaries"]) for item in items)
    print_header(args, items, groups, batches)
    value_diff = max_value_diff(model, batches[TRAJECTORY], batches[STATE], n_states)
    scorer = copy.deepcopy(model).eval()
    scoring = {name: scoring_pass(scorer, groups, pad_id, args.max_tokens, name == PACKED) for name in SCORING}
    score_diff = max_score_diff(scoring[PACKED](), scoring[UNPACKED]())
    tokens = {name: sum(b["input_ids"].numel() for b in bs) / n_states for name, bs in batches.items()}
    tokens |= {name: scoring_tokens(groups, pad_id, args.max_tokens, name == PACKED) / len(groups) for name in SCORING}
    train_runs = {name: training_pass(model, bs, args.lr) for name, bs in batches.items()}
    ms = time_per_state(train_runs, n_states, args.repeats) | time_per_state(scoring, len(groups), args.repeats)
    print_table(ms, tokens)
    print(f"value check: max |per trajectory - per state| = {value_diff:.2e} over {n_states} states (eval, fp32)")
    print(f"score check: max |packed - unpacked| = {score_diff:.2e} over {len(groups) * args.candidates} candidates")


if __name__ == "__main__":
    main()

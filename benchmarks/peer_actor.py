"""Actor training against TRL's DPOTrainer: dapo's ActorModule vs `trl.DPOTrainer` (reference log-probs
precomputed), one epoch each, on the same model, states, actions, optimizer and CPU.

Why: offline step-level preference training is what a user would otherwise do with TRL's DPOTrainer: one
(chosen, rejected) pair per state, each pair run as two padded rows that repeat the state. dapo's actor trains on
every candidate action of a state in one packed row (the state once) with DAPO's squared loss. Two comparisons:
  - same tokens: dapo trained on exactly the pairs DPO sees (each state with its best and worst action), so both
    train the same action tokens of the same states: states/s;
  - all actions: dapo on all `--actions` candidates of each state against DPO's pairs: microseconds per trained
    action token (each side's own action tokens), the cost of learning from one more token of signal.

Workload: `--problems` arith test problems with `--n-steps` operations; every state before a reference step with
`--actions` candidate actions (`benchmarks.actor_packing.action_rows`, random advantages); DPO's chosen / rejected
are the highest / lowest advantage. A random tiny Llama with a BPE tokenizer on the task (`random_tiny_model`),
fp32, the same AdamW learning rate; no validation, checkpoints or logging. DPO's batch size (pairs) is the mean
number of states in dapo's batches (`--max-tokens` packed tokens), so both take about as many optimizer steps.
DPO's reference pass runs when the trainer is built, outside the timing (dapo's reference log-probs come from
Stage B, as they are stored with the actions). Timing as in `benchmarks.common`: the fit / `train()` call.

Run: `python -m benchmarks.peer_actor [--problems 48 --actions 8 --repeats 3 ...]`   (needs trl: the bench extra)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import tempfile
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from benchmarks.actor_packing import action_rows
from benchmarks.common import (
    add_training_args,
    fit_one_epoch,
    hf_epoch_settings,
    interleaved,
    machine_line,
    median_spread,
    random_tiny_model,
    set_threads,
    table_header,
    table_row,
)
from dapo.core.steps import join_steps
from dapo.data_modules import StepDataModule
from dapo.data_modules.collate import ActorItem
from dapo.records import Provenance, write_records
from dapo.tasks import ArithTask
from dapo.training.actor import ActorModule

Row = dict[str, Any]
DAPO_PAIRS, DAPO_ALL, DPO = "dapo, the same pairs", "dapo, all actions", "TRL DPOTrainer"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--n-steps", type=int, default=6, help="operations per problem")
    parser.add_argument("--actions", type=int, default=8, help="candidate actions per state")
    parser.add_argument("--max-tokens", type=int, default=4096, help="dapo's micro-batch budget (packed tokens)")
    parser.add_argument("--beta", type=float, default=0.1)
    add_training_args(parser)
    return parser.parse_args(argv)


def pair_rows(rows: Sequence[Row]) -> list[Row]:
    """Each state's highest- and lowest-advantage actions (chosen first), as `actions` records."""
    by_state: dict[str, list[Row]] = {}
    for row in rows:
        by_state.setdefault(row["state_id"], []).append(row)
    pairs = []
    for group in by_state.values():
        ranked = sorted(group, key=lambda row: row["advantage"], reverse=True)
        pairs += [ranked[0], ranked[-1]]
    return pairs


def dpo_examples(pairs: Sequence[Row]) -> list[dict[str, str]]:
    """DPO's rows (prompt = the state's text, chosen / rejected = the actions) from `pair_rows`' records; TRL
    tokenizes them itself (and ends every completion with eos)."""
    return [
        {
            "prompt": chosen["prompt"] + join_steps(chosen["state_steps"]),
            "chosen": chosen["action"],
            "rejected": rejected["action"],
        }
        for chosen, rejected in zip(pairs[::2], pairs[1::2], strict=True)
    ]


def action_tokens(items: Sequence[ActorItem]) -> int:
    """Trained action tokens: each action's tokens from its start to the end of its row."""
    return sum(
        len(item["prefix"]) + len(suffix) - start
        for item in items
        for suffix, start in zip(item["suffixes"], item["starts"], strict=True)
    )


def dapo_epoch(policy: Path, dm: StepDataModule, lr: float, beta: float) -> None:
    fit_one_epoch(ActorModule(str(policy), beta=beta, optimizer=partial(torch.optim.AdamW, lr=lr)), dm)


def dpo_trainer(policy: Path, examples: list[dict[str, str]], batch: int, lr: float, beta: float) -> Any:
    """A DPOTrainer whose data is tokenized and reference log-probs computed (both at construction)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    out = tempfile.mkdtemp(prefix="dapo-peer-dpo-")
    config = DPOConfig(**hf_epoch_settings(out, batch, lr), beta=beta, precompute_ref_log_probs=True)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    dataset = Dataset.from_list(examples)
    return DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    os.environ["TQDM_DISABLE"] = "1"  # TRL's reference pass reads it
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    folder = Path(tempfile.mkdtemp(prefix="dapo-peer-actor-"))
    task = ArithTask(n_steps=args.n_steps, train_size=500, test_size=args.problems, seed=0)
    policy = random_tiny_model(task, folder / "tiny", args.hidden_size, args.num_layers, args.vocab_size)
    rows = action_rows(task, args.problems, args.actions, args.seed)
    provenance = Provenance(producer="benchmarks.peer_actor")
    modules = {}
    pairs = pair_rows(rows)
    for name, records in ((DAPO_ALL, rows), (DAPO_PAIRS, pairs)):
        path = write_records(records, folder / name.replace(" ", "_").replace(",", ""), "actions", provenance)
        dm = StepDataModule(mode="actor", train_path=str(path), tokenizer=str(policy), max_tokens=args.max_tokens)
        dm.load_items()
        modules[name] = dm
    states = len(modules[DAPO_PAIRS].train_items)
    batches = len(modules[DAPO_PAIRS].train_dataloader())
    dpo_batch = max(1, round(states / batches))
    examples = dpo_examples(pairs)
    tokens = {name: action_tokens(dm.train_items) for name, dm in modules.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        dpo_trainers = [dpo_trainer(policy, examples, dpo_batch, args.lr, args.beta) for _ in range(args.repeats + 1)]
    prepared = dpo_trainers[0].train_dataset
    tokens[DPO] = sum(len(c) + len(r) for c, r in zip(prepared["chosen_ids"], prepared["rejected_ids"], strict=True))
    runs = {
        DAPO_PAIRS: lambda: dapo_epoch(policy, modules[DAPO_PAIRS], args.lr, args.beta),
        DAPO_ALL: lambda: dapo_epoch(policy, modules[DAPO_ALL], args.lr, args.beta),
        DPO: lambda: dpo_trainers.pop().train(),  # a fresh trainer (and model) per epoch
    }
    with contextlib.redirect_stdout(io.StringIO()):
        seconds = interleaved(runs, args.repeats)
    print(machine_line())
    print(
        f"workload: {states} states ({args.problems} problems x {args.n_steps + 1} steps), {args.actions} actions "
        f"each; tiny Llama hidden {args.hidden_size} x {args.num_layers}; dapo budget {args.max_tokens} packed "
        f"tokens ({batches} batches an epoch), DPO batch {dpo_batch} pairs; median of {args.repeats}"
    )
    print("trained action tokens an epoch: " + ", ".join(f"{name} {n:,}" for name, n in tokens.items()))
    print(table_header())
    ms = {name: [1000 * s / states for s in values] for name, values in seconds.items()}
    ratio = statistics.median(ms[DPO]) / statistics.median(ms[DAPO_PAIRS])
    a, b = f"{DAPO_PAIRS}: {median_spread(ms[DAPO_PAIRS], 2)} ms", f"{DPO}: {median_spread(ms[DPO], 2)} ms"
    print(table_row("actor epoch: ms per state, same tokens", a, b, ratio))
    us = {name: [1e6 * s / tokens[name] for s in values] for name, values in seconds.items()}
    ratio = statistics.median(us[DPO]) / statistics.median(us[DAPO_ALL])
    a, b = f"{DAPO_ALL}: {median_spread(us[DAPO_ALL], 0)} us", f"{DPO}: {median_spread(us[DPO], 0)} us"
    print(table_row("actor epoch: microseconds per trained action token", a, b, ratio))


if __name__ == "__main__":
    main()

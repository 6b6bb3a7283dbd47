"""Critic training against the standard PRM recipe: dapo's CriticModule vs `AutoModelForTokenClassification` + HF
`Trainer`, one epoch each, on the same model, data, optimizer and CPU.

Why: a user who wants a step-value model without dapo takes the PRM recipe: a token-classification head with one
label, soft MC targets at the last token of every step (-100 elsewhere), BCE on those tokens, and HF's `Trainer`
with its default random sampler or `train_sampling_strategy="group_by_length"`. dapo trains the same model on the
same targets from `StepDataModule` batches (length-bucketed under a token budget), and with `pack_prompts` on
prompt trees: a problem's kept solutions in one row with their shared prompt once and a 4D attention mask
(`dapo.data_modules.collate.collate_critic_trees`).

Workload: `--problems` arith problems with `--min-steps`..`--max-steps` operations, `--solutions` kept solutions
each that part right after the prompt (the reference solution, and `--solutions` - 1 with another first step,
`benchmarks.actor_packing.step_variants`, then the reference's steps), a random MC value at every state. Model:
a random tiny Llama (`--hidden-size` x `--num-layers`, BPE on the task) saved as a critic folder
(`<Arch>ForTokenClassification`, one label), which both sides load. Same AdamW learning rate, fp32, no
validation, no checkpoints, no logging. HF's batch size is the mean number of trajectories in dapo's batches
(`--max-tokens`), so both take about as many optimizer steps. An epoch is timed from building the model to the
end of training (tokenization is done once beforehand, for both). Timing as in `benchmarks.common`.

Checks printed before the table: the HF token-classification model and dapo's ValueModel give the same logits at
every boundary, and prompt trees give the same values as one padded row per solution (max |difference|).

Run: `python -m benchmarks.peer_critic [--problems 96 --solutions 4 --repeats 3 ...]`
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import random
import statistics
import tempfile
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from benchmarks.actor_packing import step_variants
from benchmarks.common import (
    add_training_args,
    fit_one_epoch,
    hf_epoch_settings,
    interleaved,
    machine_line,
    median_spread,
    random_tiny_model,
    rates,
    set_threads,
    table_header,
    table_row,
)
from dapo.core.steps import split_steps
from dapo.data_modules import StepDataModule
from dapo.data_modules.collate import collate_critic, collate_critic_trees
from dapo.models.value import ValueModel
from dapo.records import Provenance, write_records
from dapo.tasks import ArithTask
from dapo.training.critic import CriticModule

Row = dict[str, Any]
DAPO, TREES, HF, HF_GROUPED = "dapo", "dapo, prompt trees", "HF Trainer", "HF Trainer, group_by_length"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--problems", type=int, default=96, help="problems, spread over the numbers of steps")
    parser.add_argument("--solutions", type=int, default=4, help="kept solutions per problem")
    parser.add_argument("--min-steps", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=4096, help="dapo's micro-batch budget (padded tokens)")
    add_training_args(parser)
    return parser.parse_args(argv)


# -- workload ----------------------------------------------------------------------------------------------------


def solution_rows(task: ArithTask, ex: Any, problem_id: str, solutions: int, rng: random.Random) -> list[Row]:
    """`states` records of `solutions` solutions of one problem, parting after the prompt, random MC values."""
    steps = split_steps(task.reference_solution(ex) or "")
    rows = []
    for j, first in enumerate(step_variants(steps[0], solutions, rng)):
        own = [first, *steps[1:]]
        for t in range(len(own) + 1):
            rows.append(
                {
                    "state_id": f"{problem_id}/s{j}/t{t}",
                    "problem_id": problem_id,
                    "solution_id": f"{problem_id}/s{j}",
                    "t": t,
                    "prompt": task.prompt(ex),
                    "steps": own,
                    "mc_value": rng.random(),
                    "n_rollouts": 8 * (t < len(own)),
                    "completions": [],
                    "completion_rewards": [],
                }
            )
    return rows


def workload(args: argparse.Namespace, folder: Path) -> tuple[Path, Path]:
    """The critic folder (random tiny Llama + fresh head, saved as a token classifier) and the states records."""
    ks = list(range(args.min_steps, args.max_steps + 1))
    per_k = -(-args.problems // len(ks))
    tasks = {k: ArithTask(n_steps=k, train_size=per_k, test_size=1, seed=0) for k in ks}
    rng = random.Random(args.seed)
    rows: list[Row] = []
    for i in range(args.problems):
        k = ks[i % len(ks)]
        ex = tasks[k].load("train")[i // len(ks)]
        rows += solution_rows(tasks[k], ex, f"k{k}/{ex['id']}", args.solutions, rng)
    base = random_tiny_model(tasks[ks[-1]], folder / "tiny", args.hidden_size, args.num_layers, args.vocab_size)
    torch.manual_seed(args.seed)
    critic = folder / "critic"
    ValueModel.from_pretrained(base, missing_head="init").save_pretrained(critic)
    AutoTokenizer.from_pretrained(base).save_pretrained(critic)
    states = write_records(rows, folder / "states", "states", Provenance(producer="benchmarks.peer_critic"))
    return critic, states


def token_rows(dm: StepDataModule) -> list[dict[str, list]]:
    """The PRM recipe's rows from dapo's own tokenization: input_ids, and labels = the MC value at each boundary
    with a target, -100 elsewhere."""
    rows = []
    for item in dm.train_items:
        labels = [-100.0] * len(item["input_ids"])
        for index, target, has in zip(item["boundaries"], item["targets"], item["target_mask"], strict=True):
            if has:
                labels[index] = target
        rows.append({"input_ids": item["input_ids"], "labels": labels})
    return rows


# -- the HF Trainer side -----------------------------------------------------------------------------------------


def collate_prm(rows: Sequence[dict[str, list]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and float labels (-100 on padding)."""
    width = max(len(row["input_ids"]) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (b, s)
    labels = torch.full((len(rows), width), -100.0)  # (b, s)
    mask = torch.zeros(len(rows), width, dtype=torch.long)  # (b, s)
    for r, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[r, :n], labels[r, :n], mask[r, :n] = torch.tensor(row["input_ids"]), torch.tensor(row["labels"]), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def prm_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """BCE with soft targets on the labelled tokens: the loss dapo's critic uses."""
    logits = outputs.logits[..., 0]  # (b, s)
    keep = labels >= 0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], labels[keep])


def hf_epoch(critic: Path, rows: list[dict[str, list]], pad_id: int, batch: int, lr: float, grouped: bool) -> None:
    model = AutoModelForTokenClassification.from_pretrained(critic, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        sampling = "group_by_length" if grouped else "random"
        settings = TrainingArguments(**hf_epoch_settings(out, batch, lr), train_sampling_strategy=sampling)
        collate = partial(collate_prm, pad_id=pad_id)
        trainer = Trainer(
            model=model, args=settings, train_dataset=rows, data_collator=collate, compute_loss_func=prm_loss
        )
        trainer.train()


# -- the dapo side -----------------------------------------------------------------------------------------------


def dapo_epoch(critic: Path, dm: StepDataModule, lr: float) -> None:
    fit_one_epoch(CriticModule(str(critic), optimizer=partial(torch.optim.AdamW, lr=lr)), dm)


# -- checks and report -------------------------------------------------------------------------------------------


def value_checks(critic: Path, plain: StepDataModule, trees: StepDataModule) -> tuple[float, float]:
    """Max |logit difference| at the boundaries: HF token classifier vs ValueModel; prompt trees vs padded rows."""
    module = CriticModule(str(critic))
    module.configure_model()
    assert module.model is not None
    module.model.eval()
    classifier = AutoModelForTokenClassification.from_pretrained(critic, dtype=torch.float32).eval()
    items = plain.train_items[:64]
    keys = {item["key"] for item in items}
    padded = collate_critic(items, plain.pad_id)
    chosen = [tree for tree in trees.train_items if any(t["key"] in keys for t in tree["trajectories"])]
    packed = collate_critic_trees(chosen, trees.pad_id)
    with torch.no_grad():
        ours = module.boundary_logits(padded)  # (b, n)
        hf = classifier(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits[..., 0]
        hf_at = torch.gather(hf, 1, padded["boundary_index"])  # (b, n)
        in_trees = module.boundary_logits(packed)  # (t, n)
    mask = padded["boundary_mask"]
    by_key = {t["key"]: b for b, t in enumerate(item for tree in chosen for item in tree["trajectories"])}
    tree_diff = max(
        (ours[b][mask[b]] - in_trees[by_key[item["key"]]][: int(mask[b].sum())]).abs().max().item()
        for b, item in enumerate(items)
    )
    return (ours - hf_at)[mask].abs().max().item(), tree_diff


def token_line(plain: StepDataModule, trees: StepDataModule, solutions: int) -> str:
    real = sum(len(item["input_ids"]) for item in plain.train_items)
    prompts = sum(len(tree["group"]["prefix"]) for tree in trees.train_items)
    packed = real - (solutions - 1) * prompts if solutions > 1 else real
    return (
        f"tokens: {real:,} in {len(plain.train_items)} trajectories (mean {real / len(plain.train_items):.0f}); "
        f"shared prompts {prompts / len(trees.train_items):.0f} tokens each; prompt trees hold {packed:,} "
        f"({packed / real:.0%})"
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    folder = Path(tempfile.mkdtemp(prefix="dapo-peer-critic-"))
    critic, states = workload(args, folder)
    plain = StepDataModule(mode="critic", train_path=str(states), tokenizer=str(critic), max_tokens=args.max_tokens)
    trees = StepDataModule(
        mode="critic", train_path=str(states), tokenizer=str(critic), max_tokens=args.max_tokens, pack_prompts=True
    )
    for dm in (plain, trees):
        dm.load_items()
    n = len(plain.train_items)
    batches = len(plain.train_dataloader())
    hf_batch = max(1, round(n / batches))
    rows = token_rows(plain)
    hf_diff, tree_diff = value_checks(critic, plain, trees)
    runs = {
        DAPO: lambda: dapo_epoch(critic, plain, args.lr),
        TREES: lambda: dapo_epoch(critic, trees, args.lr),
        HF: lambda: hf_epoch(critic, rows, plain.pad_id, hf_batch, args.lr, grouped=False),
        HF_GROUPED: lambda: hf_epoch(critic, rows, plain.pad_id, hf_batch, args.lr, grouped=True),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        seconds = interleaved(runs, args.repeats)
    speed = {name: rates([n] * len(s), s) for name, s in seconds.items()}
    print(machine_line())
    print(
        f"workload: {args.problems} problems x {args.solutions} solutions, {args.min_steps}-{args.max_steps} "
        f"operations; tiny Llama hidden {args.hidden_size} x {args.num_layers}; dapo budget {args.max_tokens} "
        f"tokens ({batches} batches an epoch), HF batch {hf_batch}; median of {args.repeats}"
    )
    print(token_line(plain, trees, args.solutions))
    print(f"checks: HF classifier vs ValueModel logits {hf_diff:.1e}; prompt trees vs padded rows {tree_diff:.1e}")
    print(table_header())
    pairs = [(DAPO, HF), (DAPO, HF_GROUPED), (TREES, HF_GROUPED), (TREES, DAPO)]
    for a, b in pairs:
        ratio = statistics.median(speed[a]) / statistics.median(speed[b])
        a_text, b_text = f"{a}: {median_spread(speed[a], 0)} traj/s", f"{b}: {median_spread(speed[b], 0)} traj/s"
        print(table_row("critic epoch: trajectories/s", a_text, b_text, ratio))


if __name__ == "__main__":
    main()

"""`dapo plan`'s memory estimate against the measured peak of a critic and an actor training step on CPU.

Why: the planner says whether a stage fits a device before anything runs (`dapo.pipeline.plan_memory`); this
checks its arithmetic on real training steps. Each case builds a random Llama (untied embeddings, 4 heads, MLP
4 x hidden) and a synthetic micro-batch of `rows` rows of `sequence` tokens: for the critic, unpadded
trajectories with a value target every 16 tokens; for the actor, packed rows of one state (half the row) and 4
candidate actions (an eighth each), so half the tokens are action tokens. One step is the module's own
`training_step` (CriticModule / ActorModule, fp32, sdpa), backward, AdamW step, zero_grad.

Measured: in a fresh child process per case (MALLOC_MMAP_THRESHOLD_ low, `benchmarks.common.child_env`), resident
memory before the model is built (its modelling code imported, on the meta device); one warm-up step (the
optimizer state exists from then on); then the peak resident memory of a second step (`/proc/self/clear_refs`,
VmHWM) minus that starting point. That is the planner's `peak`: weights + optimizer state + the step. Also
printed: the step's own rise above the resident model and optimizer state (activations and gradients, against
the planner's peak less weights and optimizer).

Run: `python -m benchmarks.memory_plan [--threads 2]`   (~6 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import child_env, machine_line, resident_kib
from dapo.core.packing import TokenGroup, pack_groups
from dapo.pipeline.plan import model_shape
from dapo.pipeline.plan_memory import Memory, TrainSetup, training_memory

MIB = 2**20
HEADS = 4


@dataclass(frozen=True)
class Case:
    """One training step to plan and measure."""

    kind: str  # "critic" or "actor"
    hidden: int
    layers: int
    vocab: int
    sequence: int
    rows: int
    checkpointing: bool

    @property
    def label(self) -> str:
        switch = ", checkpointing" if self.checkpointing else ""
        return f"{self.kind} d={self.hidden} L={self.layers} V={self.vocab} {self.rows}x{self.sequence}{switch}"


SIZES = ((128, 4, 2048, 512, 4), (256, 8, 4096, 512, 2), (384, 6, 8192, 1024, 1))
"""(hidden, layers, vocabulary, sequence, rows) of the measured cases."""
CASES = [
    Case(kind, hidden, layers, vocab, sequence, rows, checkpointing)
    for kind in ("critic", "actor")
    for hidden, layers, vocab, sequence, rows in (
        (128, 4, 2048, 512, 4),
        (256, 8, 4096, 512, 2),
        (384, 6, 8192, 1024, 1),
    )
    for checkpointing in (False, True)
]


def random_llama(root: Path, case: Case) -> Path:
    """A random Llama folder (config + weights, no tokenizer: the steps need none), built once per shape."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = root / f"llama-d{case.hidden}-l{case.layers}-v{case.vocab}"
    if not (out / "config.json").exists():
        config = LlamaConfig(
            vocab_size=case.vocab,
            hidden_size=case.hidden,
            intermediate_size=4 * case.hidden,
            num_hidden_layers=case.layers,
            num_attention_heads=HEADS,
            max_position_embeddings=max(case.sequence, 512),
            tie_word_embeddings=False,
        )
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(out)
    return out


def critic_batch(case: Case) -> dict[str, torch.Tensor]:
    """`rows` full trajectories of `sequence` tokens with a soft target at every 16th token."""
    gen = torch.Generator().manual_seed(0)
    boundaries = torch.arange(15, case.sequence, 16).repeat(case.rows, 1)  # (b, n)
    return {
        "input_ids": torch.randint(0, case.vocab, (case.rows, case.sequence), generator=gen),  # (b, s)
        "attention_mask": torch.ones(case.rows, case.sequence, dtype=torch.long),  # (b, s)
        "boundary_index": boundaries,
        "boundary_mask": torch.ones_like(boundaries, dtype=torch.bool),
        "targets": torch.rand(boundaries.shape, generator=gen),  # (b, n)
        "target_mask": torch.ones_like(boundaries, dtype=torch.bool),
    }


def actor_batch(case: Case) -> dict[str, Any]:
    """`rows` packed rows: a state of half the row, then 4 actions of an eighth each; advantages in [-0.5, 0.5]."""
    gen = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(0, case.vocab, (n,), generator=gen).tolist()

    prefix, action = case.sequence // 2, case.sequence // 8
    groups = [TokenGroup(prefix=ids(prefix), suffixes=[ids(action) for _ in range(4)], starts=[prefix] * 4)]
    batch: dict[str, Any] = pack_groups(groups * case.rows, pad_id=0)
    n_actions = batch["action_row"].shape[0]
    batch["advantages"] = torch.rand(n_actions, generator=gen) - 0.5  # (a,)
    batch["ref_logprobs"] = torch.full((n_actions,), -10.0)  # (a,)
    batch["weights"] = torch.ones(n_actions)  # (a,)
    return batch


def plan_case(case: Case, path: Path) -> Memory:
    """The planner's estimate for the case, the model's shape read from its config as `dapo plan` reads it."""
    actor = case.kind == "actor"
    tokens = case.rows * case.sequence
    setup = TrainSetup(tokens=tokens, sequence=case.sequence, logit_tokens=tokens / 2 if actor else 0.0,
                       lm_head=actor, checkpointing=case.checkpointing)  # fmt: skip
    return training_memory(model_shape(str(path)), setup)


def run_child(case: Case, path: Path) -> None:
    """The child's side: build the module, warm up one step, print the second step's peak (MiB) as JSON."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from dapo.training.actor import ActorModule
    from dapo.training.critic import CriticModule

    with torch.device("meta"):  # imports the modelling code (transformers loads it lazily), allocates nothing
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    start = resident_kib()
    module_class = CriticModule if case.kind == "critic" else ActorModule
    module: Any = module_class(str(path), gradient_checkpointing=case.checkpointing)
    module.configure_model()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    batch = critic_batch(case) if case.kind == "critic" else actor_batch(case)

    def step() -> None:
        module.training_step(batch, 0).backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    before = resident_kib()
    Path("/proc/self/clear_refs").write_text("5")
    step()
    peak = resident_kib("VmHWM")
    print(json.dumps({"total": (peak - start) / 1024, "step": (peak - before) / 1024}))


def measure(case: Case, path: Path, threads: int | None = None) -> dict[str, float]:
    """Peak MiB of a training step on the model at `path` in a fresh child: `total` above the bare process, `step`
    above the resident model and optimizer state."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.memory_plan",
        "--child",
        json.dumps(asdict(case)),
        "--model",
        str(path),
    ]
    command += ["--threads", str(threads)] if threads else []
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help="where the random models go (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        run_child(Case(**json.loads(args.child)), Path(args.model))
        return
    print(machine_line())
    print("| comparison | planned | measured | ratio |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        for case in CASES:
            path = random_llama(root, case)
            planned, measured = plan_case(case, path), measure(case, path, args.threads)
            print(f"| {case.label}: peak | {planned.peak / MIB:,.0f} MiB | {measured['total']:,.0f} MiB | "
                  f"{planned.peak / MIB / measured['total']:.2f} |")  # fmt: skip
            step = (planned.peak - planned.weights - planned.optimizer) / MIB
            print(f"| {case.label}: step above model + optimizer | {step:,.0f} MiB | {measured['step']:,.0f} MiB | "
                  f"{step / measured['step']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()

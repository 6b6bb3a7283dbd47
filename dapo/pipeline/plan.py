"""`dapo plan`: what a DAPO run will cost, before anything runs: tokens, FLOPs and device-hours per stage.

It reads the same configs as `dapo iterate` (so `dapo plan --config configs/iterate.yaml` plans that run): the
problem count, n_samples / n_keep / n_rollouts, epochs and validation shares come from the fit configs; the
model's size from the policy's config.json (built on the meta device, no weights read); prompt tokens, steps per
solution and tokens per step are measured on up to `assume.measure` problems (the task's reference solutions,
tokenized with the policy's tokenizer). Anything can be set by hand under `assume` and `model` instead, e.g. for
a model or dataset that is not on this machine. The arithmetic is in `dapo.pipeline.plan_costs`.

    dapo plan --config configs/iterate.yaml [--device.tflops 312]
    dapo plan --config configs/plan/math_paper.yaml      (the paper's MATH setting)
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from dapo.core.errors import MissingFile, check_model_folder, make_policy
from dapo.core.steps import DEFAULT_DELIMITER, split_steps
from dapo.pipeline.configs import Config, Overlay, check_problems_per_round, fit_overlay, load_config, round_problems
from dapo.pipeline.plan_costs import Device, ModelShape, StageCost, Workload, stage_costs
from dapo.pipeline.plan_memory import Memory, TrainSetup, inference_memory, training_memory, variants
from dapo.records import read_records
from dapo.stages.mc_rollouts import RolloutConfig
from dapo.tasks import ArithTask
from dapo.tasks.base import Task


@dataclass
class Assumptions:
    """Planning inputs that are not in the configs; None means measure it."""

    problems: int | None = None
    """Problems per round (None: the problems file's rows, or the task's train split, capped by `limit`)."""
    steps: float | None = None
    """Mean steps per solution (None: from the task's reference solutions)."""
    tokens_per_step: float | None = None
    """Mean tokens per step (None: from the task's reference solutions)."""
    prompt_tokens: float | None = None
    """Mean prompt tokens (None: measured on the problems)."""
    unique_actions: float = 1.0
    """Share of the candidate first steps of a state that are distinct (1.0: an upper bound)."""
    states_kept: float = 1.0
    """Share of states whose advantage gap passes `min_gap` (1.0: an upper bound)."""
    measure: int = 200
    """Problems measured for the means."""


def plan(
    policy_path: str | None = None,
    out_dir: str | None = None,
    iterations: int = 1,
    critic_config: str = "configs/critic.yaml",
    actor_config: str = "configs/actor.yaml",
    critic_init: str | None = None,
    trainer: Overlay | None = None,
    data: Overlay | None = None,
    stage_a: Overlay | None = None,
    advantages: Overlay | None = None,
    seed: int | None = None,
    problems_per_round: int | None = None,
    assume: Assumptions | None = None,
    model: ModelShape | None = None,
    device: Device | None = None,
) -> list[StageCost]:
    """Estimate tokens, FLOPs and device-hours of each stage of a DAPO run (per round, and in total).

    Args:
        policy_path: the starting policy (its size and tokenizer); default: the critic config's stage_a.policy_path.
        out_dir: as for `dapo iterate` (not used).
        iterations: rounds the totals cover.
        critic_config: the critic fit config (Stage A counts, critic epochs).
        actor_config: the actor fit config (actor epochs).
        critic_init: as for `dapo iterate` (not used).
        trainer: overlay merged into both fits' `trainer` section (as `dapo iterate` does).
        data: overlay merged into both fits' `data` section.
        stage_a: overlay merged into the critic fit's `stage_a` section.
        advantages: overlay merged into the actor fit's `advantages` section.
        seed: as for `dapo iterate` (not used).
        problems_per_round: as for `dapo iterate`: a round's problems (every round is costed as the first).
        assume: problem count and means to use instead of measuring them.
        model: the model's size, instead of reading the policy's config.json.
        device: accelerator peak and utilisations, for device-hours.
    """
    del out_dir, critic_init, seed  # accepted so that an iterate config plans as it is
    overlay = fit_overlay(trainer, data, stage_a, advantages, None)
    critic, actor = load_config(critic_config, [overlay]), load_config(actor_config, [overlay])
    check_problems_per_round(critic, iterations, problems_per_round)
    critic = round_problems(critic, 1, problems_per_round)
    policy = policy_path or (critic.get("stage_a") or {}).get("policy_path")
    workload = workload_from(critic, actor, policy, assume or Assumptions())
    shape = model or model_shape(_require(policy, "model.params, model.layers and model.hidden"))
    costs = stage_costs(workload, shape)
    device = device or Device()
    print(format_plan(costs, workload, shape, device, iterations))
    print(format_memory(stage_memory(critic, actor, workload, shape), device.memory_gb))
    return costs


def _require(policy: str | None, what: str) -> str:
    """The policy folder to measure `what` from; missing, the error names both ways out."""
    if not policy:
        raise MissingFile(f"no policy folder to measure from: give {what} (see --help) or policy_path")
    check_model_folder(policy, "policy_path", lambda path: f"{make_policy(path)}; or give {what} (see --help)")
    return policy


def workload_from(critic: Config, actor: Config, policy: str | None, assume: Assumptions) -> Workload:
    """The round's counts from the fit configs, with means measured on the problems unless assumed."""
    rollout = RolloutConfig(**((critic.get("stage_a") or {}).get("rollout") or {}))
    given = {"problems": assume.problems, "steps": assume.steps}
    given |= {"tokens_per_step": assume.tokens_per_step, "prompt_tokens": assume.prompt_tokens}
    found: dict[str, float] = {}
    if any(value is None for value in given.values()):
        needed = "assume.problems, assume.steps, assume.tokens_per_step and assume.prompt_tokens"
        examples = _problem_texts(critic, rollout)
        found = measure_means(examples, _require(policy, needed), rollout.delimiter, assume.measure)
    measured = {k: found[k] if v is None else float(v) for k, v in given.items()}
    return Workload(
        problems=int(measured["problems"]),
        n_samples=rollout.n_samples,
        n_keep=rollout.n_keep,
        n_rollouts=rollout.n_rollouts,
        steps=float(measured["steps"]),
        tokens_per_step=float(measured["tokens_per_step"]),
        prompt_tokens=float(measured["prompt_tokens"]),
        critic_epochs=_epochs(critic),
        actor_epochs=_epochs(actor),
        critic_val_fraction=float((critic.get("data") or {}).get("val_fraction", 0.0)),
        actor_val_fraction=float((actor.get("data") or {}).get("val_fraction", 0.0)),
        unique_actions=assume.unique_actions,
        states_kept=assume.states_kept,
        critic_prompt_trees=bool((critic.get("data") or {}).get("pack_prompts", False)),
        reuse_rollouts=rollout.reuse_rollouts,
    )


def _epochs(config: Config) -> int:
    epochs = (config.get("trainer") or {}).get("max_epochs")
    return 1 if epochs is None else int(epochs)


def _problem_texts(critic: Config, rollout: Any) -> list[tuple[str, str | None]]:
    """(prompt, reference solution or None) of every problem of the round, in order: the problems file's prompts
    when it exists (as Stage A will read them), else the task's train split (as Stage A will write it)."""
    task = _task(critic)
    problems = Path(rollout.problems_path) if rollout.problems_path else None
    if problems is not None and problems.exists():
        rows = read_records(problems, "problems")
        pairs = [(row["prompt"], task.reference_solution(json.loads(row["example"]))) for row in rows]
    else:
        pairs = [(task.prompt(ex), task.reference_solution(ex)) for ex in task.load("train")]
    return pairs[rollout.skip : None if rollout.limit is None else rollout.skip + rollout.limit]


def _task(critic: Config) -> Any:
    """The critic config's stage_a.task, instantiated (default ArithTask())."""
    spec = (critic.get("stage_a") or {}).get("task")
    if spec is None:
        return ArithTask()
    parser = ArgumentParser()
    parser.add_argument("--task", type=Task)
    return parser.instantiate_classes(parser.parse_object({"task": spec})).task


def measure_means(
    problems: list[tuple[str, str | None]], policy: str, delimiter: str = DEFAULT_DELIMITER, limit: int = 200
) -> dict[str, float]:
    """Problem count, and mean prompt tokens, steps and tokens per step over the first `limit` problems
    (solution tokens counted as tokenized after their prompt, as the rollouts see them)."""
    if not problems:
        raise ValueError("no problems to measure")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    sample = problems[:limit]
    solved = [(prompt, solution) for prompt, solution in sample if solution]
    if not solved:
        raise ValueError("the task has no reference solutions: give assume.steps and assume.tokens_per_step")
    prompt_lengths = [len(tokenizer(prompt)["input_ids"]) for prompt, _ in sample]
    total_lengths = [len(tokenizer(prompt + solution)["input_ids"]) for prompt, solution in solved]
    own = [len(tokenizer(prompt)["input_ids"]) for prompt, _ in solved]
    steps = [len(split_steps(solution, delimiter)) for _, solution in solved]
    solution_tokens = sum(total_lengths) - sum(own)
    return {
        "problems": len(problems),
        "prompt_tokens": statistics.mean(prompt_lengths),
        "steps": statistics.mean(steps),
        "tokens_per_step": solution_tokens / sum(steps),
    }


def model_shape(path: str) -> ModelShape:
    """Parameters in matrix products (all but an untied input embedding), blocks, width, vocabulary, heads and MLP
    width, from config.json on the meta device (nothing is allocated)."""
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    text = config.get_text_config()
    tied = bool(getattr(text, "tie_word_embeddings", False))
    heads = text.num_attention_heads
    return ModelShape(
        params=float(total if tied else total - embedding),
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        vocab=text.vocab_size,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        intermediate=getattr(text, "intermediate_size", None) or 0,
        embedding=0.0 if tied else float(embedding),
    )


def _si(x: float) -> str:
    """1234567 -> "1.23M"."""
    for unit, size in (("Z", 1e21), ("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def format_plan(costs: list[StageCost], w: Workload, model: ModelShape, device: Device, iterations: int) -> str:
    """The workload, the model and device assumptions, and a markdown table per stage with the round's total."""
    lines = [
        f"workload per round: {w.problems:,} problems, {w.n_samples} samples, {w.n_keep} kept, {w.n_rollouts} rollouts "
        f"per state; {w.steps:.1f} steps of {w.tokens_per_step:.1f} tokens after a {w.prompt_tokens:.0f}-token prompt; "
        f"critic {w.critic_epochs} epoch(s), actor {w.actor_epochs}; distinct candidates {w.unique_actions:.0%}, "
        f"states kept {w.states_kept:.0%}",
        f"model: {_si(model.params)} parameters in matrix products, {model.layers} layers x {model.hidden}",
        f"device: {device.tflops:g} peak TFLOP/s at utilisation {device.generate_utilization:.0%} generating, "
        f"{device.score_utilization:.0%} scoring, {device.train_utilization:.0%} training",
        "",
        "| stage | tokens processed | tokens generated | FLOPs | device-hours |",
        "|---|---|---|---|---|",
    ]
    for cost in costs:
        row = f"| {cost.stage} | {_si(cost.processed)} | {_si(cost.generated)} | {_si(cost.flops)} |"
        lines.append(f"{row} {device.hours(cost):.3g} |")
    total = replace(costs[0], stage="round total", processed=sum(c.processed for c in costs),
                    generated=sum(c.generated for c in costs), flops=sum(c.flops for c in costs))  # fmt: skip
    hours = sum(device.hours(c) for c in costs)
    lines.append(f"| **round total** | {_si(total.processed)} | {_si(total.generated)} | {_si(total.flops)} | "
                 f"{hours:.3g} |")  # fmt: skip
    if iterations > 1:
        lines.append(f"| **{iterations} rounds** | | | {_si(total.flops * iterations)} | {hours * iterations:.3g} |")
    if w.critic_prompt_trees:
        lines.append("critic: prompt trees (data.pack_prompts), each problem's prompt counted once")
    if w.reuse_rollouts:
        lines.append("MC rollouts: reuse_rollouts is on, so their generated tokens and hours are upper bounds")
    return "\n".join(lines)


def train_setup(config: Config, tokens: float, sequence: float, action_share: float, lm_head: bool) -> TrainSetup:
    """A fit config's memory switches (model.init_args), micro-batch (data.max_tokens, rows of `sequence` tokens
    capped by data.max_length) and precision (trainer.precision)."""
    args = (config.get("model") or {}).get("init_args") or {}
    data, precision = config.get("data") or {}, str((config.get("trainer") or {}).get("precision", "32"))
    optimizer = str((args.get("optimizer") or {}).get("class_path", "torch.optim.AdamW"))
    tokens = float(data.get("max_tokens", tokens))
    return TrainSetup(
        tokens=tokens,
        sequence=min(sequence, float(data.get("max_length", sequence))),
        logit_tokens=tokens * action_share,
        lm_head=lm_head,
        lora_r=(args.get("lora") or {}).get("r", 16) if args.get("lora") is not None else None,
        load_in=args.get("load_in"),
        checkpointing=bool(args.get("gradient_checkpointing", False)),
        optimizer="adamw8bit" if optimizer.endswith("8bit") else "adamw",
        eager_attention=args.get("attn_implementation") == "eager",
        activation_bytes=2.0 if "16" in precision else 4.0,
        shards=fsdp_shards(config.get("trainer") or {}),
    )


def fsdp_shards(trainer: Config) -> int:
    """The FSDP2 data-parallel degree of a fit config (configs/fsdp.yaml's ModelParallelStrategy), else 1."""
    strategy = trainer.get("strategy")
    if not isinstance(strategy, dict) or not str(strategy.get("class_path", "")).endswith("ModelParallelStrategy"):
        return 1
    return int((strategy.get("init_args") or {}).get("data_parallel_size") or 1)


def stage_memory(critic: Config, actor: Config, w: Workload, model: ModelShape) -> dict[str, Memory]:
    """Memory per stage and setup: generation holds a KV cache of a generate call's rows (stage_a.batch_size);
    scoring one packed batch of the reference policy (advantages.max_tokens, the larger of its two models); the
    critic and the actor their configured setup and the switches one would try next (`plan_memory.variants`)."""
    stage_a, advantages = critic.get("stage_a") or {}, actor.get("advantages") or {}
    rows, solution = float(stage_a.get("batch_size", 64)), w.prompt_tokens + w.steps * w.tokens_per_step
    group = w.prompt_tokens + w.steps * w.tokens_per_step / 2 + w.n_rollouts * w.unique_actions * w.tokens_per_step
    action_share = w.n_rollouts * w.unique_actions * w.tokens_per_step / group
    score_tokens = float(advantages.get("max_tokens", 8192))
    out = {
        "generation (sampling, MC rollouts)": inference_memory(
            model, stage_a.get("load_in"), rows * solution, rows * w.prompt_tokens, rows
        ),
        "scoring": inference_memory(model, advantages.get("load_in"), 0.0, score_tokens, score_tokens),
    }
    for stage, config, sequence, share, lm_head in (
        ("critic", critic, solution, 0.0, False),
        ("actor", actor, group, action_share, True),
    ):
        setup = train_setup(config, 8192.0, sequence, share, lm_head)
        out |= {f"{stage}: {name}": training_memory(model, s) for name, s in variants(setup).items()}
    return out


def format_memory(memory: dict[str, Memory], device_gb: float) -> str:
    """A markdown table: each stage's weights, gradients, optimizer state, activations, peak, and whether it fits."""
    lines = [
        "",
        f"memory per micro-batch (GB; fits: peak <= {device_gb:g} GB, --device.memory_gb):",
        "| stage | weights | gradients | optimizer | activations | peak | fits |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, m in memory.items():
        parts = " | ".join(f"{x / 1e9:.3g}" for x in (m.weights, m.gradients, m.optimizer, m.activations, m.peak))
        lines.append(f"| {stage} | {parts} | {'yes' if m.fits(device_gb * 1e9) else 'no'} |")
    return "\n".join(lines)

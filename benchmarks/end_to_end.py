"""End to end: time per stage of one demo iteration, and `dapo plan`'s token estimates against what it really took.

Runs one round of `dapo iterate` with the demo's configs (configs/demo/critic.yaml and actor.yaml: 16 samples,
4 kept, 8 rollouts, critic 8 epochs, actor 3) on the first `--problems` arith problems, from the demo's start
policy (trained once with `--sft-steps` fine-tuning steps into runs/bench). Then:
  - time per stage: Stage A (sampling + MC rollouts), critic fit (+ export), Stage B scoring, actor fit (+ export),
    from the stage summaries and iteration.json;
  - tokens per stage, measured (generated tokens counted by the generator; scoring and training tokens from the
    packed sequences) against `dapo plan` on the same configs, twice: with the means `dapo plan` measures by
    itself on the task's reference solutions (what a user sees before running), and with the run's own means
    (steps and tokens per step of the kept solutions, share of distinct candidates and of kept states), which
    checks the planner's arithmetic. The target is agreement within 20%.

`--reuse-rollouts` and `--pack-prompts` run the round with Stage A's rollout reuse and the critic's prompt trees
(configs/reuse_rollouts.yaml, configs/pack_prompts.yaml), for a before / after comparison of the same round.

Run: `python -m benchmarks.end_to_end [--problems 128 --sft-steps 300 --reuse-rollouts --pack-prompts]`
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE_DIR, machine_line
from dapo.pipeline.plan_costs import StageCost

CRITIC, ACTOR = "configs/demo/critic.yaml", "configs/demo/actor.yaml"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--problems", type=int, default=128, help="arith problems in the round")
    parser.add_argument("--sft-steps", type=int, default=300, help="fine-tuning steps of the start policy")
    parser.add_argument("--reuse-rollouts", action="store_true", help="Stage A reuses rollouts (stage_a.rollout)")
    parser.add_argument("--pack-prompts", action="store_true", help="the critic trains on prompt trees (data)")
    return parser.parse_args(argv)


def start_policy(sft_steps: int) -> Path:
    """The demo's start policy (`dapo.pipeline.demo.train_start_policy`) with `sft_steps` steps, built once."""
    from dapo.pipeline.demo import StartPolicy, train_start_policy
    from dapo.tasks import ArithTask

    out = CACHE_DIR / f"demo-start-sft{sft_steps}"
    if not (out / "config.json").exists():
        with tempfile.TemporaryDirectory() as tb:
            train_start_policy(ArithTask(), StartPolicy(sft_steps=sft_steps), out, seed=0, tb_dir=Path(tb))
    return out


def overlay(problems: int, root: Path, reuse: bool = False) -> dict[str, Any]:
    """The Stage A overlay of the round: its own problems file, `problems` of them, rollout reuse on or off."""
    return {"rollout": {"limit": problems, "problems_path": str(root / "problems"), "reuse_rollouts": reuse}}


def critic_config(root: Path, pack_prompts: bool) -> str:
    """The demo's critic config, with `data.pack_prompts` set (written under `root`: iterate's `data` overlay
    reaches the actor too, which has no prompt trees)."""
    import yaml

    from dapo.pipeline.configs import load_config

    config = load_config(CRITIC, [{"data": {"pack_prompts": pack_prompts}}])
    path = root / "critic.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def stage_seconds(round_dir: Path) -> dict[str, float]:
    """Seconds of Stage A, critic fit, Stage B scoring and actor fit (a fit's time without its data stage)."""
    fits = json.loads((round_dir / "iteration.json").read_text())["seconds"]
    stage_a = json.loads((round_dir / "stage_a" / "summary.json").read_text())["seconds"]
    stage_b = json.loads((round_dir / "stage_b" / "summary.json").read_text())["seconds"]
    return {
        "Stage A: sampling + MC rollouts": stage_a,
        "critic fit + export": fits["critic_fit"] - stage_a,
        "Stage B: scoring": stage_b,
        "actor fit + export": fits["actor_fit"] - stage_b,
    }


def measured_tokens(round_dir: Path, policy: Path) -> dict[str, int]:
    """Tokens each stage really processed: generated (sampling, rollouts) or packed sequences (the rest)."""
    from dapo.data_modules import StepDataModule
    from dapo.pipeline.baseline import actor_train_tokens
    from dapo.pipeline.configs import load_config

    stage_a = json.loads((round_dir / "stage_a" / "summary.json").read_text())
    stage_b = json.loads((round_dir / "stage_b" / "summary.json").read_text())
    critic_data, actor_data = (load_config(path, [])["data"] for path in (CRITIC, ACTOR))
    critic = StepDataModule(
        **{**critic_data, "train_path": str(round_dir / "stage_a" / "states"), "tokenizer": str(policy)}
    )
    critic.load_items()
    actor = StepDataModule(
        **{**actor_data, "train_path": str(round_dir / "stage_b" / "actions"), "tokenizer": str(policy)}
    )
    epochs = {path: int(load_config(path, [])["trainer"]["max_epochs"]) for path in (CRITIC, ACTOR)}
    return {
        "sampling": stage_a["tokens_sampling"],
        "MC rollouts": stage_a["tokens_generated"] - stage_a["tokens_sampling"],
        "critic": epochs[CRITIC] * sum(len(item["input_ids"]) for item in critic.train_items),
        "scoring": stage_b["tokens_critic"] + stage_b["tokens_reference"],
        "actor": actor_train_tokens(actor, epochs[ACTOR]),
    }


def run_means(round_dir: Path, policy: Path) -> dict[str, float]:
    """The round's own means: prompt tokens, steps and tokens per step of the kept solutions, and the shares of
    candidates the critic scored (distinct, non-terminal) and of states kept."""
    from dapo.core.steps import join_steps
    from dapo.pipeline.plan import measure_means
    from dapo.records import read_records

    solutions = read_records(round_dir / "stage_a" / "solutions", "solutions")
    pairs = [(row["prompt"], join_steps(row["steps"])) for row in solutions]
    means = measure_means(pairs, str(policy), limit=len(pairs))
    del means["problems"]  # that is the count of solutions here
    stage_b = json.loads((round_dir / "stage_b" / "summary.json").read_text())
    means["unique_actions"] = stage_b["critic_scored"] / stage_b["candidates"]
    means["states_kept"] = stage_b["states_kept"] / stage_b["states"]
    return means


def planned(policy: Path, stage_a: dict[str, Any], assume: Any) -> dict[str, float]:
    """`dapo plan` on the demo configs: generated tokens of the generation stages, processed of the others."""
    from dapo.pipeline.plan import plan

    costs: list[StageCost] = plan(
        policy_path=str(policy), critic_config=CRITIC, actor_config=ACTOR, stage_a=stage_a, assume=assume
    )
    return {c.stage: c.generated if c.kind == "generate" else c.processed for c in costs}


def print_tables(seconds: dict[str, float], measured: dict[str, int], plans: dict[str, dict[str, float]]) -> None:
    print("| stage | seconds |\n|---|---|")
    for stage, value in seconds.items():
        print(f"| {stage} | {value:.1f} |")
    print(f"| **round** | {sum(seconds.values()):.1f} |\n")
    names = list(plans)
    print("| stage | tokens measured | " + " | ".join(f"planned, {n} | ratio" for n in names) + " |")
    print("|---|---|" + "---|---|" * len(names))
    for stage, value in measured.items():
        cells = " | ".join(f"{plans[n][stage]:,.0f} | {plans[n][stage] / value:.2f}" for n in names)
        print(f"| {stage} | {value:,} | {cells} |")


def main(argv: Sequence[str] | None = None) -> None:
    from dapo.pipeline.iterate import iterate
    from dapo.pipeline.plan import Assumptions

    args = parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    print(machine_line())
    policy = start_policy(args.sft_steps)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stage_a = overlay(args.problems, root, args.reuse_rollouts)
        critic = critic_config(root, args.pack_prompts)
        iterate(str(policy), str(root / "iterate"), 1, critic, ACTOR, stage_a=stage_a, seed=0)
        round_dir = root / "iterate" / "iter-01"
        seconds, measured = stage_seconds(round_dir), measured_tokens(round_dir, policy)
        means = run_means(round_dir, policy)
        plans = {"reference means": planned(policy, stage_a, Assumptions())}
        plans["run's means"] = planned(policy, stage_a, Assumptions(**means))
    switches = f"reuse_rollouts {args.reuse_rollouts}, pack_prompts {args.pack_prompts}"
    print(f"\nworkload: one demo round on {args.problems} arith problems, start policy with {args.sft_steps} SFT steps")
    print(f"switches: {switches}")
    print("run's means: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()))
    print_tables(seconds, measured, plans)


if __name__ == "__main__":
    main()

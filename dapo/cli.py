"""The `dapo` command: one entry point for every stage.

    dapo fit --config configs/critic.yaml      train a CriticModule or ActorModule (LightningCLI)
    dapo validate --config ...                 validate one (LightningCLI)
    dapo rollout --config configs/rollout.yaml Stage A: solutions, MC rollouts, state values
    dapo advantages --config configs/advantages.yaml
                                               Stage B: candidate advantages and reference log-probs
    dapo problems --out DIR ...                write a `problems` dataset from a task (--chat_template_from MODEL:
                                               prompts in that tokenizer's chat template)
    dapo iterate --config configs/iterate.yaml N rounds of Stage A, critic, advantages, actor (resumable)
    dapo plan --config configs/iterate.yaml    tokens, FLOPs and device-hours per stage, before running
    dapo demo --out runs/demo                  the embedded demo: start policy, DAPO, RFT baseline, report
    dapo evaluate --model DIR --task NAME      a policy on a benchmark: summary.json + examples.jsonl
    dapo tiny-model --out DIR ...              build a tiny random Llama + BPE tokenizer for a task
    dapo export --ckpt CKPT --out DIR          write a trained critic or actor as a Hugging Face folder
    dapo import-gguf --out DIR                 SmolLM2-135M-Instruct (or any --gguf FILE) as a Hugging Face folder

Each command other than the LightningCLI ones is a typed function parsed by jsonargparse, so every one takes
`--config FILE` and `--help`. Tests call `cli_main([...])` directly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from dapo.benchmark import evaluate
from dapo.commands import advantages, make_problems, make_tiny_model, rollout
from dapo.demo import demo
from dapo.export import export_checkpoint
from dapo.gguf import import_gguf
from dapo.iterate import iterate
from dapo.plan import plan

LIGHTNING_COMMANDS = {"fit": "train a model (LightningCLI)", "validate": "validate a model (LightningCLI)"}
COMMANDS: dict[str, Callable[..., Any]] = {
    "rollout": rollout,
    "advantages": advantages,
    "iterate": iterate,
    "plan": plan,
    "demo": demo,
    "evaluate": evaluate,
    "problems": make_problems,
    "tiny-model": make_tiny_model,
    "export": export_checkpoint,
    "import-gguf": import_gguf,
}


def _usage() -> str:
    lines = ["usage: dapo COMMAND [--config FILE] [options]   (dapo COMMAND --help for options)", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, text in LIGHTNING_COMMANDS.items()]
    for name, fn in COMMANDS.items():
        lines.append(f"  {name:<12} {(fn.__doc__ or '').strip().splitlines()[0]}")
    return "\n".join(lines)


def lightning_main(args: Sequence[str] | None) -> None:
    """LightningCLI over any LightningModule (class_path in the config) and StepDataModule."""
    from dapo.lightning_cli import DapoLightningCLI

    DapoLightningCLI(args=None if args is None else list(args))  # None: LightningCLI reads sys.argv itself


def _show_progress_messages() -> None:
    """dapo's own info messages (stage skipped, stale data moved aside, ...) go to stderr."""
    logger = logging.getLogger("dapo")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[dapo] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def cli_main(args: Sequence[str] | None = None) -> None:
    given = args
    _show_progress_messages()
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = args[0], args[1:]
    if command in LIGHTNING_COMMANDS:
        lightning_main(given)
    elif command in COMMANDS:
        from jsonargparse import auto_cli

        auto_cli(COMMANDS[command], args=rest, as_positional=False)
    else:
        sys.exit(f"dapo: unknown command {command!r}\n\n{_usage()}")


if __name__ == "__main__":
    cli_main()

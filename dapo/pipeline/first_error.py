"""`dapo first-error`: a critic as a first-error detector, scored with ProcessBench's F1 on labelled solutions.

    dapo first-error --critic runs/critic/hf                          # champ's 540 annotated solutions
    dapo first-error --critic runs/critic/hf --data processbench_math.jsonl --threshold 0.4 --limit 200

Calibration says whether V(s) matches P(correct | s) on average; this asks whether the critic finds the step
where a solution goes wrong. Each solution's states are scored once (`StepScorer.values`: V(s_0..s_T)), the
predicted first error is the first step t with V(s_{t+1}) < threshold (-1 if none), and the scores are ProcessBench's:
accuracy on flawed solutions (exact step), on correct ones, and their harmonic mean F1 (`dapo.core.first_error`).
`data` is "champ" (the annotations the `champ-dataset` package ships, `dapo.tasks.champ`) or a local file of
ProcessBench rows (`dapo.tasks.processbench`). The output folder gets summary.json and items.jsonl (each
solution's id, label, prediction and values), written next to their final place and renamed in one step.

Left out on purpose:
  1. The prompt is the `math` task's plain prompt around the problem (`MathTask.prompt`), the format a critic
     trained on math problems saw; no chat template.
  2. The best threshold over a grid is chosen on the same solutions it is scored on, so its F1 is optimistic
     and reported beside, never instead of, the F1 at the given threshold.
  3. The critic runs where `StepScorer.from_pretrained` puts it (CPU); solutions longer than its context are
     not cut.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dapo.core.errors import check_model_folder, make_critic
from dapo.core.first_error import FirstErrorScore, best_threshold, first_error_from_values, score_at
from dapo.models.value import StepScorer
from dapo.records import staged_dir, write_json
from dapo.tasks.champ import champ_solutions
from dapo.tasks.math import MathTask
from dapo.tasks.processbench import LabelledSolution, read_labelled_solutions

CHAMP = "champ"


def first_error(
    critic: str,
    data: str = CHAMP,
    threshold: float = 0.5,
    limit: int | None = None,
    out: str | None = None,
    batch_size: int = 16,
) -> Path:
    """Score a critic as a first-error detector (ProcessBench's F1); write summary.json and items.jsonl.

    Args:
        critic: Hugging Face folder of a critic (`dapo export` of a CriticModule checkpoint).
        data: "champ" (first-wrong-step annotations of the champ-dataset package) or a local .jsonl / .json /
            .parquet file of ProcessBench rows: problem, steps (list of texts), label (first wrong step, -1: none).
        threshold: a step is the predicted first error when the value after it falls below this.
        limit: score only the first `limit` solutions.
        out: output folder (default: runs/first-error/<data name>).
        batch_size: solutions per critic forward pass.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1): values are probabilities (got {threshold})")
    check_model_folder(critic, "critic", made_by=make_critic)
    started = time.perf_counter()
    items, skipped = _load(data, limit)
    if not items:
        raise ValueError(f"no labelled solutions to score in {data!r}")
    values = _score(StepScorer.from_pretrained(critic, batch_size), items, batch_size)
    labels = [item.label for item in items]
    summary = summarize(values, labels, threshold) | {"critic": critic, "data": data, "limit": limit}
    summary |= {"skipped": skipped, "seconds": time.perf_counter() - started}
    path = Path(out or f"runs/first-error/{Path(data).name.split('.')[0]}")
    _write(path, summary, items, values, threshold)
    print(json.dumps({key: summary[key] for key in ("solutions", "f1", "error_accuracy", "correct_accuracy")}))
    print(f"wrote {path / 'summary.json'} and {path / 'items.jsonl'}")
    return path


def summarize(values: Sequence[Sequence[float]], labels: Sequence[int], threshold: float) -> dict[str, Any]:
    """The summary's scores: at `threshold`, and at the best threshold of the grid (chosen on these solutions)."""
    best = best_threshold(values, labels)
    return {
        "solutions": len(labels),
        "threshold": threshold,
        **_scores(score_at(values, labels, threshold)),
        "best_threshold_on_same_data": {"threshold": best.threshold, **_scores(best.score), "optimistic": True},
    }


def _scores(score: FirstErrorScore) -> dict[str, Any]:
    """A score as JSON: NaN (a group with no solutions) becomes null, which JSON can hold."""
    return {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in score._asdict().items()}


def _load(data: str, limit: int | None) -> tuple[list[LabelledSolution], dict[str, int]]:
    """The labelled solutions of `data` and the skip counts by reason (champ's; a file's bad rows raise)."""
    if data == CHAMP:
        return champ_solutions(limit)
    return read_labelled_solutions(data)[:limit], {}


def _score(scorer: StepScorer, items: Sequence[LabelledSolution], batch_size: int) -> list[list[float]]:
    """V(s_0..s_T) of every solution, in the order given. Solutions go to the critic shortest first, so each batch
    pads to a similar length; the bar counts solutions."""
    prompt = MathTask().prompt
    order = sorted(range(len(items)), key=lambda i: sum(map(len, items[i].steps)))
    values: list[list[float]] = [[] for _ in items]
    with tqdm(total=len(items), desc="first-error", unit="solution") as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            pairs = [(prompt({"problem": items[i].problem}), items[i].steps) for i in chunk]
            for i, row in zip(chunk, scorer.values(pairs), strict=True):
                values[i] = row
            bar.update(len(chunk))
    return values


def _write(
    path: Path, summary: dict[str, Any], items: Sequence[LabelledSolution], values: Sequence[Sequence[float]], t: float
) -> None:
    """summary.json and items.jsonl into a staged sibling that replaces `path` whole: never one without the other."""
    with staged_dir(path) as staging:
        staging.mkdir()
        with open(staging / "items.jsonl", "w") as f:
            for item, row in zip(items, values, strict=True):
                prediction = first_error_from_values(row, t)  # values: V(s_0..s_T), len(steps) + 1 of them
                f.write(json.dumps({"id": item.id, "label": item.label, "prediction": prediction, "values": row}))
                f.write("\n")
        write_json(staging / "summary.json", summary)

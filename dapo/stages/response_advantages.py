"""The response-level baseline's data, in DAPO's own loss family: whole responses as the actions of the prompt.

An outcome-only learner on the same Stage A samples, so the demo can ask whether step-level credit teaches more
than the outcome alone with everything else equal (the loss, beta, the reference log-probs, the tuning grid, the
training tokens). For each problem the group is every response Stage A sampled from its prompt: the `solutions`
(n_samples of them) and the rollouts of the solutions' first state (t = 0, the prompt itself). Then

    A(prompt, y_i) = r(y_i) - mean_j r(y_j)      (GRPO's group baseline, offline; mean over the whole group)

with r the task's reward. As in Stage B, only unique responses are kept (with the advantage of their text) and a
problem whose gap max A - min A is under `min_gap` is dropped: all its responses right, or all wrong, teach
nothing. Each kept response is one terminal action (eos appended) of the state "prompt" with log pi_ref(y | x).
The records are ordinary `actions`, so `ActorModule` trains on them unchanged.

Left out on purpose:
1. Prefix completions of later states (t > 0): they are not samples of the policy from the prompt, and the group
   mean would be biased toward whichever solutions were kept.
2. Length normalisation and clipping (GRPO's online ratio clipping has no role offline with a squared loss).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from dapo.core.fingerprint import policy_fingerprint
from dapo.core.steps import join_steps
from dapo.records import Provenance, read_provenance, read_records, write_json, write_records
from dapo.stages.action_selection import ActionWeighting, Candidate, ScoredAction, select_actions
from dapo.stages.candidate_advantages import reference_logprobs, scoring_device

PRODUCER = "dapo response advantages"


@dataclass
class ResponseAdvantageConfig:
    """Response-level actions from a Stage A run: which samples, which reference policy, which problems to keep."""

    stage_a_dir: str
    """Stage A output folder (its `solutions` and `states`)."""
    policy_path: str
    """Reference policy: the one that sampled the responses and that the actor starts from."""
    out_dir: str
    """Output folder: `actions/` records and `summary.json`."""
    min_gap: float = 0.1
    """Drop problems whose advantage gap max A - min A is below this (as Stage B drops states)."""
    max_tokens: int = 8192
    """Packed tokens per forward pass for the reference log-probs."""
    device: str | None = None
    """Where the reference policy scores; None: the first GPU if there is one, else CPU."""
    action_weight: ActionWeighting = "uniform"
    """Each unique response's share of its problem's loss, as Stage B's `action_weight` ("count": how many samples
    were that response)."""


class Sample(NamedTuple):
    problem_id: str
    prompt: str
    response: str
    reward: float


@dataclass
class ResponseSummary:
    """What a response-level scoring run did; also written to `out_dir/summary.json`."""

    problems: int
    samples: int
    problems_kept: int
    actions: int
    tokens_reference: int
    seconds: float


def prompt_samples(stage_a_dir: str | Path) -> list[Sample]:
    """Every finished response Stage A sampled from a problem's prompt: the solutions, then the rollouts of t = 0
    states, less those the token limit cut off (learned from as whole responses, they would teach ending there)."""
    stage_a = Path(stage_a_dir)
    samples = [
        Sample(row["problem_id"], row["prompt"], join_steps(row["steps"]), float(row["reward"]))
        for row in read_records(stage_a / "solutions", "solutions")
        if not row["truncated"]
    ]
    for row in read_records(stage_a / "states", "states"):
        if row["t"] == 0:
            rollouts = zip(row["completions"], row["completion_rewards"], row["completion_truncated"], strict=True)
            samples += [Sample(row["problem_id"], row["prompt"], c, float(r)) for c, r, cut in rollouts if not cut]
    return samples


def group_by_problem(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.problem_id, []).append(sample)
    return groups


def response_actions(
    group: Sequence[Sample], min_gap: float, weighting: ActionWeighting = "uniform"
) -> list[ScoredAction]:
    """A = r - mean r over the whole group, then the unique responses in first-seen order; [] when the gap
    max A - min A is under `min_gap` (e.g. every response right, or every one wrong). Stage B's `select_actions`
    with each whole response as a terminal candidate valued at its reward."""
    cands = [Candidate(s.response, True, s.reward) for s in group]
    return select_actions(cands, [s.reward for s in group], min_gap, weighting)


def run_response_advantages(config: ResponseAdvantageConfig) -> ResponseSummary:
    """Write `out_dir/actions` (response-level actions with reference log-probs) and `out_dir/summary.json`."""
    start = time.perf_counter()
    samples = prompt_samples(config.stage_a_dir)
    if not samples:
        raise ValueError(f"{config.stage_a_dir}: Stage A holds no sampled responses")
    groups = group_by_problem(samples)
    chosen = {problem: response_actions(g, config.min_gap, config.action_weight) for problem, g in groups.items()}
    kept = [(groups[problem][0], acts) for problem, acts in chosen.items() if acts]
    device = scoring_device(config.device)
    logprobs, tokens = (
        reference_logprobs([(s.prompt, acts) for s, acts in kept], config.policy_path, None, device, config.max_tokens)
        if kept
        else ([], 0)
    )
    rows = [
        _action_row(first, scored, ref)
        for (first, acts), refs in zip(kept, logprobs, strict=True)
        for scored, ref in zip(acts, refs, strict=True)
    ]
    provenance = Provenance(
        PRODUCER,
        config=asdict(config) | {"samples_made": _stage_a_made(config.stage_a_dir)},
        policy_path=config.policy_path,
        policy_hash=policy_fingerprint(config.policy_path),
    )
    out = Path(config.out_dir)
    write_records(rows, out / "actions", "actions", provenance)
    summary = ResponseSummary(len(groups), len(samples), len(kept), len(rows), tokens, time.perf_counter() - start)
    write_json(out / "summary.json", asdict(summary))
    print(f"response advantages: {json.dumps(asdict(summary))}")
    return summary


def _stage_a_made(stage_a_dir: str) -> dict[str, Any]:
    """Which Stage A run the samples came from (its policy's weights and when it ran)."""
    made = read_provenance(Path(stage_a_dir) / "solutions")
    return {"policy_hash": made.policy_hash, "created": made.created}


def _action_row(first: Sample, scored: ScoredAction, ref_logprob: float) -> dict[str, Any]:
    return {
        "state_id": f"{first.problem_id}/prompt",
        "problem_id": first.problem_id,
        "prompt": first.prompt,
        "state_steps": [],
        "action": scored.candidate.action,
        "value": scored.value,
        "advantage": scored.advantage,
        "is_terminal": True,
        "ref_logprob": ref_logprob,
    }

"""What a `dapo demo` run folder was made from, and the refusal to reuse anything made from other inputs.

Why: the demo resumes (a rerun skips finished stages) and knows a finished stage only by its folder. Without a
record, a rerun after editing configs/demo/actor.yaml would report the old actor's results as new, and a grid point
trained from an older round (after `iterate/` was rebuilt) would be reused as if it came from the current one. So:
- `demo.json` holds every setting that changes results (`check_settings`): the resolved iterate plan and fit configs,
  the fit overlays' sections, evaluation, seed, task, start policy and grid. Paths that only place outputs under the
  run folder are written relative to `OUT`, so a rerun of the same settings passes wherever the folder lies;
- every grid point holds `point.json` (`check_made`): its method, lr, epochs, token budget and fingerprints of what
  it trained from (the start policy's weights, when and from which policy Stage A or Stage B made its data), written
  before its first output, so no output of a point ever lacks it;
- `grid/validation.json` keeps beside each score the key of the point's provenance (`provenance_key`): a score is
  trusted only for a point made from the current inputs.
A mismatch is an error naming what differs (dotted key paths) and the folder to remove; never a silent retrain over
it, never a silent reuse.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dapo.core.errors import UserError
from dapo.core.fingerprint import policy_fingerprint
from dapo.records import read_provenance, write_json

OUT = "<out>"
"""Stands for the run folder in recorded settings: where `out` lies decides nothing about the results."""
SETTINGS_FILE = "demo.json"
POINT_FILE = "point.json"
SHOWN = 12
"""Differing keys named in an error message; the rest are counted."""

_MISSING = object()


class StaleRun(UserError, ValueError):
    """A run folder holds results made from other inputs than this run's: reusing them would pass old results off
    as new ones."""


def differences(before: Any, now: Any, path: str = "") -> list[str]:
    """The dotted key paths (list items by index) at which two JSON values differ, so that an error can name
    `actor.model.init_args.beta` and not just `actor`."""
    if isinstance(before, dict) and isinstance(now, dict):
        keys = sorted(set(before) | set(now))
        return [d for k in keys for d in differences(before.get(k, _MISSING), now.get(k, _MISSING), _join(path, k))]
    if isinstance(before, list) and isinstance(now, list) and len(before) == len(now):
        return [d for i, (b, n) in enumerate(zip(before, now, strict=True)) for d in differences(b, n, _join(path, i))]
    return [] if before == now else [path or "(the whole record)"]


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def as_json(value: Any) -> Any:
    """`value` as JSON stores it (tuples as lists, keys as strings), so a fresh value compares equal to its record."""
    return json.loads(json.dumps(value))


def settings_record(
    plan: dict[str, Any], fits: dict[str, dict[str, Any]], overlays: list[dict[str, Any]], plain: dict[str, Any]
) -> dict[str, Any]:
    """`demo.json`: the iterate plan and the critic and actor fit configs it resolves to (`fits`, overlays merged),
    the fit overlays' sections and the `plain` settings (seed, task, start policy, evaluation, grid). The plan's
    config paths are left out: the configs' contents are what count, and `fits` holds them."""
    paths = ("critic_config", "actor_config")
    return {
        **plain,
        "plan": {key: value for key, value in plan.items() if key not in paths},
        **fits,
        "fit_overlays": overlays,
    }


def check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Record the settings the demo in `out_dir` trains with, or refuse to resume one recorded with other settings
    (its finished stages would be silently reused), or with a record older than this check (it may have been made
    with other configs: they were not recorded)."""
    record = out_dir / SETTINGS_FILE
    now = as_json(settings)
    if not record.exists():
        write_json(record, now)
        return
    before = json.loads(record.read_text())
    missing = sorted(set(now) - set(before))
    if missing:
        raise StaleRun(
            f"{record} predates the demo's settings check (it does not record {', '.join(missing)}), so the results "
            f"in {out_dir} may come from other configs than these; use another --out or remove that folder"
        )
    changed = differences(before, now)
    if changed:
        raise StaleRun(
            f"{out_dir} holds a demo run with other settings ({_listed(changed)} differ, see {record}); "
            "use another --out or remove that folder"
        )


def check_made(folder: Path, made: dict[str, Any], finished: bool, record: str = POINT_FILE) -> None:
    """Refuse `folder` if it was made from other inputs than `made` (its `record`), or if it `finished` without a
    record (an older version of dapo made it: what it trained from is unknown); else write the record before the
    folder's first output, so a point cut short resumes only from the same inputs."""
    record_path = folder / record
    now = as_json(made)
    if record_path.exists():
        changed = differences(json.loads(record_path.read_text()), now)
        if changed:
            raise StaleRun(
                f"{folder} was made from other inputs than the current ones ({_listed(changed)} differ, see "
                f"{record_path}); remove that folder to make it again, or use another --out"
            )
        return
    if finished:
        raise StaleRun(
            f"{folder} finished without a provenance record ({record}: an older version of dapo made it), so what "
            "it was made from is unknown; remove that folder to make it again, or use another --out"
        )
    write_json(record_path, now)


def check_started_from(round_dir: Path, policy: Path) -> None:
    """Refuse a finished round that started from another policy than `policy` (round 2, after round 1's chosen
    policy changed): `dapo iterate` checks this when it runs, but the demo does not run a finished round again."""
    before, now = json.loads((round_dir / "iteration.json").read_text())["policy_hash"], policy_fingerprint(str(policy))
    if before != now:
        raise StaleRun(
            f"{round_dir} started from policy {before}, not from {policy} ({now}), the one chosen now; remove "
            f"{round_dir.parent} to run it again, or use another --out"
        )


def provenance_key(made: dict[str, Any]) -> str:
    """A short hash of a provenance record, stored beside what was computed from it (a validation score)."""
    return hashlib.sha256(json.dumps(as_json(made), sort_keys=True).encode()).hexdigest()[:16]


def round_made(round_dir: Path, policy: Path) -> dict[str, Any]:
    """What a round's grid points can train from: the start policy's weights, and when and from which policy's
    weights Stage A sampled its solutions and Stage B made its actions."""
    return {
        "start_policy": policy_fingerprint(str(policy)),
        "stage_a_solutions": _dataset_made(round_dir / "stage_a" / "solutions"),
        "stage_b_actions": _dataset_made(round_dir / "stage_b" / "actions"),
    }


def _dataset_made(path: Path) -> dict[str, Any]:
    made = read_provenance(path)
    return {"created": made.created, "policy_hash": made.policy_hash}


USES = {"dapo": "stage_b_actions", "response": "stage_a_solutions", "rft": "stage_a_solutions"}
"""The round's data each method trains on (its token budget, set by the DAPO actor's data, is recorded too)."""


def point_made(
    method: str, lr: float, epochs: int, tokens: int, round_: dict[str, Any], own: dict[str, Any]
) -> dict[str, Any]:
    """A grid point's provenance: the point, its token budget, what it trains from (of `round_made`'s record, the
    start policy and the method's data) and `own`, the method's own settings."""
    data = {key: round_[key] for key in ("start_policy", USES[method])}
    return {"method": method, "lr": lr, "epochs": epochs, "tokens": tokens, **data, **own}


def load_scores(path: Path) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, str]]]:
    """`grid/validation.json`: each point's validation accuracy, and the provenance key of the point it scored."""
    if not path.exists():
        return {}, {}
    record = json.loads(path.read_text())
    if set(record) != {"scores", "provenance"}:
        raise StaleRun(
            f"{path} predates provenance records (its scores cannot be tied to the points they scored); remove "
            f"{path.parent} to train and score the grid again, or use another --out"
        )
    return record["scores"], record["provenance"]


def save_scores(path: Path, scores: dict[str, dict[str, float]], keys: dict[str, dict[str, str]]) -> None:
    write_json(path, {"scores": scores, "provenance": keys})

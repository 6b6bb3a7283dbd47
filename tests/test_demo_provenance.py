"""`dapo demo` reuses only what was made from the current inputs: a rerun into the same folder with another actor,
critic, iterate or evaluation setting is refused naming the changed key, a rerun with the same settings passes
wherever the folder lies, and a grid point (or its validation score) made from another round's data is refused
naming the point. Everything heavy is replaced by fakes: each test takes well under a second or two."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dapo.core.fingerprint import policy_fingerprint
from dapo.pipeline import demo_grid
from dapo.pipeline.demo import Evaluation, StartPolicy, demo, demo_settings
from dapo.pipeline.demo_grid import METHODS, Round, TuningGrid, tune
from dapo.pipeline.demo_record import StaleRun, check_made, check_settings, check_started_from, differences
from dapo.records import Provenance, write_json, write_records
from dapo.tasks.arith import ArithTask

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TASK = ArithTask(n_steps=1, ops="+-", train_size=40, test_size=8)
GRID = TuningGrid(lrs=[1e-4], epochs=[1, 2], validation=8)


@pytest.fixture
def in_repo(tmp_path, monkeypatch) -> Path:
    """A working folder with the repository's configs (as `dapo demo` runs from the repository root)."""
    monkeypatch.chdir(tmp_path)
    Path("configs").symlink_to(CONFIGS)
    return tmp_path


def _settings(iterate_config: str = "configs/demo/iterate.yaml", overlays: tuple[str, ...] = (), **changed) -> dict:
    evaluation = changed.pop("evaluation", Evaluation())
    return demo_settings(iterate_config, list(overlays), 0, TASK, StartPolicy(), evaluation, GRID)


def _actor_with(path: str, beta: float) -> str:
    """An iterate config whose actor config is the demo's with another beta."""
    actor = yaml.safe_load((CONFIGS / "demo" / "actor.yaml").read_text())
    actor["model"]["init_args"]["beta"] = beta
    Path(path).write_text(yaml.safe_dump(actor))
    iterate = yaml.safe_load((CONFIGS / "demo" / "iterate.yaml").read_text())
    Path(f"iterate-{path}").write_text(yaml.safe_dump({**iterate, "actor_config": path}))
    return f"iterate-{path}"


def test_differences_name_dotted_key_paths():
    before = {"actor": {"model": {"init_args": {"beta": 0.2}}, "cbs": [{"a": 1}]}, "seed": 0}
    now = {"actor": {"model": {"init_args": {"beta": 0.4}}, "cbs": [{"a": 2}]}, "seed": 0, "new": 1}
    assert differences(before, now) == ["actor.cbs.0.a", "actor.model.init_args.beta", "new"]
    assert differences(before, json.loads(json.dumps(before))) == []


def test_a_rerun_with_another_actor_setting_is_refused_naming_the_key(in_repo):
    check_settings(in_repo / "out", _settings(_actor_with("a.yaml", 0.2)))  # the shipped beta, another file: passes
    check_settings(in_repo / "out", _settings())
    with pytest.raises(StaleRun, match=r"actor\.model\.init_args\.beta differ.*another --out or remove"):
        check_settings(in_repo / "out", _settings(_actor_with("b.yaml", 0.4)))


def test_a_changed_overlay_critic_or_iterate_setting_is_refused_naming_the_key(in_repo):
    Path("overlay.yaml").write_text(yaml.safe_dump({"stage_a": {"rollout": {"n_rollouts": 8}}}))
    check_settings(in_repo / "out", _settings(overlays=("overlay.yaml",)))
    Path("overlay.yaml").write_text(yaml.safe_dump({"stage_a": {"rollout": {"n_rollouts": 4}}}))  # same path
    with pytest.raises(StaleRun, match=r"critic\.stage_a\.rollout\.n_rollouts"):
        check_settings(in_repo / "out", _settings(overlays=("overlay.yaml",)))
    Path("overlay.yaml").write_text(yaml.safe_dump({"stage_a": {"rollout": {"n_rollouts": 8}}}))  # as recorded
    iterate = yaml.safe_load((CONFIGS / "demo" / "iterate.yaml").read_text())
    Path("iterate.yaml").write_text(yaml.safe_dump({**iterate, "advantages": {"min_gap": 0.3}}))
    with pytest.raises(
        StaleRun, match=r"\(actor\.advantages\.min_gap, critic\.advantages\.min_gap, plan\.advantages differ"
    ):
        check_settings(in_repo / "out", _settings("iterate.yaml", overlays=("overlay.yaml",)))
    with pytest.raises(StaleRun, match=r"\(evaluation\.limit differ"):
        check_settings(in_repo / "out", _settings(overlays=("overlay.yaml",), evaluation=Evaluation(limit=7)))


class _Stop(Exception):
    """Raised where the demo would start training: everything before it (the settings check) has run."""


def _demo_until_training(monkeypatch, out: str, **settings) -> None:
    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr("dapo.pipeline.demo.DemoStages.load", stop)
    with pytest.raises(_Stop):
        demo(out=out, task=TASK, grid=GRID, **settings)


def test_a_rerun_with_the_same_settings_passes_wherever_the_folder_lies(in_repo, monkeypatch):
    _demo_until_training(monkeypatch, "out")
    recorded = json.loads(Path("out/demo.json").read_text())
    assert recorded["critic"]["stage_a"]["rollout"]["problems_path"] == "<out>/problems"  # not where `out` lies
    _demo_until_training(monkeypatch, "out")
    _demo_until_training(monkeypatch, str(in_repo / "out"))  # the same folder, spelt another way
    shutil.move("out", "moved")
    _demo_until_training(monkeypatch, "moved")
    assert json.loads(Path("moved/demo.json").read_text()) == recorded
    with pytest.raises(StaleRun, match=r"seed differ"):
        demo(out="moved", task=TASK, grid=GRID, seed=1)


def test_a_record_older_than_the_check_is_refused(in_repo, monkeypatch):
    Path("out").mkdir()
    old = {"seed": 0, "task": {}, "start": {}, "grid": {}}  # what demo.json held before it recorded the configs
    Path("out/demo.json").write_text(json.dumps(old))
    with pytest.raises(StaleRun, match=r"predates the demo's settings check.*actor.*remove that folder"):
        _demo_until_training(monkeypatch, "out")


def test_a_point_made_from_other_inputs_or_without_a_record_is_refused(tmp_path):
    made = {"method": "dapo", "lr": 1e-4, "stage_b_actions": {"created": 1.0, "policy_hash": "abc"}}
    check_made(tmp_path / "p", made, finished=False)  # recorded before training
    check_made(tmp_path / "p", made, finished=True)  # the same inputs: reused
    other = {**made, "stage_b_actions": {"created": 2.0, "policy_hash": "abc"}}
    with pytest.raises(StaleRun, match=rf"{tmp_path / 'p'} was made from other inputs.*stage_b_actions\.created"):
        check_made(tmp_path / "p", other, finished=True)
    with pytest.raises(StaleRun, match=r"without a provenance record"):
        check_made(tmp_path / "old", made, finished=True)


def _made(path: Path, kind: str, created: float) -> None:
    write_records([], path, kind, Provenance("test", policy_hash="start", created=created))


@pytest.fixture
def round_(tmp_path) -> Round:
    """A finished round 1 as the grid sees it: the start policy's files and Stage A's and Stage B's provenance."""
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    (policy / "model.safetensors").write_bytes(b"weights")
    folder = tmp_path / "iterate" / "iter-01"
    _made(folder / "stage_a" / "solutions", "solutions", 1.0)
    _made(folder / "stage_b" / "actions", "actions", 1.0)
    actor = {"model": {"init_args": {"optimizer": {"init_args": {"lr": 1.0}}}}, "trainer": {"max_epochs": 1}}
    return Round(folder, policy, {**actor, "data": {}})


@pytest.fixture
def fake_fits(monkeypatch) -> list[tuple[str, Path]]:
    """Every fit replaced by one that writes what a finished point holds; the trainings, in order."""
    calls: list[tuple[str, Path]] = []

    def fit(method: str, out: Path) -> Path:
        if not (out / "tokens.json").exists():  # as the real fits, a finished point is returned as it is
            calls.append((method, out))
            (out / "hf").mkdir(parents=True)
            (out / "tokens.json").write_text("{}")
        return out / "hf"

    monkeypatch.setattr(demo_grid, "_dapo_epoch_tokens", lambda round_: 100)
    monkeypatch.setattr(demo_grid, "_validate", lambda path, *args: SimpleNamespace(accuracy=len(str(path)) / 1000))
    monkeypatch.setattr(demo_grid, "_fit_dapo", lambda r, lr, e, out, seed: fit("dapo", out))
    monkeypatch.setattr(demo_grid, "_fit_response", lambda r, lr, t, root, name, *a: fit("response", root / name))
    monkeypatch.setattr(demo_grid, "_fit_rft", lambda r, lr, t, out, *a: fit("rft", out))
    return calls


def _tune(round_: Round, out: Path) -> dict:
    return tune(round_, GRID, TASK, out, 0, 8, 16, lambda stage: contextlib.nullcontext())


def test_grid_points_are_reused_only_when_made_from_the_current_round(tmp_path, round_, fake_fits):
    grid = tmp_path / "grid"
    first = _tune(round_, grid)
    assert len(fake_fits) == len(METHODS) * 2
    point = json.loads((grid / "dapo" / "lr0.0001-ep2" / "point.json").read_text())
    assert point["tokens"] == 200 and point["stage_b_actions"]["created"] == 1.0 and len(point["start_policy"]) == 16
    assert _tune(round_, grid)["scores"] == first["scores"] and len(fake_fits) == 6  # nothing trained again

    _made(round_.folder / "stage_b" / "actions", "actions", 2.0)  # Stage B made again (iterate/ rebuilt)
    with pytest.raises(StaleRun, match=r"grid/dapo/lr0\.0001-ep1 was made from other inputs.*stage_b_actions\.created"):
        _tune(round_, grid)
    shutil.rmtree(grid / "dapo")  # the baselines train on Stage A's samples: still theirs, reused
    _tune(round_, grid)
    assert [method for method, _ in fake_fits[6:]] == ["dapo", "dapo"]

    _made(round_.folder / "stage_a" / "solutions", "solutions", 2.0)  # Stage A too: the baselines' points are stale
    with pytest.raises(StaleRun, match=r"grid/response/lr0\.0001-ep1 .*stage_a_solutions\.created"):
        _tune(round_, grid)


def test_a_score_is_trusted_only_for_the_point_it_scored(tmp_path, round_, fake_fits):
    grid = tmp_path / "grid"
    _tune(round_, grid)
    record = json.loads((grid / "validation.json").read_text())
    record["scores"]["rft"]["lr0.0001-ep1"] = 0.99  # a score left from another point of that name
    record["provenance"]["rft"]["lr0.0001-ep1"] = "0123456789abcdef"
    (grid / "validation.json").write_text(json.dumps(record))
    assert _tune(round_, grid)["scores"]["rft"]["lr0.0001-ep1"] != 0.99  # scored again, nothing trained
    assert len(fake_fits) == 6


def test_grid_results_of_an_older_version_are_refused(tmp_path, round_, fake_fits):
    grid = tmp_path / "grid"
    (grid / "rft" / "lr0.0001-ep1" / "hf").mkdir(parents=True)
    (grid / "rft" / "lr0.0001-ep1" / "tokens.json").write_text("{}")  # finished, but with no point.json
    with pytest.raises(StaleRun, match=r"grid/rft/lr0\.0001-ep1 finished without a provenance record"):
        _tune(round_, grid)
    (grid / "validation.json").write_text(json.dumps({"dapo": {"lr0.0001-ep1": 0.5}}))  # scores with no keys
    with pytest.raises(StaleRun, match=r"validation\.json predates provenance records"):
        _tune(round_, grid)


def test_a_finished_round_2_from_another_chosen_policy_is_refused(tmp_path, round_):
    round_2 = tmp_path / "round-2" / "iter-01"
    write_json(round_2 / "iteration.json", {"policy_hash": policy_fingerprint(str(round_.policy))})
    check_started_from(round_2, round_.policy)
    (round_.policy / "model.safetensors").write_bytes(b"other weights")  # round 1 chose another policy since
    with pytest.raises(StaleRun, match=r"round-2/iter-01 started from policy \w+, not from .*remove .*round-2"):
        check_started_from(round_2, round_.policy)

"""Rounds that walk through the problems: `dapo iterate --problems_per_round N` gives round i the i-th slice of N
problems (Stage A's `skip` and `limit`), so R rounds see the problems one round over all of them would see."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dapo.cli import cli_main
from dapo.core.errors import UserError
from dapo.pipeline import iterate as iterate_module
from dapo.pipeline.configs import check_problems_per_round, round_problems
from dapo.stages.mc_rollouts import RolloutConfig, load_problems
from dapo.tasks.base import write_problems


@pytest.fixture
def problems_path(tmp_path, arith) -> str:
    return str(write_problems(arith, tmp_path / "problems", limit=10))


def test_skip_and_limit_take_a_slice_of_the_problems(problems_path, arith):
    def ids(**window: int) -> list[str]:
        return [p.id for p in load_problems(RolloutConfig(problems_path=problems_path, **window), arith)]

    every = ids()
    assert len(every) == 10
    assert ids(skip=3, limit=4) == every[3:7]
    assert ids(skip=8, limit=4) == every[8:]
    assert ids(skip=6) == every[6:]
    assert ids(limit=4) == every[:4]


def test_a_skip_past_the_end_is_an_error_naming_the_file(problems_path, arith):
    with pytest.raises(ValueError, match=r"problems: skip 10 leaves none of its 10 problems"):
        load_problems(RolloutConfig(problems_path=problems_path, skip=10), arith)
    with pytest.raises(ValueError, match="skip must be >= 0"):
        RolloutConfig(skip=-1)


def test_round_i_takes_the_ith_slice_after_the_configs_own_skip():
    base = {"stage_a": {"rollout": {"limit": 384, "skip": 10, "n_rollouts": 8}}}
    slices = [round_problems(base, i, 96)["stage_a"]["rollout"] for i in (1, 2, 3, 4)]
    assert [(r["skip"], r["limit"]) for r in slices] == [(10, 96), (106, 96), (202, 96), (298, 96)]
    assert all(r["n_rollouts"] == 8 for r in slices)
    assert round_problems(base, 3, None) is base
    assert base["stage_a"]["rollout"] == {"limit": 384, "skip": 10, "n_rollouts": 8}  # not changed in place


def test_rounds_that_need_more_problems_than_the_config_keeps_are_refused():
    base = {"stage_a": {"rollout": {"limit": 384}}}
    check_problems_per_round(base, 4, 96)  # exactly the 384
    with pytest.raises(UserError, match=r"4 rounds of 97 problems need 388, but .*limit keeps 384"):
        check_problems_per_round(base, 4, 97)
    with pytest.raises(ValueError, match="problems_per_round must be >= 1"):
        check_problems_per_round(base, 2, 0)
    check_problems_per_round({"stage_a": {}}, 100, 1000)  # no limit: Stage A says so if the file runs out


def test_iterate_gives_each_round_its_own_slice(tmp_path, tiny_model_dir, monkeypatch):
    """Each round's critic fit (Stage A's settings) gets the next slice; fits are replaced by a copy of the policy."""
    seen: list[dict] = []

    def fake_fit(config: dict, export_to: Path) -> float:
        if "stage_a" in config and config["stage_a"].get("policy_path"):
            seen.append(config["stage_a"]["rollout"])
        shutil.copytree(tiny_model_dir, export_to)
        return 0.0

    monkeypatch.setattr(iterate_module, "run_fit", fake_fit)
    out = tmp_path / "rounds"
    iterate_module.iterate(tiny_model_dir, str(out), iterations=3, problems_per_round=64)  # configs/critic.yaml: 256
    assert [(r["skip"], r["limit"]) for r in seen] == [(0, 64), (64, 64), (128, 64)]
    with pytest.raises(UserError, match="3 rounds of 100 problems need 300"):
        iterate_module.iterate(tiny_model_dir, str(tmp_path / "more"), iterations=3, problems_per_round=100)


def test_plan_costs_a_round_of_problems_per_round(tiny_model_dir, capsys):
    plan = ["plan", "--config", "configs/iterate.yaml", "--policy_path", tiny_model_dir, "--problems_per_round"]
    cli_main([*plan, "64"])
    assert "64 problems, 32 samples, 6 kept, 16 rollouts" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main([*plan, "200"])
    assert "dapo plan: 2 rounds of 200 problems need 400" in capsys.readouterr().err

"""Determinism: the same config and seed give identical Stage A records, critic weights and values, and Stage B
advantages across two runs on CPU, and the critic trains to the same weights with 1 or 2 DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from dapo.callbacks import StageA
from dapo.data_modules import StepDataModule
from dapo.records import read_records
from dapo.stages.candidate_advantages import AdvantageConfig, run_advantages
from dapo.stages.mc_rollouts import RolloutConfig
from dapo.stages.stage_a import ensure_states
from dapo.training.critic import CriticModule

pytestmark = pytest.mark.slow


def _stage_a(out: Path, policy: str, problems: Path) -> Path:
    rollout = RolloutConfig(
        problems_path=str(problems),
        out_dir=str(out),
        n_samples=4,
        n_keep=2,
        n_rollouts=3,
        max_new_tokens=24,
        limit=6,
        problems_per_shard=3,
        seed=7,
    )
    return ensure_states(StageA(policy_path=policy, rollout=rollout))


def _records(path: Path, kind: str) -> list[dict]:
    return read_records(path, kind).to_list()


def _fit_critic(states: Path, policy: str, root: Path, workers: int) -> CriticModule:
    L.seed_everything(0)
    critic = CriticModule(policy)
    data = StepDataModule(mode="critic", train_path=str(states), tokenizer=policy, max_tokens=192, num_workers=workers)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(critic, datamodule=data)
    return critic


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, policy_dir):
    """Stage A twice into separate folders (the problems file written by the first)."""
    root = tmp_path_factory.mktemp("determinism")
    problems = root / "problems"
    return [_stage_a(root / f"stage_a_{i}", policy_dir, problems) for i in range(2)], root


def test_stage_a_twice_gives_identical_records(two_runs):
    (first, second), _ = two_runs
    for kind in ("states",):
        assert _records(first, kind) == _records(second, kind)
    solutions = [p.parent / "solutions" for p in (first, second)]
    assert _records(solutions[0], "solutions") == _records(solutions[1], "solutions")
    assert any(row["n_rollouts"] > 0 for row in _records(first, "states"))


def test_critic_and_advantages_are_identical_across_runs_and_worker_counts(two_runs, policy_dir, tmp_path):
    (states, _), _ = two_runs
    critics = [_fit_critic(states, policy_dir, tmp_path / f"fit{w}", workers=w) for w in (1, 2)]
    weights = [dict(c.named_parameters()) for c in critics]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    moved = CriticModule(policy_dir)
    moved.configure_model()
    assert any(not torch.equal(p, weights[0][k]) for k, p in moved.named_parameters())  # training did something

    exported = []
    for i, critic in enumerate(critics):
        critic.save_hf(str(tmp_path / f"critic{i}"))
        exported.append(str(tmp_path / f"critic{i}"))
    actions = []
    for i, critic_path in enumerate([exported[0], exported[1], exported[0]]):
        config = AdvantageConfig(
            states_path=str(states),
            critic_path=critic_path,
            policy_path=policy_dir,
            out_dir=str(tmp_path / f"stage_b{i}"),
            min_gap=0.0,
        )
        run_advantages(config)
        actions.append(_records(tmp_path / f"stage_b{i}" / "actions", "actions"))
    assert actions[0] and actions[0] == actions[1] == actions[2]  # values, advantages and reference log-probs

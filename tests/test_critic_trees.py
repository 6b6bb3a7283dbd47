"""Prompt trees for the critic (`data.pack_prompts`): a problem's solutions in one packed row with their prompt once
must give every state the value it gets in its own padded row, cost fewer tokens, and train through Lightning."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from builders import reference_state_rows

from dapo.core.steps import split_steps
from dapo.data_modules import StepDataModule
from dapo.data_modules.collate import collate_critic, collate_critic_trees
from dapo.records import Provenance, write_records
from dapo.training import critic as critic_module
from dapo.training.critic import CriticModule

SOLUTIONS = 3


def _tree_states(arith, n: int) -> list[dict]:
    """`SOLUTIONS` solutions per problem that part right after the prompt: solution j opens with j made-up steps
    (so lengths differ), then the reference steps; soft values (t + 1) / (T + 2) and a 0/1 final outcome."""
    rows = []
    for j in range(SOLUTIONS):
        for row in reference_state_rows(arith, n, lambda t, T: 0.0):
            if row["t"] > 0:
                continue
            extra = [f"{k} + {j} = {k + j}\n" for k in range(1, j + 1)] if j else ["0 + 0 = 0\n"]
            steps = extra + split_steps("".join(row["steps"]))
            for t in range(len(steps) + 1):
                value = float(j % 2) if t == len(steps) else (t + 1) / (len(steps) + 2)
                rows.append(
                    row
                    | {"solution_id": f"{row['problem_id']}/s{j}", "state_id": f"{row['problem_id']}/s{j}/t{t}"}
                    | {"t": t, "steps": steps, "mc_value": value, "n_rollouts": 4 * (t < len(steps))}
                )
    return rows


def _modules(tmp_path, arith, tokenizer: str, n: int = 6) -> tuple[StepDataModule, StepDataModule]:
    path = write_records(_tree_states(arith, n), tmp_path / "states", "states", Provenance(producer="test"))
    plain = StepDataModule(mode="critic", train_path=str(path), tokenizer=tokenizer)
    trees = StepDataModule(mode="critic", train_path=str(path), tokenizer=tokenizer, pack_prompts=True)
    plain.load_items()
    trees.load_items()
    return plain, trees


def _values_by_solution(module: CriticModule, batch: dict, keys: list[str]) -> dict[str, list[float]]:
    with torch.no_grad():
        logits = module.boundary_logits(batch)  # (b, n)
    return {key: logits[b][batch["boundary_mask"][b]].tolist() for b, key in enumerate(keys)}


def test_trees_give_every_state_its_own_rows_value_with_the_prompt_once(tmp_path, arith, tiny_model_dir):
    plain, trees = _modules(tmp_path, arith, tiny_model_dir)
    assert len(trees.train_items) == 6 and all(len(t["trajectories"]) == SOLUTIONS for t in trees.train_items)
    module = CriticModule(tiny_model_dir)
    module.configure_model()
    module.model.eval()
    padded = collate_critic(plain.train_items, plain.pad_id)
    packed = collate_critic_trees(trees.train_items, trees.pad_id)
    tree_keys = [item["key"] for tree in trees.train_items for item in tree["trajectories"]]
    alone = _values_by_solution(module, padded, [item["key"] for item in plain.train_items])
    together = _values_by_solution(module, packed, tree_keys)
    assert sorted(alone) == sorted(together) and len(alone) == 6 * SOLUTIONS
    for key, values in alone.items():
        assert len(values) == len(together[key]) and values == pytest.approx(together[key], abs=1e-5), key
    prompt_tokens = [len(tree["group"]["prefix"]) for tree in trees.train_items]
    tokens = {"plain": int(padded["attention_mask"].sum()), "trees": int((packed["segment_ids"] >= 0).sum())}
    assert tokens["plain"] - tokens["trees"] == (SOLUTIONS - 1) * sum(prompt_tokens)  # each prompt once
    assert min(prompt_tokens) >= 10  # the question and "Solution:" line at least


def test_trees_carry_the_same_targets(tmp_path, arith, tiny_model_dir):
    plain, trees = _modules(tmp_path, arith, tiny_model_dir, n=2)
    packed = collate_critic_trees(trees.train_items, trees.pad_id)
    by_key = {item["key"]: item for item in plain.train_items}
    keys = [item["key"] for tree in trees.train_items for item in tree["trajectories"]]
    for b, key in enumerate(keys):
        n = len(by_key[key]["boundaries"])
        assert packed["targets"][b, :n].tolist() == pytest.approx(by_key[key]["targets"])
        assert int(packed["boundary_mask"][b].sum()) == n


def _trainer(tmp_path) -> L.Trainer:
    """One CPU epoch, no validation, nothing written."""
    return L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
    )


def test_a_critic_fits_on_trees_and_the_batches_name_their_problems(tmp_path, arith, tiny_model_dir):
    _, trees = _modules(tmp_path, arith, tiny_model_dir)
    trees.hparams["max_tokens"] = trees.max_tokens = 400  # a few trees per batch
    module = CriticModule(tiny_model_dir, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    module.configure_model()
    head_before = module.model.head.weight.detach().clone()
    trainer = _trainer(tmp_path)
    trainer.fit(module, datamodule=trees)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert not torch.equal(module.model.head.weight, head_before)
    problems = {tree["key"] for tree in trees.train_items}
    assert trees.train_batch_keys(0) and set(trees.train_batch_keys(0)) <= problems


def test_a_model_that_ignores_4d_masks_is_an_error_not_a_silent_mix(tmp_path, arith, tiny_model_dir, monkeypatch):
    _, trees = _modules(tmp_path, arith, tiny_model_dir, n=2)
    monkeypatch.setattr(critic_module, "check_packing", lambda *args, **kwargs: False)
    trainer = _trainer(tmp_path)
    with pytest.raises(ValueError, match="pack_prompts needs a model that honours 4D attention masks"):
        trainer.fit(CriticModule(tiny_model_dir), datamodule=trees)


def test_pack_prompts_is_for_the_critic(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="pack_prompts packs the critic"):
        StepDataModule(mode="actor", train_path=str(tmp_path), tokenizer=tiny_model_dir, pack_prompts=True)

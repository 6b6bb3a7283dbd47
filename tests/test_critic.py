"""CriticModule: the loss against hand arithmetic, one forward == per-state forwards, training, export."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from builders import reference_state_rows

from dapo.core.losses import value_loss
from dapo.data_modules import StepDataModule
from dapo.models.value import StepScorer, ValueModel
from dapo.pipeline.export import export_checkpoint
from dapo.records import Provenance, write_records
from dapo.training.critic import CriticModule


def test_value_loss_by_hand():
    """logits [0, ln 3, 5] -> V = [0.5, 0.75, ~1]; targets [0.7, 1.0, 0.0]; the third is masked out.
    BCE: -(0.7 ln 0.5 + 0.3 ln 0.5) = ln 2 = 0.693147; -ln 0.75 = 0.287682; mean = 0.490415.
    MSE: (0.5 - 0.7)^2 = 0.04; (0.75 - 1)^2 = 0.0625; mean = 0.05125."""
    logits = torch.tensor([[0.0, math.log(3.0), 5.0]])
    targets = torch.tensor([[0.7, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    assert value_loss(logits, targets, mask, "bce").item() == pytest.approx(0.490415, abs=1e-6)
    assert value_loss(logits, targets, mask, "mse").item() == pytest.approx(0.05125, abs=1e-6)


def test_soft_targets_stay_soft():
    """d BCE / d logit = (V - y) / m: at logit 0 with y = 0.7 that is -0.2, not -0.5 as a rounded 1.0 gives."""
    logits = torch.zeros(1, 1, requires_grad=True)
    value_loss(logits, torch.tensor([[0.7]]), torch.tensor([[True]])).backward()
    assert logits.grad.item() == pytest.approx(-0.2, abs=1e-6)


def test_empty_mask_gives_zero_loss():
    loss = value_loss(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0


def _states(arith, n: int, seed: int = 0) -> list[dict]:
    """Reference-solution states with random soft values; the terminal state's value is a random 0/1 outcome."""
    gen = torch.Generator().manual_seed(seed)

    def value(t: int, n_steps: int) -> float:
        draw = torch.rand(1, generator=gen).item()
        return float(draw < 0.5) if t == n_steps else round(draw, 3)

    return reference_state_rows(arith, n, value)


def test_one_forward_equals_one_forward_per_state(tmp_path, arith, tiny_model_dir):
    path = write_records(_states(arith, 4), tmp_path / "states", "states", Provenance(producer="test"))
    dm = StepDataModule(mode="critic", train_path=str(path), tokenizer=tiny_model_dir)
    batch = next(iter(dm.train_dataloader()))
    model = ValueModel.from_pretrained(tiny_model_dir, missing_head="init").eval()
    with torch.no_grad():
        full = model(batch["input_ids"], batch["attention_mask"])  # (b, s)
        for row in range(batch["input_ids"].shape[0]):
            for j in batch["boundary_index"][row][batch["boundary_mask"][row]].tolist():
                alone = model(batch["input_ids"][row : row + 1, : j + 1])  # the state's tokens only
                assert torch.allclose(full[row, j], alone[0, -1], atol=1e-5)


def _fit(tmp_path, arith, model_path, **trainer_kwargs) -> tuple[CriticModule, L.Trainer, dict]:
    path = write_records(_states(arith, 24), tmp_path / "states", "states", Provenance(producer="test"))
    dm = StepDataModule(mode="critic", train_path=str(path), tokenizer=model_path, val_fraction=0.25, max_tokens=512)
    module = CriticModule(model_path, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    module.configure_model()  # idempotent: fit keeps this model
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        log_every_n_steps=1,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=dm)
    return module, trainer, before


def test_training_changes_every_parameter_and_exports(tmp_path, arith, tiny_model_dir):
    module, trainer, before = _fit(tmp_path, arith, tiny_model_dir)
    for name, param in module.named_parameters():
        assert not torch.equal(param, before[name]), f"{name} did not change"
    ckpt = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    out = export_checkpoint(ckpt, str(tmp_path / "critic_hf"))
    scorer = StepScorer.from_pretrained(out)
    prompt, steps = "Question: 1 + 1\nSolution:\n", ["1 + 1 = 2\n", "Answer: 2"]
    exported = scorer.values([(prompt, steps)])[0]
    assert len(exported) == 3 and all(0.0 < v < 1.0 for v in exported)
    untrained = ValueModel.from_pretrained(tiny_model_dir, missing_head="init")
    fresh = StepScorer(untrained, scorer.tokenizer).values([(prompt, steps)])[0]
    assert exported != pytest.approx(fresh)  # the head and backbone came back trained, not re-initialised
    loaded = ValueModel.from_pretrained(out)
    assert torch.equal(loaded.head.weight, module.model.head.weight)

"""Numerical guards: a NaN/inf loss or gradient stops the fit naming the batch (and leaves the weights as they
were), or with on_nonfinite="skip" that optimizer step is dropped and counted; losses stay fp32 under bf16."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from builders import reference_state_rows

from dapo.callbacks import NonFiniteGuard
from dapo.data_modules import StepDataModule
from dapo.records import Provenance, write_records
from dapo.training.critic import CriticModule
from dapo.training.guards import NonFiniteError, batch_where, check_policy, nonfinite_grads

BAD_BATCH = 2


@pytest.fixture(scope="module")
def states(tmp_path_factory, arith) -> str:
    rows = reference_state_rows(arith, 24, lambda t, T: (t + 1) / (T + 2))
    return str(write_records(rows, tmp_path_factory.mktemp("guards") / "states", "states", Provenance(producer="t")))


def _data(states: str, tokenizer: str) -> StepDataModule:
    return StepDataModule(mode="critic", train_path=states, tokenizer=tokenizer, max_tokens=128)


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    options = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(default_root_dir=tmp_path, enable_model_summary=False, **(options | {"max_steps": 5} | kwargs))


def _poison_loss_at(critic: CriticModule, batch_index: int) -> None:
    """Make the value logits NaN in one training batch (as an overflow in the forward would)."""
    forward = critic.boundary_logits

    def boundary_logits(batch):
        logits = forward(batch)
        if critic.training and critic.trainer.fit_loop.epoch_loop.batch_idx == batch_index:
            return logits * float("nan")
        return logits

    critic.boundary_logits = boundary_logits  # type: ignore[method-assign]


def _poison_grad_at(critic: CriticModule, step: int) -> str:
    """Make one parameter's gradient inf at one optimizer step (the loss stays finite); returns its name."""
    name, param = next((n, p) for n, p in critic.named_parameters() if n.endswith("head.weight") or "head" in n)
    param.register_hook(lambda g: g * float("inf") if critic.trainer.global_step == step else g)
    return name


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_a_nan_loss_stops_the_fit_naming_the_batch_and_its_records(states, tiny_model_dir, tmp_path):
    critic = CriticModule(tiny_model_dir)
    critic.configure_model()
    _poison_loss_at(critic, BAD_BATCH)
    seen: dict[str, torch.Tensor] = {}

    class Snapshot(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == BAD_BATCH:
                seen.update(_weights(pl_module))

    data = _data(states, tiny_model_dir)
    with pytest.raises(NonFiniteError, match=rf"non-finite loss nan at epoch 0, batch {BAD_BATCH} \(global step 2\)"):
        _trainer(tmp_path, callbacks=[Snapshot()]).fit(critic, datamodule=data)
    after = _weights(critic)
    assert all(torch.equal(after[k], seen[k]) for k in seen)  # the bad step never reached the weights
    assert all(torch.isfinite(p).all() for p in after.values())


def test_the_error_names_the_records_of_the_batch(states, tiny_model_dir, tmp_path):
    critic = CriticModule(tiny_model_dir)
    critic.configure_model()
    _poison_loss_at(critic, BAD_BATCH)
    data = _data(states, tiny_model_dir)
    with pytest.raises(NonFiniteError) as error:
        _trainer(tmp_path).fit(critic, datamodule=data)
    keys = data.train_batch_keys(BAD_BATCH)
    assert keys and all(key.startswith("arith-train-") for key in keys)
    assert repr(keys[0]) in str(error.value) and "on_nonfinite: skip" in str(error.value)


def test_skip_drops_the_bad_step_and_counts_it(states, tiny_model_dir, tmp_path):
    critic = CriticModule(tiny_model_dir, on_nonfinite="skip")
    critic.configure_model()
    _poison_loss_at(critic, BAD_BATCH)
    trainer = _trainer(tmp_path)
    trainer.fit(critic, datamodule=_data(states, tiny_model_dir))
    guard = next(cb for cb in trainer.callbacks if isinstance(cb, NonFiniteGuard))
    assert guard.skipped == 1 and trainer.global_step == 5
    assert all(torch.isfinite(p).all() for p in critic.parameters())
    optimizer = trainer.optimizers[0]
    steps = {int(optimizer.state[p]["step"]) for p in critic.parameters() if p in optimizer.state}
    assert steps == {4}  # five optimizer steps, one of which moved nothing (not even Adam's moments)


def test_a_non_finite_gradient_stops_the_fit_naming_the_parameter(states, tiny_model_dir, tmp_path):
    critic = CriticModule(tiny_model_dir)
    critic.configure_model()
    name = _poison_grad_at(critic, step=3)
    with pytest.raises(NonFiniteError, match=rf"non-finite gradients of \['{name}'\] at epoch 0, batch 3"):
        _trainer(tmp_path).fit(critic, datamodule=_data(states, tiny_model_dir))


def test_a_non_finite_gradient_is_skipped_when_asked(states, tiny_model_dir, tmp_path):
    critic = CriticModule(tiny_model_dir, on_nonfinite="skip")
    critic.configure_model()
    _poison_grad_at(critic, step=3)
    trainer = _trainer(tmp_path)
    trainer.fit(critic, datamodule=_data(states, tiny_model_dir))
    assert next(cb for cb in trainer.callbacks if isinstance(cb, NonFiniteGuard)).skipped == 1
    assert all(torch.isfinite(p).all() for p in critic.parameters())


def test_the_loss_is_fp32_under_bf16_mixed_precision(states, tiny_model_dir, tmp_path):
    dtypes: list[torch.dtype] = []

    class LossDtype(L.Callback):
        def on_before_backward(self, trainer, pl_module, loss):
            dtypes.append(loss.dtype)

    critic = CriticModule(tiny_model_dir)
    critic.configure_model()
    trainer = _trainer(tmp_path, precision="bf16-mixed", max_steps=2, callbacks=[LossDtype()])
    trainer.fit(critic, datamodule=_data(states, tiny_model_dir))
    assert dtypes == [torch.float32, torch.float32]


def test_nonfinite_grads_lists_only_the_bad_parameters():
    layer = torch.nn.Linear(2, 2)
    layer.weight.grad = torch.tensor([[0.0, float("nan")], [1.0, 2.0]])
    layer.bias.grad = torch.zeros(2)
    assert nonfinite_grads(layer.named_parameters()) == ["weight"]
    layer.weight.grad = torch.ones(2, 2)
    assert nonfinite_grads(layer.named_parameters()) == []


def test_batch_where_and_policy_checks():
    keys = [f"p{i}/s0" for i in range(7)]
    assert batch_where(1, 4, 20, keys) == "epoch 1, batch 4 (global step 20), records " + repr(keys[:5]) + " and 2 more"
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        check_policy("ignore")
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        CriticModule("unused", on_nonfinite="ignore")  # type: ignore[arg-type]

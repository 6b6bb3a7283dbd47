"""What the critic and the actor do alike around their backbone: load it (optionally quantized), shard it under
FSDP2, hand only trainable parameters to the optimizer, and checkpoint only what trains.

`TrainableBackbone` is mixed into both LightningModules ahead of `LightningModule`; it reads the `lora` and
`load_in` hyperparameters each module declares and leaves the model itself to the module's `configure_model()`.
Checkpoints record which module wrote them (`dapo_module`), so `dapo export` rebuilds the right one; with LoRA
they hold only the adapters (and the critic's value head): the frozen base is reloaded from `model_path`. Both
modules install the same guards on their Trainer: non-finite steps stop or are skipped (`on_nonfinite`), and the
RNG states ride in every checkpoint so a resumed fit continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedModel

from dapo.models.adapters import LoraSettings, check_trainable_setup, quantized_loading, trainable_state
from dapo.models.memory import load_with_attention, prepare_for_training
from dapo.models.parallel import M, shard_blocks
from dapo.training.guard_callbacks import NonFiniteGuard, RngCheckpoint
from dapo.training.optim import injected_optimizers

MODULE_KEY = "dapo_module"


def module_class_path(module: Any) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


class TrainableBackbone:
    """Mixin for a LightningModule with hparams `model_path`, `lora`, `load_in`, `gradient_checkpointing`,
    `attn_implementation` and injected optimizer factories."""

    hparams: Any
    optimizer_factory: Any
    scheduler_factory: Any
    device_mesh: Any
    strict_loading: bool

    @property
    def lora(self) -> LoraSettings | None:
        lora = self.hparams.get("lora")
        return LoraSettings(**lora) if isinstance(lora, dict) else lora

    def loading_kwargs(self) -> dict[str, Any]:
        """`from_pretrained` arguments for the backbone: bitsandbytes settings when `load_in` is set."""
        check_trainable_setup(self.hparams.get("load_in"), self.lora, self.device_mesh is not None)
        # a LoRA checkpoint holds the trainable tensors only; the frozen base comes from `model_path`
        self.strict_loading = self.lora is None
        return quantized_loading(self.hparams.get("load_in"), _root_device(self))

    def load_backbone(self, load: Callable[..., Any], path: str, **kwargs: Any) -> Any:
        """`load(path, **kwargs)` with this module's attention kernel and quantized loading."""
        attention = self.hparams.get("attn_implementation", "sdpa")  # checkpoints older than the switch: sdpa
        return load_with_attention(load, path, attention, **kwargs, **self.loading_kwargs())

    def prepare(self, model: PreTrainedModel) -> Any:
        """k-bit preparation (QLoRA) and gradient checkpointing, before adapters and sharding wrap `model`."""
        checkpointing = bool(self.hparams.get("gradient_checkpointing", False))
        quantized = self.hparams.get("load_in") is not None
        return prepare_for_training(model, checkpointing, quantized, self.lora is not None)

    def shard(self, model: M) -> M:
        return shard_blocks(model, self.device_mesh)

    def configure_callbacks(self) -> list[Any]:
        return [NonFiniteGuard(self.hparams.get("on_nonfinite", "raise")), RngCheckpoint()]

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.parameters() if p.requires_grad]  # type: ignore[attr-defined]
        return injected_optimizers(trainable, self.optimizer_factory, self.scheduler_factory)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[MODULE_KEY] = module_class_path(self)  # lets `dapo export` rebuild the right module
        if self.lora is not None:
            kept = trainable_state(self)  # type: ignore[arg-type]
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in kept}


def _root_device(module: Any) -> torch.device:
    """Where this process computes: the strategy's device when attached to a Trainer, else CPU."""
    trainer = getattr(module, "_trainer", None)
    return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

"""LoRA adapters (peft) and bitsandbytes quantized loading, shared by the critic, the actor and the frozen models.

- `load_in` ("8bit" / "4bit" nf4 / None) loads a Hugging Face model through bitsandbytes: for frozen models
  (rollout policy, critic scoring, reference log-probs) it is the whole story; for a trained one it is QLoRA's
  base and needs `LoraSettings`, because quantized weights cannot take gradient steps.
- `add_lora` wraps a backbone with peft LoRA adapters; only the adapters (and, for the critic, the value head)
  train, so checkpoints keep just those (`trainable_state`) and the frozen base is reloaded from `model_path`.
- `merge_lora` folds the adapters into a full-precision base for export: the result is a plain transformers
  model with no peft in it. A QLoRA adapter is merged into the original (unquantized) weights, the usual practice;
  it was trained against their 4-bit rounding, so the merged model differs from the trained one by that rounding.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from transformers import BitsAndBytesConfig

from dapo.core.errors import require
from dapo.models.memory import load_with_attention

LoadIn = Literal["8bit", "4bit"]


@dataclass
class LoraSettings:
    """Which LoRA adapters to train (peft `LoraConfig`)."""

    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Scaling numerator: the update is (alpha / r) B A."""
    dropout: float = 0.05
    """Dropout on the adapter's input."""
    target_modules: str | list[str] = "all-linear"
    """Linear layers that get adapters: module names, or "all-linear" (every linear layer but the output head)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")


def quantized_loading(load_in: LoadIn | None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """`from_pretrained` keyword arguments that load a model in 8-bit or 4-bit nf4 ({} for full precision).

    bitsandbytes places quantized weights at load time, hence the device map; 4-bit layers compute in fp32 on CPU
    and in bf16 on GPU."""
    if load_in is None:
        return {}
    require("accelerate", "scale", f"load_in={load_in!r} (a device map for bitsandbytes)")
    if load_in == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True)
    elif load_in == "4bit":
        compute = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
    else:
        raise ValueError(f"load_in must be '8bit', '4bit' or None, got {load_in!r}")
    return {"quantization_config": config, "device_map": {"": str(device)}}


def frozen(
    load: Callable[..., Any], path: str, load_in: LoadIn | None, device: torch.device, attn_implementation: str = "sdpa"
) -> Any:
    """A model for inference only: `load(path, ...)` in full precision moved to `device`, or quantized in place
    there (bitsandbytes models cannot be moved after loading); in eval mode either way. `attn_implementation`:
    the attention kernel (`dapo.models.memory`)."""
    if load_in is None:
        return load_with_attention(load, path, attn_implementation).to(device).eval()
    return load_with_attention(load, path, attn_implementation, **quantized_loading(load_in, device)).eval()


def check_trainable_setup(load_in: LoadIn | None, lora: LoraSettings | None, sharded: bool) -> None:
    """Refuse combinations that cannot train: quantized weights without adapters, adapters under FSDP2."""
    if load_in is not None and lora is None:
        raise ValueError(f"load_in={load_in!r} trains nothing without adapters: set `lora` too (QLoRA)")
    if sharded and (lora is not None or load_in is not None):
        raise ValueError("LoRA / quantized bases are not implemented with ModelParallelStrategy (FSDP2); use DDP")


def add_lora(backbone: nn.Module, settings: LoraSettings) -> Any:
    """`backbone` wrapped with trainable LoRA adapters (a peft model, which forwards attribute lookups such as
    `config` to the backbone); every base weight frozen."""
    peft = require("peft", "scale", "LoRA adapters (`lora`)")
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )
    return peft.get_peft_model(backbone, config)


def merge_lora(model: nn.Module) -> nn.Module:
    """The plain transformers model with the adapters folded into its weights (a no-op without adapters).

    Only `add_lora` imports peft: if this process never did, `model` has no adapters, and a run without the `scale`
    extra exports without ever needing peft."""
    peft = sys.modules.get("peft")
    return model.merge_and_unload() if peft is not None and isinstance(model, peft.PeftModel) else model


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The entries of `module.state_dict()` that belong to parameters with `requires_grad` (adapters, heads)."""
    names = {name for name, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in module.state_dict().items() if k in names}

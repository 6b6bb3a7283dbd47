"""Memory switches on every model dapo loads: the attention kernel, gradient checkpointing, k-bit preparation.

- `attn_implementation` picks transformers' attention kernel for any model (trained or frozen): "sdpa" (the
  default: torch's fused scaled-dot-product attention, no (heads x seq x seq) matrix kept on CPU or GPU),
  "eager" (the reference matmul-softmax-matmul, slower and larger) or "flash_attention_2" (the `flash-attn`
  package, CUDA only). All three honour the 4D packing mask of `dapo.core.packing`.
- Gradient checkpointing (training only) keeps each decoder block's input and recomputes the block in the backward
  pass: activation memory drops from every layer's intermediates to one layer's, for about one more forward pass
  of compute. Non-reentrant (`use_reentrant=False`): it works with keyword inputs (the 4D mask, position ids) and
  with frozen inputs, and it restores the RNG so dropout recomputes identically.
- A quantized (QLoRA) base goes through peft's `prepare_model_for_kbit_training`: every base weight frozen, norms
  and other small parameters upcast to fp32, and checkpointing enabled the way peft expects for k-bit layers.

Order in `configure_model()`: load, `prepare_for_training`, then LoRA adapters, then FSDP2 sharding (checkpointing
must wrap the blocks before `fully_shard` does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

from transformers import PreTrainedModel

from dapo.core.errors import require

AttnImplementation = Literal["sdpa", "eager", "flash_attention_2"]
ATTN_IMPLEMENTATIONS: tuple[str, ...] = get_args(AttnImplementation)
CHECKPOINTING_KWARGS = {"use_reentrant": False}


def check_attention(attn_implementation: str) -> None:
    """Refuse an attention kernel dapo does not support, naming the ones it does."""
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        choices = ", ".join(repr(name) for name in ATTN_IMPLEMENTATIONS)
        raise ValueError(f"attn_implementation must be one of {choices}, got {attn_implementation!r}")


def load_with_attention(load: Callable[..., Any], path: str, attn_implementation: str, **kwargs: Any) -> Any:
    """`load(path, attn_implementation=..., **kwargs)`; a missing `flash-attn` package becomes one clear error.

    transformers reports it as an ImportError ("FlashAttention2 has been toggled on, but it cannot be used due to
    the following error: the package for FlashAttention2 doesn't seem to be installed")."""
    check_attention(attn_implementation)
    try:
        return load(path, attn_implementation=attn_implementation, **kwargs)
    except ImportError as error:
        if attn_implementation != "flash_attention_2" or "FlashAttention2" not in str(error):
            raise
        raise ImportError(
            "attn_implementation='flash_attention_2' needs the package 'flash-attn' (pip install flash-attn; CUDA "
            f"GPUs only), which is not usable here ({error}); use attn_implementation='sdpa' (the default) or 'eager'"
        ) from error


def prepare_for_training(model: PreTrainedModel, checkpointing: bool, quantized: bool, lora: bool) -> Any:
    """`model` ready to train: k-bit preparation when `quantized` (QLoRA), gradient checkpointing when asked.

    Call before adding LoRA adapters (peft's order) and before FSDP2 sharding."""
    if quantized:
        peft = require("peft", "scale", "QLoRA (`load_in` with `lora`)")
        return peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS
        )
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
        if lora:  # frozen embeddings give blocks inputs without grad; peft's k-bit path adds the same hook
            model.enable_input_require_grads()
    return model

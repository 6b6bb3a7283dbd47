"""Models and what is read out of them: the tiny Llama builder (`tiny`), the critic's `ValueModel` (`value`), policy
log-probs and critic values over packed batches (`outputs`), LoRA / QLoRA loading (`adapters`) and FSDP2 sharding
(`parallel`)."""

from .tiny import build_tiny_model, train_bpe_tokenizer

__all__ = ["build_tiny_model", "train_bpe_tokenizer"]

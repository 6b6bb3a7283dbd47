"""Model builders and heads."""

from .tiny import build_tiny_model, train_bpe_tokenizer

__all__ = ["build_tiny_model", "train_bpe_tokenizer"]

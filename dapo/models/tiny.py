"""A tiny Llama-config causal LM with its own byte-level BPE tokenizer, built in seconds on CPU.

Why: tests and the CPU demo must exercise the real code paths (`AutoModelForCausalLM.from_pretrained`,
`AutoTokenizer.from_pretrained`, offsets, padding, `generate`) without a network or a multi-GB download.
So we train a small BPE tokenizer on whatever texts the caller has (e.g. the task's prompts and solutions),
initialise a small `LlamaForCausalLM` from a fixed seed, and save both as an ordinary Hugging Face folder.

Tokenizer choices, and why:

* Byte-level BPE with the full 256-byte initial alphabet: any unicode string encodes with no unknown token
  and `decode(encode(s)) == s` exactly (spaces, newlines, tabs, emoji included).
* No special tokens are added on encode (no BOS/EOS post-processing), so `tokenizer(text).input_ids` is exactly
  the text. Step-level code concatenates prompt and step token ids and must not find stray BOS tokens inside.
* `<|pad|>` is distinct from `<|eos|>`, so masking padding never masks a real end-of-sequence.
* Offsets are character offsets into the original string and include a token's leading space (no
  `trim_offsets`). A token holding only part of a multi-byte character (e.g. one of the three bytes of "→")
  reports the span of the whole character, so neighbouring tokens can share a span.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from dapo.records import staged_dir

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
# Every byte is a base token, so the vocabulary can never be smaller than this.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "build_tiny_model",
    "count_parameters",
    "train_bpe_tokenizer",
]


def _byte_level_bpe() -> Tokenizer:
    """An untrained byte-level BPE pipeline: no normaliser, no prefix space, no post-processor."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it for transformers.

    `vocab_size` is an upper bound (special tokens included): a small corpus may yield fewer merges.
    The special tokens get ids 0 (bos), 1 (eos) and 2 (pad). Training is deterministic.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be >= {MIN_VOCAB_SIZE} (256 bytes + special tokens), got {vocab_size}")
    tok = _byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # add_bos_token / add_eos_token False: transformers 5 installs an empty TemplateProcessing, adding nothing.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        add_bos_token=False,
        add_eos_token=False,
    )


def _llama_config(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    tie_word_embeddings: bool,
) -> LlamaConfig:
    """A Llama config sized by the arguments, with vocabulary and special ids taken from `tokenizer`."""
    if hidden_size % num_heads or (hidden_size // num_heads) % 2:
        raise ValueError(f"hidden_size {hidden_size} must split into {num_heads} heads of even size (RoPE)")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )


def _init_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    """Initialise weights from `seed` without disturbing the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    gen = model.generation_config
    gen.bos_token_id = config.bos_token_id
    gen.eos_token_id = config.eos_token_id
    gen.pad_token_id = config.pad_token_id
    return model


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists (pass overwrite=True to replace it)")


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    seed: int = 0,
    tie_word_embeddings: bool = True,
    overwrite: bool = False,
) -> Path:
    """Train a tokenizer on `texts`, build a seeded tiny Llama, and save both to `out_dir`; return `out_dir`.

    `intermediate_size` defaults to 4 * hidden_size. The folder (config.json, generation_config.json,
    model.safetensors, tokenizer files) loads offline with `AutoModelForCausalLM` / `AutoTokenizer`.
    It is written to a temporary sibling and renamed into place (`staged_dir`), so a crash never leaves a
    half-written model, and the folder gets the usual permissions (a `tempfile.mkdtemp` folder would stay 0700).
    Raises FileExistsError if `out_dir` exists, unless `overwrite=True`.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size)
    config = _llama_config(
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
    )
    model = _init_model(config, seed)
    with staged_dir(out_dir) as tmp_dir:
        model.save_pretrained(tmp_dir)
        tokenizer.save_pretrained(tmp_dir)
        _check_target(out_dir, overwrite)  # again: a folder that appeared meanwhile is not replaced unasked
    return out_dir


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (tied weights counted once), optionally only those requiring grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

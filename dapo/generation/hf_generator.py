"""`HFGenerator`: the `Generator` protocol on a Hugging Face causal LM, with rollouts sharing their prompt's prefix.

What: `generate(prompts, params)` returns `params.n` continuations per prompt, as text without the prompt and
without special tokens. Prompts are processed longest first in chunks of at most `batch_size` rows (prompts x n),
left-padded, KV-cached, stopping at end-of-sequence, greedy when `temperature == 0` and otherwise sampled with
temperature / top-p (top-k off, so the distribution is exactly the policy's, tempered and truncated by top-p).
The KV cache appends in place (`dapo.generation.kv_cache`) instead of copying itself at every token, and every `SEGMENT`
tokens the rows that ended leave the batch (except with `one_step` or `synced_gpus`, which decode in one call).

Why a shared prefix: DAPO samples many rollouts (MC value estimates, candidate actions) from every state
s_t = prompt + first t steps, so the same long prefix is continued n times. Instead of encoding it n times, each
chunk of distinct prompts is run once through the model into a `DynamicCache`, which is then repeated n times
along the batch (`batch_repeat_interleave`) and handed to `model.generate`. `generate` sees the full n-times
repeated `input_ids` / `attention_mask`, notices that the cache already holds all but the last prompt token, and
only runs that last token before decoding. Greedy outputs are identical to the plain path (`shared_prefix=False`),
which is what the tests check.

Determinism: chunk i (in longest-first order) is sampled after `torch.manual_seed(params.seed + i)` inside
`torch.random.fork_rng`, so the output is a function of (prompts, params, batch_size) and the caller's global RNG
state is left untouched.

`params.one_step` (candidate actions): a `FirstStepStopping` criterion stops each row as soon as its decoded text
holds a complete first step, and the text is then cut to that step (`cut_to_first_step`). Following
`dapo.core.steps.split_steps`, blank lines join the step that follows them, so the first step is complete as soon as a
non-blank piece ends with the delimiter: "\\n\\n5 + 3 = 8\\n" is complete, "\\n\\n" and "5 + 3 = 8" are not. The cut
is right after that delimiter, so anything the last token carried past it (e.g. a "\\n\\n" token) is dropped and the
action is always a literal prefix of the continuation that `split_steps` treats as one step. A row that ends (eos
or `max_new_tokens`) before completing a step keeps its whole text (e.g. a final "Answer: 8" line).

Attention kernels: on a GPU, decoding runs with PyTorch's SDPA restricted to flash, memory-efficient and math
attention (`DECODE_ATTENTION`). Left alone, torch 2.11 sends attention with a padding mask to cuDNN first, and
cuDNN builds an execution plan for every new shape; while decoding the key length grows by one each step, so
every call pays for a plan. On one H200 that took 62% of the generator's host time
(`benchmarks/profile_generation.py`, docs/performance.md). The restriction holds only inside `generate`.

Transformers 5.x notes: the cache keyword of `forward` / `generate` is `cache=` (`past_key_values=` is a
deprecated alias); `model.generate` fills unset generation options from `model.generation_config` (e.g. a
checkpoint's top_k), so sampling options are always set explicitly here.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
    PreTrainedModel,
    StoppingCriteria,
    StoppingCriteriaList,
)

from dapo.core.padding import left_pad
from dapo.core.steps import DEFAULT_DELIMITER, first_step
from dapo.generation.cascade import CascadeCache, cascade_decoding
from dapo.generation.kv_cache import reserved_cache
from dapo.generation.protocol import Completion, SamplingParams
from dapo.models.adapters import LoadIn, frozen
from dapo.models.memory import AttnImplementation

DECODE_ATTENTION = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)
"""SDPA kernels allowed while generating on a GPU: none builds a per-shape plan (cuDNN's does)."""

SEGMENT = 16
"""Tokens generated between two checks for rows that ended (`HFGenerator._decode_dropping_finished`)."""

__all__ = ["FirstStepStopping", "HFGenerator", "count_new_tokens", "count_text_tokens", "cut_to_first_step"]


def cut_to_first_step(text: str, delimiter: str = DEFAULT_DELIMITER) -> str:
    """`text` cut right after its first complete step, or the whole `text` when no step is complete."""
    step = first_step(text, delimiter)
    return text if step is None else step


def count_new_tokens(new_ids: torch.Tensor, pad_id: int) -> int:
    """Generated tokens in (b, t) `new_ids`: everything but padding (an end-of-sequence token counts)."""
    return int((new_ids != pad_id).sum())


def count_text_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens each text takes as a continuation: encoded alone, without special tokens (a continuation has no BOS,
    and its end-of-sequence token is not in its text)."""
    return [len(tokenizer.encode(text, add_special_tokens=False)) for text in texts]


class FirstStepStopping(StoppingCriteria):
    """Stops each row once the text generated after `prompt_length` tokens holds a complete first step.

    Returns a per-row bool tensor. A row, once done, stays done (and is not decoded again); a row whose last token
    is special is skipped, since a special token decodes to nothing and cannot complete a step.
    """

    def __init__(self, tokenizer: Any, prompt_length: int, delimiter: str = DEFAULT_DELIMITER) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.delimiter = delimiter
        self.special_ids = set(tokenizer.all_special_ids)
        self.done: torch.Tensor | None = None  # (b,) bool

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_length :]  # (b, t)
        if self.done is None or self.done.shape[0] != new.shape[0]:
            self.done = torch.zeros(new.shape[0], dtype=torch.bool)  # (b,)
        last = new[:, -1].tolist() if new.shape[1] else [None] * new.shape[0]
        for row in range(new.shape[0]):
            if self.done[row] or last[row] is None or last[row] in self.special_ids:
                continue
            text = self.tokenizer.decode(new[row], skip_special_tokens=True)
            self.done[row] = first_step(text, self.delimiter) is not None
        return self.done.to(input_ids.device).clone()  # type: ignore[return-value]


class HFGenerator:
    """`Generator` on a Hugging Face causal LM: batched, left-padded, KV-cached, optionally prefix-sharing.

    `batch_size` bounds the rows (prompts x n) per `model.generate` call; a chunk always holds at least one prompt.
    `synced_gpus`: the model is sharded across processes (FSDP2), so every rank keeps stepping until all ranks'
    rows are done; the caller must also give every rank the same number of chunks.
    `cascade`: the rows of a prompt attend over one shared copy of its prefix (`dapo.generation.cascade`) instead of
    a copy each; same outputs.
    `tokens_generated` counts the non-pad tokens generated so far (end-of-sequence tokens included).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        batch_size: int = 64,
        shared_prefix: bool = True,
        synced_gpus: bool = False,
        cascade: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if cascade and not shared_prefix:
            raise ValueError("cascade attention shares the prefix among the rollouts: it needs shared_prefix=True")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.shared_prefix = shared_prefix
        self.synced_gpus = synced_gpus
        self.cascade = cascade
        self.tokens_generated = 0
        self.eos_id = _first_not_none(model.generation_config.eos_token_id, tokenizer.eos_token_id)
        pad = _first_not_none(tokenizer.pad_token_id, model.generation_config.pad_token_id, self.eos_id)
        self.pad_id = int(pad[0] if isinstance(pad, list) else pad)

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        load_in: LoadIn | None = None,
        attn_implementation: AttnImplementation = "sdpa",
        **kwargs: Any,
    ) -> HFGenerator:
        """Load model and tokenizer from a Hugging Face folder or hub id, optionally in "8bit" / "4bit" (nf4,
        bitsandbytes), with the given attention kernel (`dapo.models.memory`); `kwargs` go to the constructor."""
        load = functools.partial(AutoModelForCausalLM.from_pretrained, dtype=dtype)
        model: PreTrainedModel = frozen(load, path, load_in, torch.device(device), attn_implementation)
        return cls(model, AutoTokenizer.from_pretrained(path), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        """`params.n` continuations of each prompt: text after the prompt, without special tokens."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a single string")
        rows = self._encode(prompts)
        order = longest_first(rows)
        per_chunk = max(1, self.batch_size // params.n)
        was_training = self.model.training
        self.model.eval()
        results: list[list[str]] = []
        try:
            with torch.inference_mode(), decode_attention(self.device):
                for index, start in enumerate(range(0, len(rows), per_chunk)):
                    with torch.random.fork_rng(devices=self._rng_devices()):
                        torch.manual_seed(params.seed + index)
                        results += self._generate_chunk([rows[i] for i in order[start : start + per_chunk]], params)
        finally:
            self.model.train(was_training)
        by_prompt: list[list[str]] = [[] for _ in rows]
        for i, texts in zip(order, results, strict=True):
            by_prompt[i] = texts
        return by_prompt

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes as a continuation (`count_text_tokens`)."""
        return count_text_tokens(self.tokenizer, texts)

    def _encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt, with the tokenizer's usual special tokens (e.g. a BOS)."""
        rows = [list(ids) for ids in self.tokenizer(list(prompts))["input_ids"]] if prompts else []
        if any(not row for row in rows):
            raise ValueError("cannot generate from a prompt that encodes to no tokens")
        return rows

    def _rng_devices(self) -> list[int]:
        device = self.device
        return [device.index or 0] if device.type == "cuda" else []

    def _generate_chunk(self, rows: list[list[int]], params: SamplingParams) -> list[list[str]]:
        """Continuations of one chunk of prompts: a list of n texts per prompt."""
        ids, mask = left_pad(rows, self.pad_id)  # (b, s), (b, s)
        ids, mask = ids.to(self.device), mask.to(self.device)
        n = params.n
        cache, attention = self._prefilled(ids, mask, params)
        rows_ids, rows_mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)  # (b * n, s)
        with attention:
            if params.one_step or self.synced_gpus:  # per-row stopping state / ranks in lockstep: one call
                new = self._decode(rows_ids, rows_mask, cache, params, params.max_new_tokens)  # (b * n, t)
            else:
                new = self._decode_dropping_finished(rows_ids, rows_mask, cache, params)  # (b * n, t)
        self.tokens_generated += count_new_tokens(new, self.pad_id)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        if params.one_step:
            texts = [cut_to_first_step(text, params.delimiter) for text in texts]
        ended = torch.isin(new, self._eos_ids(new.device)).any(dim=1).tolist()  # (r,) the policy ended the row
        out: list[str] = [Completion(t, _cut_off(t, done, params)) for t, done in zip(texts, ended, strict=True)]
        return [out[i * n : (i + 1) * n] for i in range(len(rows))]

    def _eos_ids(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.eos_id if isinstance(self.eos_id, list) else [self.eos_id], device=device)

    def _decode(
        self, ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache, params: SamplingParams, max_new: int
    ) -> torch.Tensor:
        """Up to `max_new` tokens after (r, s) `ids` with one `generate` call: (r, t), pad after a row's eos."""
        extra: dict[str, Any] = {}
        if params.one_step:
            criterion = FirstStepStopping(self.tokenizer, ids.shape[1], params.delimiter)
            extra["stopping_criteria"] = StoppingCriteriaList([criterion])
        out = self.model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=mask,
            generation_config=self._generation_config(params, max_new),
            synced_gpus=self.synced_gpus,
            cache=cache,
            **extra,
        )  # (r, s + t)
        return out[:, ids.shape[1] :]

    def _decode_dropping_finished(
        self, ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache, params: SamplingParams
    ) -> torch.Tensor:
        """`_decode` in segments of SEGMENT tokens; after each, rows that ended leave the batch (with their cache
        rows), so the rows still writing stop paying for those that are done. (r, t), pad after a row's eos.

        `generate` is resumed with the rows' tokens so far and their cache, which holds all but the last token (as
        after `_fill_prefix`), so it runs only that token before decoding on."""
        rows = ids.shape[0]
        new = torch.full((rows, params.max_new_tokens), self.pad_id, dtype=ids.dtype, device=ids.device)  # (r, m)
        active = torch.arange(rows, device=ids.device)  # (a,) rows still writing
        eos = self._eos_ids(ids.device)
        done = 0
        while active.numel() and done < params.max_new_tokens:
            budget = min(SEGMENT, params.max_new_tokens - done)
            produced = self._decode(ids, mask, cache, params, budget)  # (a, k)
            k = produced.shape[1]
            new[active, done : done + k] = produced
            done += k
            ended = torch.isin(produced, eos).any(dim=1)  # (a,)
            if k < budget or bool(ended.all()):
                break
            ids, mask = torch.cat([ids, produced], 1), torch.cat([mask, torch.ones_like(produced)], 1)  # (a, s + k)
            if bool(ended.any()):
                keep = (~ended).nonzero().squeeze(1)  # (a',)
                ids, mask, active = ids[keep], mask[keep], active[keep]
                cache.batch_select_indices(keep)
        return new[:, :done]

    def _prefilled(
        self, ids: torch.Tensor, mask: torch.Tensor, params: SamplingParams
    ) -> tuple[DynamicCache, contextlib.AbstractContextManager[Any]]:
        """The chunk's cache, holding every prompt token but the last when the prefix is shared, and the context
        its decoding runs in (cascade attention over one copy of each prefix, or nothing to switch)."""
        if not (self.shared_prefix and ids.shape[1] > 1):
            return reserved_cache(self.model.config, params.max_new_tokens), contextlib.nullcontext()
        if self.cascade:  # one copy of the prefix per prompt, for all its rows
            prefix = DynamicCache(config=self.model.config)  # exactly the prefix: no room reserved, it never grows
            self._fill_prefix(prefix, ids, mask)
            cascade = CascadeCache(prefix, mask[:, :-1], params.n, params.max_new_tokens)
            return cascade, cascade_decoding(self.model, cascade)
        cache = reserved_cache(self.model.config, params.max_new_tokens)
        self._fill_prefix(cache, ids, mask)
        cache.batch_repeat_interleave(params.n)  # (b, ...) -> (b * n, ...), rows of a prompt adjacent
        return cache, contextlib.nullcontext()

    def _fill_prefix(self, cache: DynamicCache, ids: torch.Tensor, mask: torch.Tensor) -> None:
        """Fill `cache` with every prompt token but the last, computed once per prompt."""
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (b, s): as `generate` derives them
        self.model(
            input_ids=ids[:, :-1],  # (b, s - 1)
            attention_mask=mask[:, :-1],  # (b, s - 1)
            position_ids=positions[:, :-1],  # (b, s - 1)
            cache=cache,
            use_cache=True,
            logits_to_keep=1,  # the logits are not needed: skip the (b, s - 1, vocab) projection
        )

    def _generation_config(self, params: SamplingParams, max_new_tokens: int | None = None) -> GenerationConfig:
        """Explicit options, so a checkpoint's own defaults (top_k, repetition penalty, ...) cannot leak in."""
        options: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens if max_new_tokens is None else max_new_tokens,
            "num_beams": 1,
            "use_cache": True,
            "eos_token_id": self.eos_id,
            "pad_token_id": self.pad_id,
            "repetition_penalty": 1.0,
        }
        if params.temperature == 0:
            options["do_sample"] = False
        else:
            options.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        return GenerationConfig(**options)


def decode_attention(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """On a GPU, SDPA limited to `DECODE_ATTENTION` for the block; elsewhere nothing changes."""
    return sdpa_kernel(list(DECODE_ATTENTION)) if device.type == "cuda" else contextlib.nullcontext()


def _cut_off(text: str, ended: bool, params: SamplingParams) -> bool:
    """Whether the token limit, not the policy, ended a continuation: no end-of-sequence token, and with `one_step`
    no whole step either."""
    return not ended and not (params.one_step and params.delimiter in text)


def longest_first(rows: Sequence[Sequence[int]]) -> list[int]:
    """Indices of `rows`, longest first (stable). Chunks of similar lengths waste less on left padding, and
    states of similar depth in a solution also have similar amounts left to generate, so the rows of a chunk
    finish together; the longest come first so that running out of memory shows at once."""
    return sorted(range(len(rows)), key=lambda i: -len(rows[i]))


def _first_not_none(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None

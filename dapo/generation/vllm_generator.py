"""`VLLMGenerator`: the `Generator` protocol on vLLM's offline engine, an optional extra for CUDA machines.

What: `generate(prompts, params)` returns `params.n` continuations per prompt, in prompt order, with the semantics of
`dapo.generation.hf_generator.HFGenerator`: text after the prompt without special tokens (decoded from the
generated token ids with the model's tokenizer, exactly as HFGenerator decodes), greedy when `temperature == 0`,
otherwise temperature / top-p with top-k off, `max_new_tokens` as vLLM's `max_tokens`, and `one_step` cut like
`cut_to_first_step`.
Install with `pip install "dapo[vllm]"`; vLLM needs a CUDA GPU. vLLM is imported only when a generator is built,
so this module imports (and its pure helpers are tested) without it.

Prefix sharing: HFGenerator encodes each distinct prompt of a chunk once into a `DynamicCache` and repeats that KV
n times, so a state's n rollouts share its prefix within one `generate` call. vLLM does the same through automatic
prefix caching (`enable_prefix_caching=True`, the default here): KV is stored in blocks (16 tokens by default)
keyed by a hash of every token up to the block's end, so a request whose prompt starts with cached full blocks
skips their prefill. The n samples of a prompt (vLLM V1 runs them as n child requests) prefill the prompt once;
and since the states s_0, s_1, ... of a solution extend each other, the block-aligned part of a state's prefix is
also reused across states, prompts and calls for as long as it stays cached, which HFGenerator cannot do. Only
full blocks are shared: the last partial block of each prompt is recomputed.

Greedy: vLLM rejects `n > 1` with greedy sampling ("n must be 1 when using greedy sampling"), and n greedy copies
are identical anyway, so a greedy call requests one continuation per prompt and repeats its text n times.

Seeds: every request carries its own seed, `request_seed(params.seed, prompt index)`, so a prompt's samples depend
only on (prompts, params), not on how vLLM schedules or batches the requests; vLLM V1 seeds the k-th of a request's
n samples with seed + k. (Bitwise-equal reruns still need vLLM's own setting for deterministic scheduling or batch
invariance, and the same hardware and vLLM version: https://docs.vllm.ai/en/latest/usage/reproducibility/.)
HFGenerator instead seeds per chunk of prompts, so the two backends draw different samples from the same policy.

`one_step`: vLLM cannot run HFGenerator's `FirstStepStopping`, and `stop=[delimiter]` alone is wrong, because in
`dapo.core.steps` a blank line is not a step: a continuation "\\n\\n5 + 3 = 8\\n" must not stop at its first "\\n". So a
one-step request stops at the delimiter (`stop=[delimiter]`, kept in the output), and a row whose text then holds
no complete step (only blank lines so far, `must_continue`) is continued as a new request from the exact token ids
generated so far (`{"prompt_token_ids": prompt + generated}`, served from the prefix cache) with the remaining
token budget, until its first step is complete, it ends (eos) or the budget is spent. Its text is the decode of all
its tokens, cut with `cut_to_first_step`. Greedy, this is HFGenerator's token sequence (up to numerics); sampled,
each round draws from the same policy given the same context, so the distribution is unchanged (only the random
stream differs). Generating whole continuations and cutting them afterwards would be correct too, but would spend
most of a candidate action's tokens on text that is thrown away.

`tokens_generated` counts the tokens vLLM generated (the length of every returned `token_ids`, eos included, every
one-step round included); greedy copies are counted once, since they are generated once (HFGenerator, which
decodes all n copies, counts them n times).

Left out: chat templates (prompts are plain text, as for HFGenerator), LoRA, streaming, and vLLM's server.

    generator = VLLMGenerator("runs/policy", dtype="bfloat16", gpu_memory_utilization=0.5)
    texts = generator.generate(states, SamplingParams(n=8, temperature=1.0, one_step=True, seed=3))
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dapo.core.errors import require
from dapo.core.steps import first_step
from dapo.generation.hf_generator import count_text_tokens, cut_to_first_step
from dapo.generation.protocol import Completion, SamplingParams

__all__ = [
    "VLLMGenerator",
    "continuation_kwargs",
    "must_continue",
    "request_seed",
    "vllm_sampling_kwargs",
]

SEED_BYTES = 6
"""Request seeds have 48 bits: room for vLLM's `seed + k` per sample in a 64-bit seed, and collisions between the
seeds of a call's prompts are negligible."""


def request_seed(seed: int, *keys: int) -> int:
    """A 48-bit seed mixed from `seed` and `keys` (prompt index, ...) by blake2b, stable across processes.

    Hashed rather than `seed + index`: vLLM V1 gives a request's k-th sample seed + k, so linear per-prompt seeds
    would hand prompt i's sample 1 and prompt i + 1's sample 0 the same random stream, and calls whose seeds are
    small offsets of each other (evaluation uses seed + offset) would overlap as well.
    """
    text = "/".join(str(value) for value in (seed, *keys))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=SEED_BYTES).digest(), "big")


def vllm_sampling_kwargs(params: SamplingParams, index: int) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for prompt `index` of a call with `params`.

    Greedy requests one sample (vLLM rejects n > 1 when greedy). top_k=-1 turns top-k off in every vLLM >= 0.8
    (0.8 rejects 0; newer versions prefer 0 but accept -1). `one_step` stops at the delimiter and keeps it in the
    text; `VLLMGenerator` continues rows whose text is still blank there. Special tokens are skipped so that vLLM's
    stop-string search sees the same text as our decode. `LLM.generate` takes the checkpoint's generation config
    only when no sampling params are passed, so its top_k or repetition penalty cannot leak in (HFGenerator has to
    set them explicitly for that).
    """
    greedy = params.temperature == 0
    kwargs: dict[str, Any] = {
        "n": 1 if greedy else params.n,
        "temperature": params.temperature,
        "top_p": 1.0 if greedy else params.top_p,
        "top_k": -1,
        "max_tokens": params.max_new_tokens,
        "seed": request_seed(params.seed, index),
        "skip_special_tokens": True,
    }
    if params.one_step:
        kwargs.update(stop=[params.delimiter], include_stop_str_in_output=True)
    return kwargs


def continuation_kwargs(params: SamplingParams, index: int, sample: int, generated: int) -> dict[str, Any]:
    """`vllm_sampling_kwargs` for continuing sample `sample` of prompt `index` after `generated` tokens: one sample,
    the remaining budget, and a seed of its own (`generated` grows every round, so every round gets a new one)."""
    return vllm_sampling_kwargs(params, index) | {
        "n": 1,
        "max_tokens": params.max_new_tokens - generated,
        "seed": request_seed(params.seed, index, sample, generated),
    }


def must_continue(text: str, stop_reason: object, generated: int, params: SamplingParams) -> bool:
    """Whether a one-step row stopped too early: vLLM stopped it at the delimiter (`stop_reason`), yet `text`, all
    generated so far, holds no complete step (only blank lines), and fewer than `max_new_tokens` were generated.
    A row that ended otherwise (eos: stop_reason None; budget: "length") keeps its text, as in HFGenerator."""
    return (
        params.one_step
        and stop_reason == params.delimiter
        and generated < params.max_new_tokens
        and first_step(text, params.delimiter) is None
    )


def _import_vllm() -> Any:
    return require("vllm", "vllm", "VLLMGenerator (vLLM needs a CUDA GPU)")


@dataclass
class _Row:
    """One continuation under construction: its prompt's token ids, the ids generated so far, and whether the
    one-step rule needs more of it."""

    prompt_ids: list[int]
    ids: list[int]
    open: bool = False


class VLLMGenerator:
    """`Generator` on a vLLM `LLM` engine with prefix caching; see the module docstring for the semantics.

    `path` is a Hugging Face folder or hub id; `dtype` ("auto", "bfloat16", "float16", "float32"),
    `gpu_memory_utilization` (fraction of GPU memory vLLM may take for weights and KV cache),
    `tensor_parallel_size`, `max_model_len` (None: the model's) and `seed` (the engine's global seed; sampling uses
    per-request seeds) go to `vllm.LLM`. Raises ImportError with the install command when vLLM is missing.
    """

    def __init__(
        self,
        path: str,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        seed: int = 0,
        enable_prefix_caching: bool = True,
    ) -> None:
        self._vllm = _import_vllm()
        self.llm = self._vllm.LLM(
            model=str(path),
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.tokens_generated = 0

    @classmethod
    def from_pretrained(cls, path: str, **options: Any) -> VLLMGenerator:
        """Same entry point as `HFGenerator.from_pretrained`, so callers can swap the backend; `options` are the
        constructor's keyword options."""
        return cls(path, **options)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        """`params.n` continuations of each prompt: text after the prompt, without special tokens."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a single string")
        if not prompts:
            return []
        kwargs = [vllm_sampling_kwargs(params, index) for index in range(len(prompts))]
        outputs = self._run(list(prompts), kwargs)
        rows = [[self._row(list(out.prompt_token_ids), [], c, params) for c in out.outputs] for out in outputs]
        if params.one_step:
            self._complete_first_steps(rows, params)
        texts: list[list[str]] = [[self._completion(row.ids, params) for row in group] for group in rows]
        return [group * params.n for group in texts] if params.temperature == 0 else texts

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes as a continuation, with the engine's tokenizer (`count_text_tokens`)."""
        return count_text_tokens(self.tokenizer, texts)

    def _run(self, prompts: list[Any], kwargs: list[dict[str, Any]]) -> list[Any]:
        """One `LLM.generate` call, one request per prompt (outputs in prompt order), counting generated tokens."""
        sampling = [self._vllm.SamplingParams(**options) for options in kwargs]
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
        self.tokens_generated += sum(len(c.token_ids) for out in outputs for c in out.outputs)
        return list(outputs)

    def _row(self, prompt_ids: list[int], ids: list[int], completion: Any, params: SamplingParams) -> _Row:
        """`ids` extended by one vLLM completion, marked open if the one-step rule needs more tokens."""
        ids = ids + list(completion.token_ids)
        text = self._decode(ids) if params.one_step else ""
        return _Row(prompt_ids, ids, must_continue(text, completion.stop_reason, len(ids), params))

    def _complete_first_steps(self, rows: list[list[_Row]], params: SamplingParams) -> None:
        """Continue open rows, all of them in one `LLM.generate` call per round, until none is open. Every round
        adds at least one token to every open row, so this ends within `max_new_tokens` rounds."""
        while pending := [(i, k, row) for i, group in enumerate(rows) for k, row in enumerate(group) if row.open]:
            prompts = [{"prompt_token_ids": row.prompt_ids + row.ids} for _, _, row in pending]
            kwargs = [continuation_kwargs(params, i, k, len(row.ids)) for i, k, row in pending]
            for (i, k, row), out in zip(pending, self._run(prompts, kwargs), strict=True):
                rows[i][k] = self._row(row.prompt_ids, row.ids, out.outputs[0], params)

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _completion(self, ids: list[int], params: SamplingParams) -> Completion:
        """The row's text, truncated when it used every token without an end-of-sequence token (or, one step at a
        time, without a delimiter)."""
        text = self._decode(ids)
        if params.one_step:
            text = cut_to_first_step(text, params.delimiter)
        limit = len(ids) >= params.max_new_tokens and getattr(self.tokenizer, "eos_token_id", None) not in ids
        return Completion(text, limit and not (params.one_step and params.delimiter in text))

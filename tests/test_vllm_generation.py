"""VLLMGenerator: the pure translation to vLLM's sampling options, the lazy import, and the generator's logic on a
fake `vllm` module; one real-engine comparison with HFGenerator runs only where vLLM and a CUDA GPU are present.

The fake engine plays back a script: each prompt has a few samples, each a list of tokens (multi-character
strings, so a token can carry text past the step delimiter, as real BPE tokens do). Like vLLM it validates its
sampling options (n = 1 when greedy, top_k -1 or >= 1), seeds the k-th sample of a request with seed + k, stops at
eos, `max_tokens` and the first stop string (cutting its text there), and serves token-id prompts, so it also
checks the one-step continuation rounds.
"""

from __future__ import annotations

import importlib
import itertools
import re
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from dapo.core.steps import split_steps, state_text
from dapo.generation.hf_generator import HFGenerator, cut_to_first_step
from dapo.generation.protocol import SamplingParams
from dapo.generation.vllm_generator import VLLMGenerator, must_continue, request_seed, vllm_sampling_kwargs
from dapo.models import build_tiny_model
from dapo.training.sft import supervised_finetune

EOS = "<eos>"
SCRIPT = {
    # a blank line, a token that carries a blank line into the step, then a token that runs past the delimiter
    "Q1:": [["\n", "\n5", " + 3 = 8", "\nAns", "wer: 8", EOS], ["2 * 2 = 4", "\n", "Answer: 4", EOS]],
    # a token that holds a whole step and more; only blank lines and no complete step before eos
    "Q2:": [["7 - 1 = 6\nAnswer", ": 6", EOS], ["\n\n", "\n", "x", EOS]],
    "Q3:": [["Answer: 9", EOS]],  # no delimiter at all
}
PROMPTS = ["Q1:", "Q2:", "Q3:"]
FULL = {prompt: ["".join(t for t in sample if t != EOS) for sample in samples] for prompt, samples in SCRIPT.items()}


class FakeTokenizer:
    """Token 0 is eos (special); a prompt is encoded one character per token; script tokens get ids when seen."""

    def __init__(self) -> None:
        self.pieces = [EOS]

    def id(self, piece: str) -> int:
        if piece not in self.pieces:
            self.pieces.append(piece)
        return self.pieces.index(piece)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [self.id(char) for char in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join("" if i == 0 and skip_special_tokens else self.pieces[i] for i in ids)


class FakeSamplingParams:
    """The keyword arguments VLLMGenerator uses, validated as vLLM does."""

    def __init__(
        self,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        max_tokens: int = 16,
        seed: int | None = None,
        stop: list[str] | None = None,
        include_stop_str_in_output: bool = False,
        skip_special_tokens: bool = True,
    ) -> None:
        if temperature == 0 and n > 1:
            raise ValueError(f"n must be 1 when using greedy sampling, got {n}.")
        if top_k < -1 or top_k == 0:  # vLLM 0.8; newer versions also accept 0
            raise ValueError(f"top_k must be -1 (disable), or at least 1, got {top_k}.")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}.")
        self.n, self.temperature, self.top_p, self.top_k = n, temperature, top_p, top_k
        self.max_tokens, self.seed, self.stop = max_tokens, seed, stop or []
        self.include_stop_str_in_output, self.skip_special_tokens = include_stop_str_in_output, skip_special_tokens


class FakeLLM:
    """Records its options and every `generate` call; plays back SCRIPT."""

    def __init__(self, **options) -> None:
        self.options = options
        self.calls: list[tuple[list, list[FakeSamplingParams], bool]] = []
        self.tokenizer = FakeTokenizer()

    def get_tokenizer(self) -> FakeTokenizer:
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((list(prompts), list(sampling_params), use_tqdm))
        return [self._request(p, sp) for p, sp in zip(prompts, sampling_params, strict=True)]

    def _request(self, prompt, sp: FakeSamplingParams) -> SimpleNamespace:
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt["prompt_token_ids"])
        context = self.tokenizer.decode(ids)
        source = next(p for p in SCRIPT if context.startswith(p))
        done = context[len(source) :]
        samples = [(s, m) for s in SCRIPT[source] for m in range(len(s) + 1) if "".join(s[:m]) == done]
        outputs = []
        for k in range(sp.n):
            pick = 0 if sp.temperature == 0 else (sp.seed + k) % len(samples)  # vLLM V1: sample k gets seed + k
            sample, consumed = samples[pick]
            outputs.append(self._complete(k, sample[consumed:], sp))
        return SimpleNamespace(prompt_token_ids=ids, outputs=outputs)

    def _complete(self, index: int, tokens: list[str], sp: FakeSamplingParams) -> SimpleNamespace:
        ids: list[int] = []
        text = ""
        for token in tokens[: sp.max_tokens]:
            ids.append(self.tokenizer.id(token))
            if token == EOS:
                return SimpleNamespace(index=index, text=text, token_ids=ids, finish_reason="stop", stop_reason=None)
            start, text = len(text), text + token
            for stop in sp.stop:
                at = text.find(stop, max(0, start - len(stop) + 1))
                if at != -1:
                    cut = at + len(stop) if sp.include_stop_str_in_output else at
                    return SimpleNamespace(
                        index=index, text=text[:cut], token_ids=ids, finish_reason="stop", stop_reason=stop
                    )
        return SimpleNamespace(index=index, text=text, token_ids=ids, finish_reason="length", stop_reason=None)


@pytest.fixture
def fake_vllm(monkeypatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM  # type: ignore[attr-defined]
    module.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


# -- pure translation -----------------------------------------------------------------------------------------------


def test_greedy_kwargs_ask_for_one_sample():
    kwargs = vllm_sampling_kwargs(SamplingParams(n=4, temperature=0.0, top_p=0.5, max_new_tokens=32, seed=1), 2)
    assert kwargs == {
        "n": 1,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": -1,
        "max_tokens": 32,
        "seed": request_seed(1, 2),
        "skip_special_tokens": True,
    }


def test_sampled_and_one_step_kwargs():
    params = SamplingParams(n=4, temperature=0.7, top_p=0.9, max_new_tokens=64, seed=5)
    kwargs = vllm_sampling_kwargs(params, 0)
    assert (kwargs["n"], kwargs["temperature"], kwargs["top_p"], kwargs["top_k"]) == (4, 0.7, 0.9, -1)
    assert kwargs["max_tokens"] == 64 and "stop" not in kwargs
    one = vllm_sampling_kwargs(SamplingParams(n=4, temperature=0.7, one_step=True, delimiter="##"), 0)
    assert one["stop"] == ["##"] and one["include_stop_str_in_output"] is True


def test_seeds_differ_per_prompt_and_are_stable():
    params = SamplingParams(n=16, temperature=1.0, seed=3)
    seeds = [vllm_sampling_kwargs(params, i)["seed"] for i in range(1000)]
    assert seeds == [vllm_sampling_kwargs(params, i)["seed"] for i in range(1000)]
    assert seeds[:3] == [request_seed(3, 0), request_seed(3, 1), request_seed(3, 2)]
    assert request_seed(3, 0) == 269328477917126  # fixed across processes and Python versions (blake2b)
    assert all(0 <= s < 2**48 for s in seeds)
    # vLLM seeds sample k with seed + k: the n seeds of different prompts never overlap
    starts = sorted(seeds)
    assert all(b - a >= params.n for a, b in itertools.pairwise(starts))
    # another call seed gives other streams, also when it is a small offset (evaluation uses seed + offset)
    shifted = {vllm_sampling_kwargs(SamplingParams(n=16, temperature=1.0, seed=4), i)["seed"] for i in range(1000)}
    assert not shifted & set(seeds)


@pytest.mark.parametrize(
    ("text", "stop_reason", "generated", "expected"),
    [
        ("\n", "\n", 1, True),  # stopped at a blank line: not a step yet
        ("\n\n5", "\n", 2, True),  # the stop token carried a blank line and the start of the step
        ("\n", "\n", 8, False),  # budget spent
        ("5 + 3 = 8\n", "\n", 3, False),  # complete step
        ("\n\nAnswer: 8", None, 4, False),  # eos
        ("\n\n", "length", 4, False),  # not stopped by the delimiter
    ],
)
def test_must_continue(text, stop_reason, generated, expected):
    params = SamplingParams(max_new_tokens=8, one_step=True)
    assert must_continue(text, stop_reason, generated, params) is expected
    assert not must_continue(text, stop_reason, generated, SamplingParams(max_new_tokens=8))


# -- lazy import ----------------------------------------------------------------------------------------------------


def test_module_imports_without_vllm_and_construction_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails whether or not vLLM is installed
    monkeypatch.delitem(sys.modules, "dapo.generation.vllm_generator")
    module = importlib.import_module("dapo.generation.vllm_generator")
    with pytest.raises(ImportError, match=re.escape('pip install "dapo[vllm]"')):
        module.VLLMGenerator("some/model")
    with pytest.raises(ImportError, match="CUDA"):
        module.VLLMGenerator.from_pretrained("some/model")


# -- the generator on a fake engine ---------------------------------------------------------------------------------


def test_engine_options(fake_vllm):
    generator = VLLMGenerator.from_pretrained("m", dtype="bfloat16", gpu_memory_utilization=0.5, max_model_len=256)
    assert generator.llm.options == {
        "model": "m",
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.5,
        "tensor_parallel_size": 1,
        "max_model_len": 256,
        "seed": 0,
        "enable_prefix_caching": True,
    }
    assert generator.tokenizer is generator.llm.tokenizer and generator.tokens_generated == 0


def test_greedy_is_one_request_per_prompt_repeated_n_times(fake_vllm):
    generator = VLLMGenerator("m")
    out = generator.generate(PROMPTS, SamplingParams(n=3, temperature=0.0, max_new_tokens=16, seed=2))
    assert out == [[FULL[p][0]] * 3 for p in PROMPTS]  # prompt order, n copies, eos dropped
    (prompts, sampling, use_tqdm), *rest = generator.llm.calls
    assert prompts == PROMPTS and not rest and use_tqdm is False
    assert [sp.n for sp in sampling] == [1, 1, 1] and [sp.seed for sp in sampling] == [
        request_seed(2, i) for i in range(3)
    ]
    assert generator.tokens_generated == 6 + 3 + 2  # every token of each sample once, eos included


def test_greedy_one_step_equals_cut_of_the_full_continuation(fake_vllm):
    generator = VLLMGenerator("m")
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=16, one_step=True, seed=2)
    out = generator.generate(PROMPTS, params)
    assert out == [[cut_to_first_step(FULL[p][0])] * 2 for p in PROMPTS]
    assert out[0][0] == "\n\n5 + 3 = 8\n" and out[1][0] == "7 - 1 = 6\n" and out[2][0] == "Answer: 9"
    # Q1 stopped at "\n" twice with only blank lines: two continuation rounds from its exact token ids
    first, second, third = generator.llm.calls
    assert all(sp.stop == ["\n"] and sp.include_stop_str_in_output for sp in first[1])
    tokenizer = generator.tokenizer
    assert second[0] == [{"prompt_token_ids": [*tokenizer.encode("Q1:"), tokenizer.id("\n")]}]
    assert (second[1][0].n, second[1][0].max_tokens, second[1][0].seed) == (1, 15, request_seed(2, 0, 0, 1))
    assert third[1][0].max_tokens == 14
    assert generator.tokens_generated == (1 + 1 + 2) + 1 + 2  # round 1 (Q1, Q2, Q3), then Q1's rounds 2 and 3


def test_one_step_respects_the_token_budget(fake_vllm):
    generator = VLLMGenerator("m")
    out = generator.generate(["Q1:"], SamplingParams(temperature=0.0, max_new_tokens=2, one_step=True))
    assert out == [["\n\n5"]] and generator.tokens_generated == 2  # like HFGenerator: no step, whole text kept


def test_sampled_outputs_are_seeded_and_one_step_cuts_each(fake_vllm):
    generator = VLLMGenerator("m")
    params = SamplingParams(n=2, temperature=1.0, top_p=0.9, max_new_tokens=16, seed=7)
    out = generator.generate(PROMPTS, params)
    # samples k = 0, 1 of a request get seeds s and s + 1: the fake then plays both of Q1's and Q2's samples
    assert [sorted(texts) for texts in out] == [sorted(FULL[p] * (2 // len(FULL[p]))) for p in PROMPTS]
    assert generator.generate(PROMPTS, params) == out
    assert all(sp.n == 2 and sp.top_p == 0.9 and sp.top_k == -1 for sp in generator.llm.calls[0][1])
    one = generator.generate(PROMPTS, SamplingParams(**{**vars(params), "one_step": True}))
    assert [sorted(texts) for texts in one] == [sorted(cut_to_first_step(t) for t in texts) for texts in out]
    assert "\n\n\nx" in one[1]  # blank lines, then eos before any complete step: the whole text is kept
    assert all(len(split_steps(text)) <= 1 for texts in one for text in texts)


def test_count_tokens_encodes_with_the_engines_tokenizer(fake_vllm):
    assert VLLMGenerator("m").count_tokens(["", "Q1:", "5 + 3"]) == [0, 3, 5]


def test_inputs_are_checked(fake_vllm):
    generator = VLLMGenerator("m")
    assert generator.generate([], SamplingParams()) == [] and not generator.llm.calls
    with pytest.raises(TypeError):
        generator.generate("Q1:", SamplingParams())


# -- the real engine (CUDA machines with `pip install "dapo[vllm]"`) ------------------------------------------------


@pytest.fixture(scope="module")
def gpu_policy(tmp_path_factory, arith) -> str:
    """A briefly fine-tuned tiny Llama with 64-dim heads (a size every vLLM attention backend supports)."""
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    pairs = [(arith.prompt(ex), arith.reference_solution(ex)) for ex in arith.load("train")]
    base = tmp_path_factory.mktemp("models") / "tiny-64"
    build_tiny_model(base, [p + s for p, s in pairs], vocab_size=320, hidden_size=128, num_layers=2, num_heads=2)
    return str(supervised_finetune(base, tmp_path_factory.mktemp("models") / "policy-64", pairs, steps=150))


def test_real_engine_greedy_matches_hf(gpu_policy, arith):
    """One engine per process: vLLM does not release its GPU memory when an `LLM` is dropped."""
    examples = arith.load("test")[:6]
    prompts = [
        state_text(arith.prompt(ex), split_steps(arith.reference_solution(ex)), t % 2) for t, ex in enumerate(examples)
    ]
    hf = HFGenerator.from_pretrained(gpu_policy, dtype=torch.float32, device="cuda")
    generator = VLLMGenerator(gpu_policy, dtype="float32", gpu_memory_utilization=0.3, max_model_len=512)
    for one_step in (False, True):
        params = SamplingParams(n=2, temperature=0.0, max_new_tokens=32, one_step=one_step)
        assert generator.generate(prompts, params) == hf.generate(prompts, params)
    assert generator.tokens_generated > 0
